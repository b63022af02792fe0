"""Payment gateway configuration: the enabled gateways, their cleaned settings (secrets masked in every
view and audit entry), the short-lived driver cache, the top-up limits."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict

from flask import current_app, has_app_context
from sqlalchemy import select

from . import clock
from .activity import audit
from .db import db
from .drivers import PaymentGateway
from .errors import FatalDriverError, NotFound, SettingsError
from .payment_models import DEFAULT_MAX_CENTS, DEFAULT_MIN_CENTS, GatewayConfig

log = logging.getLogger("hostbay.core.payments")


# --------------------------------------------------------------------------------------------------------------
# Gateways and their settings
# --------------------------------------------------------------------------------------------------------------

def _registry():
    return current_app.extensions["hostbay"]


def gateway_classes() -> dict[str, type[PaymentGateway]]:
    return dict(_registry().drivers.get("payment", {}))


def gateway_config(name: str) -> GatewayConfig | None:
    return db.session.scalar(select(GatewayConfig).filter_by(name=name))


def enabled_gateways() -> list[tuple[str, str]]:
    """(name, label) of every enabled gateway whose driver is loaded, in name order."""
    classes = gateway_classes()
    rows = db.session.scalars(select(GatewayConfig).filter_by(enabled=True).order_by(GatewayConfig.name))
    return [(r.name, classes[r.name].label) for r in rows if r.name in classes]


GATEWAY_CACHE_SECONDS = 5.0
SEEN_CACHE_SIZE = 50_000


def _caches() -> dict:
    ext = current_app.extensions
    if "hostbay.payments" not in ext:
        ext["hostbay.payments"] = {"gateways": {}, "seen": OrderedDict(), "lock": threading.Lock()}
    return ext["hostbay.payments"]


def _cached_gateway(name: str) -> PaymentGateway:
    """``gateway(name)`` for the webhook path: the built driver is kept for GATEWAY_CACHE_SECONDS so verifying a
    delivery needs no database round trip. Saving a gateway's settings drops this process's copy at once; other
    processes follow within the cache time."""
    caches = _caches()
    hit = caches["gateways"].get(name)
    now = time.monotonic()
    if hit is not None and hit[0] > now:
        return hit[1]
    drv = gateway(name)
    caches["gateways"][name] = (now + GATEWAY_CACHE_SECONDS, drv)
    return drv


def _remember(gateway_name: str, event_id: str) -> None:
    caches = _caches()
    with caches["lock"]:
        seen = caches["seen"]
        seen[(gateway_name, event_id)] = True
        while len(seen) > SEEN_CACHE_SIZE:
            seen.popitem(last=False)


def _seen_recently(gateway_name: str, event_id: str) -> bool:
    return (gateway_name, event_id) in _caches()["seen"]


def gateway(name: str, *, require_enabled: bool = True) -> PaymentGateway:
    """A driver instance built from the stored settings. Raises NotFound for an unknown or disabled gateway."""
    cls = gateway_classes().get(name)
    cfg = gateway_config(name)
    if cls is None or cfg is None or (require_enabled and not cfg.enabled):
        raise NotFound("That payment method is not available.")
    cache = current_app.extensions.setdefault("hostbay.payment_gateways", {})
    # the settings' content (secrets included: their repr is masked, so it is not what identifies them)
    key = (name, cfg.updated_at, json.dumps(cfg.settings or {}, sort_keys=True, default=str))
    drv = cache.get(name)
    if drv is None or drv[0] != key:
        try:
            drv = (key, cls(cfg.settings or {}))
        except SettingsError as exc:
            raise FatalDriverError(f"gateway {name} is misconfigured: {exc}") from None
        cache[name] = drv
    return drv[1]


def mask(value) -> str:
    """A secret as staff may see it back: never in full."""
    text = str(value or "")
    if not text:
        return ""
    return "••••" + (text[-4:] if len(text) >= 12 else "")


def masked_settings(name: str, settings: dict | None) -> dict:
    cls = gateway_classes().get(name)
    secret = {s.key for s in (cls.settings if cls else []) if s.type == "secret"}
    return {k: (mask(v) if k in secret else v) for k, v in (settings or {}).items()}


def save_gateway_config(name: str, raw: dict, enabled: bool, actor) -> GatewayConfig:
    """Validate ``raw`` (form values) with the driver's declarative settings and store them. A blank secret keeps
    the stored one. Raises SettingsError listing every bad field. Audited with secrets masked."""
    cls = gateway_classes().get(name)
    if cls is None:
        raise NotFound("No such payment gateway is installed.")
    cfg = gateway_config(name)
    old = dict(cfg.settings or {}) if cfg else {}
    values = {}
    for s in cls.settings:
        v = raw.get(s.key)
        if s.type == "bool":
            v = bool(v) and str(v).lower() not in ("0", "false", "off", "no")
        elif isinstance(v, str):
            v = v.strip()
        if s.type == "secret" and not v and old.get(s.key):
            v = old[s.key]
        values[s.key] = v
    cleaned = cls.clean_settings(values)
    if cfg is None:
        cfg = GatewayConfig(name=name)
        db.session.add(cfg)
    before = {"enabled": cfg.enabled, "settings": masked_settings(name, old)} if old or cfg.id else None
    cfg.settings, cfg.enabled, cfg.updated_at = cleaned, bool(enabled), clock.now()
    _caches()["gateways"].pop(name, None)
    audit("payments.gateway_settings", "gateway", name, actor=actor, before=before,
          after={"enabled": cfg.enabled, "settings": masked_settings(name, cleaned)})
    db.session.flush()
    return cfg


def limits() -> tuple[int, int]:
    """(minimum, maximum) top-up in cents: ``HOSTBAY_TOPUP_MIN_CENTS`` / ``HOSTBAY_TOPUP_MAX_CENTS``."""
    cfg = current_app.config if has_app_context() else {}
    lo = cfg.get("HOSTBAY_TOPUP_MIN_CENTS") or DEFAULT_MIN_CENTS  # settings come from the app config only
    hi = cfg.get("HOSTBAY_TOPUP_MAX_CENTS") or DEFAULT_MAX_CENTS
    return int(lo), int(hi)


def _base_url() -> str:
    return current_app.config.get("HOSTBAY_BASE_URL", "http://127.0.0.1:5000").rstrip("/")
