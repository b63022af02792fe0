"""Staff accounts and roles as data: custom roles from the permission list, invitations by e-mail (a real SMTP
server on loopback), role changes and two-factor resets that end the member's sessions; the plugins page."""

import email
import re
import socket

import pytest
from sqlalchemy import select

from hostbay.core import credentials
from hostbay.core.accounts import User
from hostbay.core.activity import AuditEntry
from hostbay.core.db import db
from hostbay.core.staff_roles import StaffRole
from hostbay.testing.pytest_plugin import login


def _plain_text(msg) -> str:
    """The text/plain part of a (multipart) message."""
    part = next(p for p in msg.walk() if p.get_content_type() == "text/plain")
    return part.get_payload(decode=True).decode()


class _Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def inbox():
    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    box = _Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    box.url = f"smtp://127.0.0.1:{port}"
    yield box
    controller.stop()


@pytest.fixture
def app_config(inbox):
    return {"HOSTBAY_SMTP_URL": inbox.url, "HOSTBAY_BASE_URL": "http://panel.example.test"}


def test_custom_role_invite_role_change_and_two_factor_reset(app, make_user, inbox):
    admin = make_user(role="admin")
    client = app.test_client()
    login(client, admin)
    bad = client.post("/staff/team/roles", data={"name": "helpdesk", "permission": ["tickets", "root"]},
                      follow_redirects=True)
    assert b"Unknown permission root." in bad.data
    client.post("/staff/team/roles", data={"name": "helpdesk", "label": "Help desk",
                                           "permission": ["tickets", "customers"]})
    role = db.session.scalar(select(StaffRole).filter_by(name="helpdesk"))
    assert sorted(role.permissions) == ["customers", "tickets"]
    resp = client.post("/staff/team/invite", data={"email": "Hanna@Example.test", "role": "helpdesk"},
                       follow_redirects=True)
    assert b"was invited as helpdesk" in resp.data
    hanna = db.session.scalar(select(User).filter_by(email="hanna@example.test"))
    assert hanna.role == "helpdesk" and hanna.is_staff
    assert hanna.can("tickets") and hanna.can("customers") and not hanna.can("money")
    (msg,) = [m for m in inbox.messages if m["To"] == "hanna@example.test"]
    link = re.search(r"http://panel\.example\.test/password-reset/\S+", _plain_text(msg))
    assert link
    # the invitee chooses a password through the link and reaches exactly the pages of the role
    hc = app.test_client()
    path = link.group(0).replace("http://panel.example.test", "")
    hc.post(path, data={"new_password": "a new good password", "confirm_password": "a new good password"})
    db.session.expire_all()
    assert db.session.get(User, hanna.id).check_password("a new good password")
    login(hc, hanna, "a new good password")
    assert hc.get("/staff/customers/").status_code == 200
    assert hc.get("/staff/billing/").status_code == 404
    page = client.get("/staff/team/").get_data(as_text=True)
    assert "hanna@example.test" in page and "not set up" in page and "customers, tickets" in page
    # a role change ends the member's sessions
    client.post(f"/staff/team/{hanna.uuid}/role", data={"role": "billing"})
    assert hc.get("/staff/customers/").status_code in (302, 404)
    db.session.expire_all()
    assert db.session.get(User, hanna.id).role == "billing"
    # two-factor reset
    user = db.session.get(User, hanna.id)
    user.totp_secret = credentials.new_totp_secret()
    db.session.commit()
    client.post(f"/staff/team/{hanna.uuid}/reset-2fa")
    db.session.expire_all()
    assert db.session.get(User, hanna.id).totp_secret is None
    actions = db.session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == hanna.uuid)).all()
    assert {"staff.invite", "staff.role", "staff.reset_2fa"} <= set(actions)
    # a role in use cannot be deleted; an unused one can
    client.post(f"/staff/team/{hanna.uuid}/role", data={"role": "helpdesk"})
    assert b"Move the staff" in client.post("/staff/team/roles/helpdesk/delete", follow_redirects=True).data
    client.post(f"/staff/team/{hanna.uuid}/role", data={"role": "support"})
    client.post("/staff/team/roles/helpdesk/delete")
    assert db.session.scalar(select(StaffRole).filter_by(name="helpdesk")) is None
    assert client.post(f"/staff/team/{admin.uuid}/role", data={"role": "support"}).status_code == 404  # not oneself


def test_plugins_page_lists_plugins_and_driver_settings(app, make_user):
    client = app.test_client()
    login(client, make_user(role="admin"))
    page = client.get("/staff/plugins/").get_data(as_text=True)
    assert "kvm" in page and "loaded" in page and "Virtualization nodes" in page and "Payment gateways" in page
    support = app.test_client()
    login(support, make_user(role="support"))
    assert support.get("/staff/plugins/").status_code == 404
