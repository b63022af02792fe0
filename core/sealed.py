"""Column types that keep secrets encrypted at rest (with :mod:`hostbay.core.secretbox`), plain in memory.

Two types, one mechanism — nothing at a call site seals or opens anything:

- :class:`SealedString`: a text column whose value is stored as a MultiFernet token (TOTP seeds, the signing
  secrets of outgoing webhooks).
- :class:`SealedSettings`: a driver's settings JSON whose **secret** keys are stored as ``{"$sealed": token}``.
  Which keys are secret is what the driver class declares (``Setting(type="secret")``): a model holding such a
  column inherits :class:`SealedSettingsMixin` and names its driver kind and the attribute holding the driver's
  name; before each INSERT/UPDATE the mixin attaches the driver's secret keys to the value. Keys stored sealed
  stay sealed even when their driver is not loaded; without a driver class, keys whose names look like
  credentials are sealed.

Values written before sealing existed (plain text) are read as they are and sealed at their next write, or by
``hostbay secrets rotate`` (:func:`rotate_all`), which re-encrypts every sealed value under the newest key.
"""

from __future__ import annotations

import re

from sqlalchemy import JSON, Text, event, inspect, select, type_coerce
from sqlalchemy.types import TypeDecorator

from . import secretbox

MARK = "$sealed"
_TOKEN_PREFIX = "gAAAAA"  # every Fernet token (version byte 0x80, then a 64-bit timestamp) starts so
_CREDENTIAL_NAME = re.compile(r"(?i)password|passwd|secret|token|api[_-]?key|apikey|private[_-]?key|credential")


class SecretStr(str):
    """A secret read from a sealed column: a ``str`` in every way (compare, encode, format) except its ``repr``,
    which never shows it — so a row, a tuple or a dict that holds it (SQLAlchemy's DEBUG row log, ``%r`` in a
    message, a traceback's locals) prints ``'[redacted]'``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'[redacted]'"


def is_token(value) -> bool:
    return isinstance(value, str) and value.startswith(_TOKEN_PREFIX)


def _is_marker(value) -> bool:
    return isinstance(value, dict) and set(value) == {MARK}


class SealedString(TypeDecorator):
    """Text stored as a MultiFernet token; ``None`` and ``""`` are stored as NULL. A plain value (written before
    sealing) is returned as it is."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None or value == "":
            return None
        return secretbox.seal(str(value))

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return SecretStr(secretbox.open_(value) if is_token(value) else value)


class SettingsValue(dict):
    """A settings dict with the keys to store sealed (``secret_keys``); in memory every value is plain."""

    __slots__ = ("secret_keys",)

    def __init__(self, values=(), secret_keys=frozenset()):
        super().__init__(values)
        self.secret_keys = frozenset(secret_keys)

    def __repr__(self) -> str:
        return repr({k: (SecretStr(v) if k in self.secret_keys and isinstance(v, str) else v)
                     for k, v in self.items()})


