"""Notices: one row per unique key, mailed exactly once through a real SMTP server on loopback."""
import socket
from datetime import timedelta
from email.utils import parseaddr

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message

from hostbay.core import ledger, notices, renewals
from hostbay.core.notices import Notice


class Collect(Message):
    def __init__(self):
        super().__init__()
        self.messages = []

    def handle_message(self, message):
        self.messages.append(message)


def _text(message) -> str:
    """The plain-text part of a notice (each also has a branded HTML alternative)."""
    part = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    return part.get_payload(decode=True).decode()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    handler = Collect()
    ctl = Controller(handler, hostname="127.0.0.1", port=_free_port())
    ctl.start()
    try:
        yield ctl, handler
    finally:
        ctl.stop()


@pytest.fixture
def app_config(smtp):
    ctl, _ = smtp
    return {"HOSTBAY_SMTP_URL": f"smtp://127.0.0.1:{ctl.port}", "HOSTBAY_MAIL_FROM": "billing@hostbay.test"}


def test_reminders_and_suspension_notice_sent_once(db, clock, smtp, setup, make_service):
    _, box = smtp
    ledger.credit(setup.user.id, 300, kind="topup", key="t", description="Top-up")
    db.session.commit()
    svc = make_service(setup.user, setup.package, node=setup.node, infra_ref={"id": "x", "domain": "fake-x"})
    due = svc.renews_at
    clock.set(due - timedelta(days=10))
    assert notices.create_reminders() == 0
    clock.set(due - timedelta(days=6))
    assert notices.create_reminders() == 1  # the 7-day reminder
    assert notices.create_reminders() == 0  # every later run finds it exists
    assert notices.send_pending() == 1
    assert notices.send_pending() == 0
    clock.set(due - timedelta(hours=20))
    assert notices.create_reminders() == 1  # the 1-day reminder
    notices.create_reminders()
    notices.send_pending()
    notices.send_pending()
    assert len(box.messages) == 2
    m = box.messages[0]
    assert m["To"] == setup.user.email and parseaddr(m["From"]) == ("hostbay", "billing@hostbay.test")
    body = _text(m)
    assert "$10.00" in body and "Add at least $7.00" in body and "fake-x" not in body
    # the sweep suspends and records a suspension notice; a second sweep adds none
    clock.set(due)
    renewals.renewal_sweep()
    renewals.renewal_sweep()
    notices.send_pending()
    notices.send_pending()
    assert len(box.messages) == 3
    assert "suspended" in box.messages[2]["Subject"]
    assert "Add at least $7.00" in _text(box.messages[2])
    rows = db.session.scalars(db.select(Notice).order_by(Notice.id)).all()
    assert [n.kind for n in rows] == ["reminder", "reminder", "suspended"]
    assert all(n.sent_at is not None and n.attempts == 1 for n in rows)


def test_smtp_down_keeps_notice_for_next_run(db, app, clock, smtp, setup, make_service):
    ctl, box = smtp
    svc = make_service(setup.user, setup.package)
    clock.set(svc.renews_at - timedelta(hours=1))
    notices.create_reminders()
    app.config["HOSTBAY_SMTP_URL"] = f"smtp://127.0.0.1:{_free_port()}"  # nobody listens
    assert notices.send_pending() == 0
    pending = db.session.scalars(db.select(Notice)).all()
    assert all(n.sent_at is None and n.sending_at is None and n.error for n in pending)
    app.config["HOSTBAY_SMTP_URL"] = f"smtp://127.0.0.1:{ctl.port}"
    assert notices.send_pending() == 2  # the 7- and the 1-day reminder (both thresholds passed)
    assert len(box.messages) == 2
