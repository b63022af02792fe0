"""Account credentials beyond the password: password-reset tokens, TOTP two-factor with one-time recovery codes,
and API tokens.

- Reset tokens are signed (itsdangerous) with the user's current password hash in the salt, so a token stops
  working as soon as the password changes (single use) and after ``RESET_MAX_AGE`` seconds (expiry, measured on
  the business clock).
- TOTP secrets live in ``User.totp_secret``; each code is accepted once (``TotpState``); recovery codes are stored as SHA-256 hashes and spent with a
  conditional UPDATE, so a code works once even under concurrent logins.
- API tokens are shown once; only their SHA-256 hash is stored.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import secrets
import time
from datetime import datetime, timezone

import pyotp
from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.timed import TimestampSigner
from sqlalchemy import JSON, BigInteger, ForeignKey, String, select, update
from sqlalchemy.orm import Mapped, mapped_column

from . import clock
from .accounts import User
from .db import db, new_uuid
from .errors import UserError

RESET_MAX_AGE = 3600  # seconds a password-reset link stays valid
RECOVERY_CODE_COUNT = 10


# --------------------------------------------------------------------------------------------------------------
# Signed tokens on the business clock
# --------------------------------------------------------------------------------------------------------------

def _epoch() -> int:
    return calendar.timegm(clock.now().utctimetuple())  # naive UTC datetimes throughout


class _ClockSigner(TimestampSigner):
    def get_timestamp(self) -> int:
        return _epoch()


class _ClockSerializer(URLSafeTimedSerializer):
    default_signer = _ClockSigner

    def loads(self, s, max_age=None, return_timestamp=False, salt=None):  # noqa: D102 - age on the business clock
        payload, ts = super().loads(s, max_age=None, return_timestamp=True, salt=salt)
        age = _epoch() - ts.timestamp()
        if max_age is not None and (age > max_age or age < -5):
            raise SignatureExpired("token expired", payload=payload)
        return (payload, age) if return_timestamp else payload


def serializer(purpose: str) -> _ClockSerializer:
    return _ClockSerializer(current_app.config["SECRET_KEY"], salt=f"hostbay.{purpose}")


# --------------------------------------------------------------------------------------------------------------
# Password reset
# --------------------------------------------------------------------------------------------------------------

def _reset_salt(user: User) -> str:
    return "password-reset:" + user.password_hash


def make_reset_token(user: User) -> str:
    return serializer("reset").dumps(user.uuid, salt=_reset_salt(user))


def user_for_reset_token(token: str) -> User | None:
    """The user a valid, unexpired and unused reset token belongs to, else None."""
    s = serializer("reset")
    try:
        uuid = s.loads_unsafe(token)[1]
    except Exception:  # noqa: BLE001 - malformed input
        return None
    if not isinstance(uuid, str):
        return None
    user = db.session.scalar(select(User).filter_by(uuid=uuid, active=True))
    if user is None:
        return None
    try:
        s.loads(token, max_age=RESET_MAX_AGE, salt=_reset_salt(user))
    except (BadSignature, SignatureExpired):
        return None
    return user


# --------------------------------------------------------------------------------------------------------------
# TOTP and recovery codes
# --------------------------------------------------------------------------------------------------------------

class RecoveryCode(db.Model):
    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
    used_at: Mapped[datetime | None] = mapped_column()


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(user: User, secret: str) -> str:
    from . import branding

    # the authenticator app lists the account under the installation's brand
    return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=branding.current().name)


def _totp_now() -> float:
    """TOTP follows the real time of the customer's device, not the business clock."""
    return time.time()


def totp_step(secret: str | None, code: str) -> int | None:
    """The time step a 6-digit code belongs to (now, or one step of clock drift either way), else None."""
    code = "".join((code or "").split())
    if not secret or len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    now = _totp_now()
    for drift in (0, -1, 1):
        at = now + drift * totp.interval
        if hmac.compare_digest(totp.at(at), code):
            return totp.timecode(datetime.fromtimestamp(at, tz=timezone.utc))
    return None


def check_totp(secret: str | None, code: str) -> bool:
    return totp_step(secret, code) is not None


class TotpState(db.Model):
    """The last TOTP time step accepted for a user: a code is refused unless it is newer (RFC 6238 §5.2), so an
    observed code cannot be replayed."""

    __tablename__ = "totp_states"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    last_step: Mapped[int] = mapped_column(BigInteger, default=0)


def use_totp(user: User, code: str) -> bool:
    """Accept a TOTP code once: conditional UPDATE of the last accepted step."""
    step = totp_step(user.totp_secret, code)
    if step is None:
        return False
    res = db.session.execute(update(TotpState).where(TotpState.user_id == user.id, TotpState.last_step < step)
                             .values(last_step=step).execution_options(synchronize_session=False))
    return res.rowcount == 1


def _code_hash(code: str) -> str:
    norm = "".join(ch for ch in (code or "").lower() if ch.isalnum())
    return hashlib.sha256(norm.encode()).hexdigest()


