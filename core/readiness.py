"""Ready means ready: a new (or reinstalled, or rebuilt) server is Active only after the guest itself says so.

"Running" from a hypervisor means the virtual machine started, not that an operating system came up with the
customer's key and address. So, for an image that can report (``Image.reports_readiness``) on a driver that can
hand the guest a URL (capability ``readiness``; the KVM driver puts it in cloud-init's ``phone_home``):

1. :func:`prepare` issues a :class:`ReadinessCheck` for the operation and puts its URL into the server spec
   (``ServerSpec.ready_url``). The URL is ``<HOSTBAY_READY_URL>/guest/<service uuid>/ready/<token>``; the token
   is signed with the app's secret key (itsdangerous) and names the service and a random nonce.
2. The guest POSTs to it when its first boot is done (no login; see web/guest.py). :func:`report` accepts a token
   only when its signature is valid, it names the service of the URL, its check exists for that service, has not
   expired and was not used: one conditional UPDATE sets ``reported_at``, so a replay, a forged token, an expired
   one or another service's token changes nothing.
3. :func:`wait` (in the job, after the driver call, with no transaction open) polls for the report until
   ``HOSTBAY_READY_TIMEOUT``; without one it raises a ``FatalDriverError``: the operation fails for staff (retry /
   investigate, with the check in the admin detail) and the customer reads that it is taking longer than usual.
   A retried set-up keeps its check (the guest of the first attempt may still report to it), so a late report
   makes the retry finish at once; a reinstall or rebuild writes a new disk and seed, so every attempt gets a
   new check, and a new check ends every earlier unused one of the service.

Images that cannot report (a custom installation, an image without cloud-init) leave ``reports_readiness`` off:
the job does not wait and the server is Active when the driver says it runs.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from datetime import datetime, timedelta

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import JSON, ForeignKey, String, select, update
from sqlalchemy.orm import Mapped, mapped_column

from . import clock
from .activity import audit
from .db import db
from .errors import FatalDriverError

log = logging.getLogger(__name__)

CAPABILITY = "readiness"
SALT = "hostbay.readiness"
POLL_SECONDS = 1.0
CUSTOMER_MESSAGE = {
    "create": "Setting up your server is taking longer than usual. Our staff have been notified and are looking "
              "into it.",
    "reinstall": "Reinstalling your server is taking longer than usual. Our staff have been notified and are "
                 "looking into it.",
    "rebuild": "Rebuilding your server is taking longer than usual. Our staff have been notified and are looking "
               "into it.",
}
WAITING_TEXT = "Waiting for your server to finish its first start"


class ReadinessCheck(db.Model):
    """One expected report from a guest: issued per operation attempt, used at most once."""

    __tablename__ = "readiness_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    operation_id: Mapped[str | None] = mapped_column(String(36), index=True)
    purpose: Mapped[str] = mapped_column(String(16), default="create")  # create, reinstall, rebuild
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
    expires_at: Mapped[datetime] = mapped_column()
    reported_at: Mapped[datetime | None] = mapped_column()
    report: Mapped[dict | None] = mapped_column(JSON)  # what the guest posted (admin detail)


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def waits_for(service, driver) -> bool:
    """Whether this service's next set-up waits for its guest: its image reports and its driver can say where."""
    from .catalog import Image

    image = db.session.get(Image, service.image_id) if service.image_id else None
    return bool(image is not None and image.reports_readiness and driver.supports(CAPABILITY))


def url_for_check(service_uuid: str, nonce: str) -> str:
    token = _serializer().dumps({"s": service_uuid, "n": nonce})
    from . import links

    return links.url("guest_ready", service_uuid=service_uuid, token=token)  # on HOSTBAY_READY_URL


