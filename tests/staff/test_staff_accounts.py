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


def _role(name, permissions):
    db.session.add(StaffRole(name=name, label=name, permissions=permissions))
    db.session.commit()


def _audited(action, target_uuid=None):
    query = select(AuditEntry).where(AuditEntry.action == action)
    if target_uuid:
        query = query.where(AuditEntry.target_id == target_uuid)
    return db.session.scalars(query).all()


def test_staff_accounts_holders_grant_only_what_they_hold_and_never_admin(app, make_user):
    """A custom role holding staff.accounts (and staff.roles) cannot invite an admin, promote anyone to admin,
    alter an admin, or give a role or permission it does not hold itself; an admin can do all of it."""
    _role("team-lead", ["staff.accounts", "staff.roles", "tickets.view", "tickets.reply"])
    _role("helpdesk", ["tickets.view"])
    _role("money-desk", ["money.view", "money.adjust"])
    lead_user = make_user(role="team-lead")
    admin_user = make_user(role="admin")
    other_admin = make_user(role="admin")
    helper = make_user(role="helpdesk")
    lead = app.test_client()
    login(lead, lead_user)

    # invitations: never as admin, never as a role holding what the inviter lacks
    for role in ("admin", "billing", "money-desk"):
        resp = lead.post("/staff/team/invite", data={"email": f"new-{role}@example.test", "role": role},
                         follow_redirects=True)
        assert b"only an admin can make an admin" in resp.data, role
        assert db.session.scalar(select(User).filter_by(email=f"new-{role}@example.test")) is None, role
    assert _audited("staff.invite") == []
    # ... but as a role within its own permissions
    resp = lead.post("/staff/team/invite", data={"email": "new-help@example.test", "role": "helpdesk"},
                     follow_redirects=True)
    assert b"was invited as helpdesk" in resp.data

    # promotions: nobody becomes admin (or money-desk) through the lead
    for role in ("admin", "money-desk", "support"):
        lead.post(f"/staff/team/{helper.uuid}/role", data={"role": role})
        db.session.expire_all()
        assert db.session.get(User, helper.id).role == "helpdesk", role
    assert _audited("staff.role", helper.uuid) == []
    lead.post(f"/staff/team/{helper.uuid}/role", data={"role": "team-lead"})  # its own role: it holds all of it
    db.session.expire_all()
    assert db.session.get(User, helper.id).role == "team-lead"

    # an admin cannot be altered by the lead: no role change, no two-factor reset (404 like any foreign URL)
    other = db.session.get(User, other_admin.id)
    other.totp_secret = credentials.new_totp_secret()
    db.session.commit()
    assert lead.post(f"/staff/team/{other_admin.uuid}/role", data={"role": "helpdesk"}).status_code == 404
    assert lead.post(f"/staff/team/{other_admin.uuid}/reset-2fa").status_code == 404
    db.session.expire_all()
    other = db.session.get(User, other_admin.id)
    assert other.role == "admin" and other.totp_secret is not None
    page = lead.get("/staff/team/").get_data(as_text=True)
    assert "<option>admin</option>" not in page and "<option>money-desk</option>" not in page
    assert "<option>helpdesk</option>" in page

    # custom roles: no permission the lead lacks, neither in a new role nor by widening its own
    resp = lead.post("/staff/team/roles", data={"name": "sneaky", "permission": ["tickets.view", "money.adjust"]},
                     follow_redirects=True)
    assert b"permissions you hold yourself" in resp.data
    assert db.session.scalar(select(StaffRole).filter_by(name="sneaky")) is None
    lead.post("/staff/team/roles", data={"name": "sneaky", "permission": ["money"]})  # an area stands for all
    assert db.session.scalar(select(StaffRole).filter_by(name="sneaky")) is None
    lead.post("/staff/team/roles", data={"name": "team-lead",
                                         "permission": ["staff.accounts", "staff.roles", "services.force"]})
    db.session.expire_all()
    assert "services.force" not in db.session.scalar(select(StaffRole).filter_by(name="team-lead")).permissions
    # nor change or delete a role holding what it lacks
    lead.post("/staff/team/roles", data={"name": "money-desk", "permission": ["tickets.view"]})
    lead.post("/staff/team/roles/money-desk/delete")
    db.session.expire_all()
    assert sorted(db.session.scalar(select(StaffRole).filter_by(name="money-desk")).permissions) == \
        ["money.adjust", "money.view"]
    resp = lead.post("/staff/team/roles", data={"name": "ticket-reader", "permission": ["tickets.view"]},
                     follow_redirects=True)
    assert b"Role ticket-reader was saved." in resp.data

    # an admin can do all of it
    boss = app.test_client()
    login(boss, admin_user)
    resp = boss.post("/staff/team/invite", data={"email": "new-admin@example.test", "role": "admin"},
                     follow_redirects=True)
    assert b"was invited as admin" in resp.data
    boss.post(f"/staff/team/{helper.uuid}/role", data={"role": "admin"})
    boss.post(f"/staff/team/{other_admin.uuid}/role", data={"role": "support"})
    boss.post("/staff/team/roles", data={"name": "money-desk", "permission": ["money.view", "services.force"]})
    db.session.expire_all()
    assert db.session.get(User, helper.id).role == "admin"
    assert db.session.get(User, other_admin.id).role == "support"
    assert db.session.scalar(select(StaffRole).filter_by(name="money-desk")).permissions == \
        ["money.view", "services.force"]


def test_a_role_with_every_permission_still_cannot_make_or_alter_an_admin(app, make_user):
    from hostbay.core.accounts import NAMED_PERMISSIONS

    _role("deputy", sorted(NAMED_PERMISSIONS))
    deputy_user = make_user(role="deputy")
    an_admin = make_user(role="admin")
    support = make_user(role="support")
    deputy = app.test_client()
    login(deputy, deputy_user)
    resp = deputy.post("/staff/team/invite", data={"email": "boss@example.test", "role": "admin"},
                       follow_redirects=True)
    assert b"only an admin can make an admin" in resp.data
    assert db.session.scalar(select(User).filter_by(email="boss@example.test")) is None
    deputy.post(f"/staff/team/{support.uuid}/role", data={"role": "admin"})
    assert deputy.post(f"/staff/team/{an_admin.uuid}/role", data={"role": "support"}).status_code == 404
    db.session.expire_all()
    assert db.session.get(User, support.id).role == "support"
    assert db.session.get(User, an_admin.id).role == "admin"
    # everything short of admin it may give: it holds every permission
    deputy.post(f"/staff/team/{support.uuid}/role", data={"role": "billing"})
    db.session.expire_all()
    assert db.session.get(User, support.id).role == "billing"