def _new_code() -> str:
    raw = "".join(secrets.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def enable_two_factor(user: User, secret: str, code: str) -> list[str]:
    """Turn on TOTP once the customer proved their app produces ``code``; return fresh recovery codes."""
    if user.totp_secret:
        raise UserError("Two-factor authentication is on already.")
    step = totp_step(secret, code)
    if step is None:
        raise UserError("That code is not right. Check the time on your device and enter the current code.")
    user.totp_secret = secret
    state = db.session.get(TotpState, user.id)
    if state is None:
        db.session.add(TotpState(user_id=user.id, last_step=step))
    else:
        state.last_step = max(state.last_step, step)
    return regenerate_recovery_codes(user)


def disable_two_factor(user: User) -> None:
    user.totp_secret = None
    db.session.execute(RecoveryCode.__table__.delete().where(RecoveryCode.user_id == user.id))
    db.session.execute(TotpState.__table__.delete().where(TotpState.user_id == user.id))


def regenerate_recovery_codes(user: User) -> list[str]:
    """Replace all recovery codes of ``user``; the plain codes are returned once and never stored."""
    db.session.execute(RecoveryCode.__table__.delete().where(RecoveryCode.user_id == user.id))
    codes = [_new_code() for _ in range(RECOVERY_CODE_COUNT)]
    db.session.add_all(RecoveryCode(user_id=user.id, code_hash=_code_hash(c)) for c in codes)
    db.session.flush()
    return codes


def remaining_recovery_codes(user: User) -> int:
    return len(db.session.scalars(select(RecoveryCode.id).where(RecoveryCode.user_id == user.id,
                                                                RecoveryCode.used_at.is_(None))).all())


def use_recovery_code(user: User, code: str) -> bool:
    """Spend one recovery code (conditional UPDATE: a code works exactly once)."""
    res = db.session.execute(
        update(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.code_hash == _code_hash(code),
               RecoveryCode.used_at.is_(None))
        .values(used_at=clock.now()).execution_options(synchronize_session=False))
    return res.rowcount == 1


def check_second_factor(user: User, code: str) -> str | None:
    """Check a TOTP code (once) or a recovery code (once); return "totp", "recovery" or None."""
    if use_totp(user, code):
        return "totp"
    if code and use_recovery_code(user, code):
        return "recovery"
    return None


# --------------------------------------------------------------------------------------------------------------
# API tokens
# --------------------------------------------------------------------------------------------------------------

TOKEN_PREFIX = "hb_"


class ApiToken(db.Model):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))  # first characters, to recognise a token in the list
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    # REST API: "read" tokens may only read; "write" tokens may also change things. Optional expiry and client
    # networks (CIDR list; empty: any address). Last use is recorded with the client address.
    scope: Mapped[str] = mapped_column(String(8), default="write")
    expires_at: Mapped[datetime | None] = mapped_column()
    allowed_networks: Mapped[list] = mapped_column(JSON, default=list)
    last_used_ip: Mapped[str | None] = mapped_column(String(45))

    @property
    def active(self) -> bool:
        return self.revoked_at is None and not self.expired

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= clock.now()


def _token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


TOKEN_SCOPES = ("read", "write")
MAX_TOKEN_DAYS = 3650


def parse_networks(text) -> list[str]:
    """Client networks a token may be used from: CIDRs or addresses separated by commas, spaces or new lines
    (a list is accepted as well). Returns normalised CIDR strings; UserError for anything else."""
    import ipaddress

    items = text if isinstance(text, (list, tuple)) else (text or "").replace(",", " ").split()
    out = []
    for item in items:
        try:
            out.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
        except ValueError:
            raise UserError(f"“{str(item)[:60]}” is not an IP address or network (e.g. 203.0.113.0/24).") from None
    if len(out) > 20:
        raise UserError("A token accepts at most 20 client networks.")
    return out


def create_api_token(user: User, name: str, *, scope: str = "write", expires_days: int | None = None,
                     networks=None) -> tuple[ApiToken, str]:
    """Create a token; return the row and the plain token, which is shown once (only its SHA-256 is stored).
    ``scope`` is "read" or "write"; ``expires_days`` (1..3650) sets an expiry; ``networks`` limits the client
    addresses (see :func:`parse_networks`). A staff member's token carries that member's role permissions."""
    name = (name or "").strip()
    if not name or len(name) > 80:
        raise UserError("Give the token a name of at most 80 characters.")
    if scope not in TOKEN_SCOPES:
        raise UserError("A token's scope is read or write.")
    expires_at = None
    if expires_days not in (None, ""):
        try:
            days = int(expires_days)
        except (TypeError, ValueError):
            raise UserError("Enter the number of days the token stays valid.") from None
        if not 1 <= days <= MAX_TOKEN_DAYS:
            raise UserError(f"A token expires after 1 to {MAX_TOKEN_DAYS} days.")
        from datetime import timedelta

        expires_at = clock.now() + timedelta(days=days)
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=user.id, name=name, token_hash=_token_hash(raw), hint=raw[:9], scope=scope,
                     expires_at=expires_at, allowed_networks=parse_networks(networks))
    db.session.add(token)
    db.session.flush()
    return token, raw


def revoke_api_token(token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = clock.now()


def user_for_api_token(raw: str) -> User | None:
    """The active user of an unrevoked, unexpired token; records when it was last used."""
    found = authenticate_api_token(raw, None)
    return found[1] if found and not isinstance(found, str) else None


def authenticate_api_token(raw: str, remote_addr: str | None):
    """Check a bearer token for a request from ``remote_addr``.

    Returns ``(token, user)``; or None for an unknown, revoked or malformed token or an inactive user; or the
    string ``"expired"`` / ``"network"`` for a known token that is expired or used from a network it does not
    allow. Records the last-use time and client address on success (the caller commits)."""
    import ipaddress

    if not raw or not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    digest = _token_hash(raw)
    token = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None)))
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        return None
    user = db.session.get(User, token.user_id)
    if user is None or not user.active:
        return None
    if token.expired:
        return "expired"
    if token.allowed_networks:
        try:
            addr = ipaddress.ip_address(remote_addr or "")
        except ValueError:
            return "network"
        if not any(addr in ipaddress.ip_network(n) for n in token.allowed_networks):
            return "network"
    token.last_used_at = clock.now()
    token.last_used_ip = (remote_addr or "")[:45] or None
    return token, user
