"""Who may see and change payment gateway settings."""


def test_gateway_secrets_are_for_administrators_only(app, make_user):
    """Billing staff handle payments, but the gateways' API keys and webhook secrets are an administrator's."""
    from hostbay.testing.pytest_plugin import login

    for role, expected in (("billing", 404), ("support", 404), ("admin", 200)):
        client = app.test_client()
        login(client, make_user(role=role))
        assert client.get("/staff/payments/gateways").status_code == expected, role
        assert client.get("/staff/payments/").status_code == (404 if role == "support" else 200), role