class SealedSettings(TypeDecorator):
    """A JSON object whose secret keys are stored as ``{"$sealed": token}``."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        secret = getattr(value, "secret_keys", None)
        if secret is None:  # written without the ORM (no driver known): seal what looks like a credential
            secret = {k for k in value if _CREDENTIAL_NAME.search(str(k))}
        out = {}
        for k, v in value.items():
            if k in secret and isinstance(v, str) and v != "":
                out[k] = {MARK: secretbox.seal(v)}
            else:
                out[k] = v
        return out

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if not isinstance(value, dict):
            return value
        sealed = {k for k, v in value.items() if _is_marker(v)}
        return SettingsValue({k: (SecretStr(secretbox.open_(v[MARK])) if k in sealed else v)
                              for k, v in value.items()}, sealed)


def declared_secret_keys(kind: str, driver_name: str | None) -> frozenset[str] | None:
    """The keys the driver ``driver_name`` of ``kind`` declares as secret; None when it is not loaded here."""
    from flask import current_app, has_app_context

    if not has_app_context() or "hostbay" not in current_app.extensions:
        return None
    cls = current_app.extensions["hostbay"].drivers.get(kind, {}).get(driver_name or "")
    if cls is None:
        return None
    return frozenset(s.key for s in cls.settings if s.type == "secret")


def secret_keys_for(kind: str, driver_name: str | None, value: dict) -> frozenset[str]:
    declared = declared_secret_keys(kind, driver_name)
    if declared is None:
        declared = frozenset(k for k in value if _CREDENTIAL_NAME.search(str(k)))
    # a key stored sealed stays sealed (a driver that stopped declaring it, or one not loaded in this process)
    return declared | getattr(value, "secret_keys", frozenset())


class SealedSettingsMixin:
    """For a model with a ``settings`` column of type :class:`SealedSettings`: ``__settings_kind__`` is the
    driver kind (``"virt"``, ``"payment"``, ``"dns"``), ``__settings_driver__`` the attribute naming the driver."""

    __settings_kind__: str
    __settings_driver__: str = "driver"


def _attach_secret_keys(mapper, connection, target) -> None:
    state = inspect(target)
    value = state.dict.get("settings")
    if not isinstance(value, dict):
        return
    keys = secret_keys_for(target.__settings_kind__, getattr(target, target.__settings_driver__, None), value)
    if isinstance(value, SettingsValue) and value.secret_keys == keys:
        return
    # replaced in the instance dict, not through the attribute: the change history (what the flush writes) stays
    state.dict["settings"] = SettingsValue(value, keys)


event.listen(SealedSettingsMixin, "before_insert", _attach_secret_keys, propagate=True)
event.listen(SealedSettingsMixin, "before_update", _attach_secret_keys, propagate=True)


# --------------------------------------------------------------------------------------------------------------
# Rotation
# --------------------------------------------------------------------------------------------------------------

def sealed_columns():
    """(model, attribute, kind) of every sealed column: kind is "settings" or "string"."""
    from .db import db

    out = []
    for mapper in db.Model.registry.mappers:
        for prop in mapper.column_attrs:
            for col in prop.columns:
                if isinstance(col.type, SealedSettings):
                    out.append((mapper.class_, prop.key, "settings"))
                elif isinstance(col.type, SealedString):
                    out.append((mapper.class_, prop.key, "string"))
    return sorted(out, key=lambda e: (e[0].__tablename__, e[1]))


def rotate_all() -> list[dict]:
    """Re-encrypt every sealed value with the newest key and seal every secret still stored in plain text.
    Flushes (the caller commits). Returns one count line per column: never a value."""
    from sqlalchemy.orm.attributes import flag_modified

    from .db import db

    report = []
    for model, attr, kind in sealed_columns():
        col = getattr(model, attr)
        pk = inspect(model).primary_key[0]
        raw_type = JSON if kind == "settings" else Text
        raw = dict(db.session.execute(select(pk, type_coerce(col, raw_type)).where(col.is_not(None))).all())
        rotated = plain = 0
        for row in db.session.scalars(select(model).where(pk.in_(list(raw)))) if raw else ():
            stored = raw[getattr(row, pk.key)]
            if kind == "settings":
                value = getattr(row, attr) or {}
                keys = secret_keys_for(row.__settings_kind__, getattr(row, row.__settings_driver__, None), value)
                rotated += sum(1 for v in stored.values() if _is_marker(v))
                plain += sum(1 for k in keys if isinstance(stored.get(k), str) and stored.get(k) != "")
                # a fresh value: bound again, every secret key sealed with the newest key
                setattr(row, attr, SettingsValue(value, keys))
            else:
                if is_token(stored):
                    rotated += 1
                else:
                    plain += 1
            # read in plain (opened with whichever key sealed it); written again, sealed with the newest key
            flag_modified(row, attr)
        db.session.flush()
        report.append({"table": model.__tablename__, "column": attr, "rotated": rotated, "sealed": plain})
    return report
