"""The login form's ``next`` parameter never leads to another site."""

import pytest


@pytest.mark.parametrize("target", ["/\\evil.example/", "/\\/evil.example", "//evil.example", "https://evil.example/",
                                    "/\t/evil.example", "/%0a"])
def test_login_next_stays_on_the_panel(client, make_user, target):
    user = make_user()
    resp = client.post("/login?next=" + target.replace("%", "%25").replace("\t", "%09").replace("\\", "%5C"),
                       data={"email": user.email, "password": "correct horse battery"})
    assert resp.status_code in (302, 303)
    loc = resp.headers["Location"]
    assert "evil.example" not in loc and "\\" not in loc, loc


def test_login_next_on_the_panel_is_kept(client, make_user):
    user = make_user()
    resp = client.post("/login?next=/panel/billing", data={"email": user.email, "password": "correct horse battery"})
    assert resp.headers["Location"].endswith("/panel/billing")
