"""Secrets at rest: one MultiFernet for every secret hostbay stores (BMC passwords first, later every secret
setting).

Keys come from ``HOSTBAY_SECRET_KEYS``: comma-separated Fernet keys, **newest first**. The newest encrypts; every key
decrypts, so a key is rotated by putting a new one in front, running ``hostbay secrets rotate`` (re-encrypts the
stored values with the newest key) and then dropping the old one. Unset, a key is generated once into
``instance/secret_keys`` (mode 0600), like the session secret key — keep that file with the database backups.

``seal(text)`` returns a token (str) to store, ``open_(token)`` the text; ``mask(text)`` what a page may show.
Nothing here logs a value.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

_cache: dict[tuple, MultiFernet] = {}


class SecretError(Exception):
    """A stored secret could not be decrypted with any configured key."""


def _generated_key(instance: Path) -> str:
    path = instance / "secret_keys"
    if path.exists():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def keys_from_config(config) -> list[str]:
    raw = config.get("HOSTBAY_SECRET_KEYS") or ""
    keys = [k.strip() for k in (raw.split(",") if isinstance(raw, str) else raw) if k and k.strip()]
    if not keys:
        keys = [_generated_key(Path(config.get("INSTANCE_PATH") or "instance"))]
    return keys


def box(config=None) -> MultiFernet:
    if config is None:
        from flask import current_app

        config = current_app.config
    keys = tuple(keys_from_config(config))
    mf = _cache.get(keys)
    if mf is None:
        try:
            mf = _cache[keys] = MultiFernet([Fernet(k.encode()) for k in keys])
        except (ValueError, TypeError):
            raise SecretError("HOSTBAY_SECRET_KEYS holds a value that is not a Fernet key "
                              "(32 url-safe base64-encoded bytes)") from None
    return mf


def seal(text: str | None, config=None) -> str | None:
    if text is None or text == "":
        return None
    return box(config).encrypt(text.encode()).decode()


def open_(token: str | None, config=None) -> str:
    if not token:
        return ""
    try:
        return box(config).decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretError("a stored secret does not decrypt with any key in HOSTBAY_SECRET_KEYS") from None


def rotate(token: str | None, config=None) -> str | None:
    """The same secret encrypted with the newest key."""
    if not token:
        return token
    try:
        return box(config).rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretError("a stored secret does not decrypt with any key in HOSTBAY_SECRET_KEYS") from None


def mask(text: str | None) -> str:
    """What a staff page shows of a secret: whether one is set, never any of its characters."""
    return "•" * 8 if text else "(not set)"
