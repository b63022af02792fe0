"""Sending e-mail over SMTP (``HOSTBAY_SMTP_URL``: ``smtp://host:port``, ``smtp://user:password@host:port``, or
``smtps://…`` for TLS). Without it a message is not sent; the log records only that a message was skipped, never
its body (which may hold a link that works as a credential)."""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from flask import current_app

log = logging.getLogger(__name__)


def send_mail(to: str, subject: str, body: str) -> bool:
    """Send a plain-text message; return False when no SMTP server is configured."""
    url = current_app.config.get("HOSTBAY_SMTP_URL")
    if not url:
        log.info("mail not sent (HOSTBAY_SMTP_URL unset): %r", subject)
        return False
    parts = urlsplit(url)
    msg = EmailMessage()
    msg["From"] = current_app.config.get("HOSTBAY_MAIL_FROM") or "hostbay@localhost"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    cls = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    port = parts.port or (465 if parts.scheme == "smtps" else 25)
    with cls(parts.hostname or "127.0.0.1", port, timeout=15) as smtp:
        if parts.scheme == "smtp+starttls":
            smtp.starttls()
        if parts.username:
            smtp.login(unquote(parts.username), unquote(parts.password or ""))
        smtp.send_message(msg)
    return True
