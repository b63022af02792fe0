"""The hostbay command: demo data (idempotent), create-admin, plugins list."""

from hostbay.core import ledger
from hostbay.core.accounts import User
from hostbay.core.catalog import Package
from hostbay.core.demo import DEMO_CUSTOMER
from hostbay.web.cli import main


def test_demo_is_idempotent(app, db):
    runner = app.test_cli_runner()
    first = runner.invoke(main, ["demo"])
    assert first.exit_code == 0, first.output
    assert DEMO_CUSTOMER[0] in first.output and DEMO_CUSTOMER[1] in first.output
    second = runner.invoke(main, ["demo"])
    assert second.exit_code == 0, second.output
    customer = db.session.scalar(db.select(User).filter_by(email=DEMO_CUSTOMER[0]))
    assert ledger.balance_cents(customer.id) == 10000 == ledger.ledger_sum_cents(customer.id)
    assert db.session.scalar(db.select(db.func.count(Package.id))) == 4  # three VPS, one dedicated
    assert db.session.scalar(db.select(db.func.count(User.id))) == 2


def test_create_admin(app, db):
    runner = app.test_cli_runner()
    out = runner.invoke(main, ["create-admin", "--email", "Ops@Example.test", "--password", "a-long-password",
                               "--role", "billing"])
    assert out.exit_code == 0, out.output
    user = db.session.scalar(db.select(User).filter_by(email="ops@example.test"))
    assert user.role == "billing" and user.is_staff and user.can("money") and not user.can("network")
    again = runner.invoke(main, ["create-admin", "--email", "ops@example.test", "--password", "a-long-password"])
    assert again.exit_code != 0 and "exists already" in again.output


def test_plugins_list(app):
    out = app.test_cli_runner().invoke(main, ["plugins", "list"])
    assert out.exit_code == 0
    lines = out.output.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "STATE", "HOOKS", "/", "REASON"]
    names = {l.split()[0]: l for l in lines[1:]}
    assert {"kvm", "proxmox", "dedicated_ipmi", "crypto_payments", "status", "fake"} <= set(names)
    assert "hostbay_virt_drivers" in names["fake"]
