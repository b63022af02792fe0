"""Sending e-mail over SMTP (``HOSTBAY_SMTP_URL``: ``smtp://host:port``, ``smtp://user:password@host:port``, or
``smtps://…`` for TLS). Without it a message is not sent; the log records only that a message was skipped, never
its body (which may hold a link that works as a credential)."""

from __future__ import annotations

import logging
import smtplib
from urllib.parse import unquote, urlsplit

from flask import current_app

log = logging.getLogger(__name__)


def send_mail(to: str, subject: str, body: str) -> bool:
    """Send a message (plain text and its branded HTML alternative); return False when no SMTP server is configured."""
    url = current_app.config.get("HOSTBAY_SMTP_URL")
    if not url:
        log.info("mail not sent (HOSTBAY_SMTP_URL unset): %r", subject)
        return False
    parts = urlsplit(url)
    from .mail_templates import build

    msg = build(to, subject, body)  # plain text + HTML, in the installation's brand
    cls = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    port = parts.port or (465 if parts.scheme == "smtps" else 25)
    with cls(parts.hostname or "127.0.0.1", port, timeout=15) as smtp:
        if parts.scheme == "smtp+starttls":
            smtp.starttls()
        if parts.username:
            smtp.login(unquote(parts.username), unquote(parts.password or ""))
        smtp.send_message(msg)
    return True
