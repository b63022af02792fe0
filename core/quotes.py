"""Signed package-change quotes: the customer is charged exactly the amount the review page showed.

:func:`create_quote` computes the pro-rata amount once (:func:`hostbay.core.billing.quote_change`) and signs it
together with everything it depends on (service, both packages, prices, the billing period) and the time it was
made. :func:`apply_quote` checks the signature, the age (``QUOTE_SECONDS``, a few minutes) and that none of
those inputs has changed, then makes the change for exactly the signed amount. An expired or outdated quote
raises :class:`QuoteExpired`; the caller shows a fresh review.

The panel and the API use the same two functions; the token is opaque text to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select

from . import clock
from .catalog import Package
from .db import db
from .errors import UserError
from .services import Service

QUOTE_SECONDS = 300
_SALT = "hostbay.package-change-quote.v1"


class QuoteExpired(UserError):
    """The quote is older than QUOTE_SECONDS, or the service or the package changed since: review again."""

    def __init__(self, message: str = "The price shown is no longer valid (it holds for "
                                      f"{QUOTE_SECONDS // 60} minutes). Here is the current price."):
        super().__init__(message)


@dataclass(frozen=True)
class SignedQuote:
    quote: object  # billing.ChangeQuote
    token: str
    expires_at: datetime

    @property
    def amount_cents(self) -> int:
        return self.quote.amount_cents


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=_SALT)


def _fingerprint(service: Service, package: Package) -> dict:
    return {"s": service.uuid, "p": package.uuid, "op": service.package_id, "o": service.price_cents,
            "n": package.price_cents(service.cycle), "ps": service.period_start.isoformat(),
            "ra": service.renews_at.isoformat(), "c": service.cycle}


def create_quote(service: Service, new_package: Package) -> SignedQuote:
    """Quote moving ``service`` to ``new_package`` now and sign it (nothing is written)."""
    from .billing import quote_change

    quote = quote_change(service, new_package)
    payload = {**_fingerprint(service, new_package), "a": quote.amount_cents, "at": quote.at.isoformat()}
    return SignedQuote(quote=quote, token=_serializer().dumps(payload),
                       expires_at=quote.at + timedelta(seconds=QUOTE_SECONDS))


def read_quote(token: str, service: Service) -> tuple[Package, int]:
    """The package and the signed amount of ``token`` for ``service``; QuoteExpired when it does not hold any
    more (bad signature, another service, too old, or its inputs changed)."""
    try:
        data = _serializer().loads(token or "")
    except BadSignature:
        raise QuoteExpired("This price could not be confirmed. Here is the current price.") from None
    if not isinstance(data, dict) or data.get("s") != service.uuid:
        raise QuoteExpired("This price could not be confirmed. Here is the current price.")
    made = datetime.fromisoformat(data["at"])
    now = clock.now()
    if now - made > timedelta(seconds=QUOTE_SECONDS) or now < made - timedelta(seconds=5):
        raise QuoteExpired()
    package = db.session.scalar(select(Package).filter_by(uuid=data.get("p")))
    if package is None or not package.orderable:
        raise QuoteExpired("This package is no longer available.")
    expected = {k: v for k, v in data.items() if k not in ("a", "at")}
    if _fingerprint(service, package) != expected:
        raise QuoteExpired("The service or the package changed since this price was shown. "
                           "Here is the current price.")
    return package, int(data["a"])


def apply_quote(token: str, service: Service, actor, *, key: str, confirm: str | None = None):
    """Change the package of ``service`` for exactly the amount ``token`` carries; returns the operation.
    Raises QuoteExpired (show a fresh review) or what :func:`hostbay.core.billing.change_package` raises."""
    from . import jobs
    from .billing import _check_key, change_package

    replay = db.session.scalar(select(jobs.Operation).filter_by(key=f"change:{service.uuid}:{_check_key(key)}"))
    if replay is not None:  # a double submit: the first request made the change
        return replay
    db.session.refresh(service)
    package, amount = read_quote(token, service)
    return change_package(service, package, actor, confirm=confirm, key=key, quoted_cents=amount)
