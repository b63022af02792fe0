"""Fixtures for account tests: a real SMTP server (aiosmtpd) on loopback that keeps what it receives."""

from __future__ import annotations

import base64
import email
import os
import re
import socket
import struct

import pytest


class Inbox:
    def __init__(self):
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def to(self, address: str) -> list:
        return [m for m in self.messages if m["To"] == address]

    def body(self, msg) -> str:
        """The plain-text part (every message also has a branded HTML alternative)."""
        part = next((p for p in msg.walk() if p.get_content_type() == "text/plain"), msg)
        return part.get_payload(decode=True).decode()

    def link(self, msg, pattern=r"https?://\S+") -> str:
        found = re.search(pattern, self.body(msg))
        assert found, self.body(msg)
        return found.group(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.url = f"smtp://127.0.0.1:{port}"
    try:
        yield inbox
    finally:
        controller.stop()


@pytest.fixture
def app_config(smtp_server):
    return {"HOSTBAY_SMTP_URL": smtp_server.url, "HOSTBAY_BASE_URL": "http://panel.example.test"}


def _ssh_key_line(comment: str = "me@laptop") -> str:
    """A well-formed ssh-ed25519 public key line with a random key."""
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


@pytest.fixture
def ssh_key_line():
    return _ssh_key_line