def issue(service, op, purpose: str, reuse: bool) -> ReadinessCheck:
    """A check for this operation (the unused, unexpired one of an earlier attempt when ``reuse``)."""
    now = clock.now()
    if reuse:
        existing = db.session.scalar(select(ReadinessCheck).where(
            ReadinessCheck.operation_id == op.id, ReadinessCheck.service_id == service.id,
            ReadinessCheck.purpose == purpose).order_by(ReadinessCheck.id.desc()).limit(1))
        if existing is not None and (existing.reported_at is not None or existing.expires_at > now):
            return existing
    # a new disk and seed supersede every earlier unused URL of this service: their guests are gone
    db.session.execute(update(ReadinessCheck).where(
        ReadinessCheck.service_id == service.id, ReadinessCheck.reported_at.is_(None),
        ReadinessCheck.expires_at > now).values(expires_at=now).execution_options(synchronize_session=False))
    check = ReadinessCheck(nonce=secrets.token_urlsafe(32), service_id=service.id, operation_id=op.id,
                           purpose=purpose, created_at=now,
                           expires_at=now + timedelta(seconds=current_app.config["HOSTBAY_READY_TOKEN_SECONDS"]))
    db.session.add(check)
    db.session.flush()
    return check


def prepare(service, op, driver, spec, purpose: str):
    """The spec with a readiness URL when this service waits for its guest (the check is flushed, not committed:
    the job commits before its driver call). ``op.payload['readiness_check']`` remembers which check to wait for."""
    result = {k: v for k, v in (op.result or {}).items() if k not in ("readiness", "readiness_check")}
    if not waits_for(service, driver):
        op.result = {**result, "readiness": "not reported by this image"}
        return spec
    check = issue(service, op, purpose, reuse=purpose == "create")
    op.result = {**result, "readiness_check": check.id}
    return dataclasses.replace(spec, ready_url=url_for_check(service.uuid, check.nonce))


def wait(op, service, purpose: str, timeout: float | None = None) -> bool:
    """Block until the guest's report for this operation arrives (True) or raise after the timeout. Returns False
    at once when nothing waits (an image that cannot report)."""
    check_id = (op.result or {}).get("readiness_check")
    if not check_id:
        return False
    timeout = current_app.config["HOSTBAY_READY_TIMEOUT"] if timeout is None else timeout
    db.session.commit()
    op.progress(max(op.progress_pct, 90), WAITING_TEXT)
    started = time.monotonic()
    last_beat = started
    while True:
        reported = db.session.scalar(select(ReadinessCheck.reported_at).where(ReadinessCheck.id == check_id))
        db.session.commit()  # no transaction is held between polls
        if reported is not None:
            return True
        now = time.monotonic()
        if now - started >= timeout:
            break
        if now - last_beat >= 30:  # keep the operation's heartbeat fresh (a stale claim would be taken over)
            op.progress(max(op.progress_pct, 90), WAITING_TEXT)
            last_beat = now
        time.sleep(min(POLL_SECONDS, max(0.05, timeout - (now - started))))
    raise FatalDriverError(
        f"no readiness report from the guest of service {service.uuid} within {timeout:.0f} s (readiness check "
        f"{check_id}, {purpose}). The server may still be booting or may have failed to boot: look at its console, "
        f"then retry this operation (a report that arrives meanwhile is kept and makes a retry of a set-up finish "
        f"at once).", customer_message=CUSTOMER_MESSAGE.get(purpose, CUSTOMER_MESSAGE["create"]))


def report(service_uuid: str, token: str, posted: dict | None = None) -> bool:
    """Record the guest's report. True only for a valid, unexpired, unused token of this very service."""
    from .services import Service

    try:
        data = _serializer().loads(token)
    except BadSignature:
        return False
    if not isinstance(data, dict) or data.get("s") != service_uuid or not isinstance(data.get("n"), str):
        return False
    service_id = db.session.scalar(select(Service.id).where(Service.uuid == service_uuid))
    if service_id is None:
        return False
    now = clock.now()
    keep = {k: str(v)[:255] for k, v in (posted or {}).items() if k in ("instance_id", "hostname", "fqdn")}
    done = db.session.execute(
        update(ReadinessCheck)
        .where(ReadinessCheck.nonce == data["n"], ReadinessCheck.service_id == service_id,
               ReadinessCheck.reported_at.is_(None), ReadinessCheck.expires_at > now)
        .values(reported_at=now, report=keep).execution_options(synchronize_session=False)).rowcount
    if done != 1:
        return False
    audit("service.guest_ready", "service", service_uuid, after={"report": keep}, detail="readiness report")
    return True


__all__ = ["ReadinessCheck", "prepare", "wait", "report", "waits_for", "CAPABILITY"]
