"""The public pages' cache: a rendered body per (path, cache version), kept ``HOSTBAY_STATUS_CACHE_SECONDS``.

Serving a cached page costs no query (the version is re-read at most once a second) and no rendering; every
staff change and every clock-driven transition bumps the version, so nobody sees a stale incident. Responses also carry an ETag and a
short public ``Cache-Control``, so a reverse proxy in front absorbs a spike too. The cache lives in each web
process (no shared store needed: the version in the database keeps them in step).
"""

from __future__ import annotations

import hashlib
import threading
import time

from flask import Response, current_app, request

from .settings import setting
from .status import current_version

_LOCK = threading.Lock()
MAX_ENTRIES = 512
KEY_ARGS = ("range", "page")  # the only query arguments the pages read: others cannot fill the cache


VERSION_TTL = 1.0  # seconds a process trusts the version it read (another process's change shows within this)


def version() -> int:
    """The cache version, read from the database at most once a second per process (a change made in this
    process clears the memo at once, see ``status.bump``)."""
    memo = current_app.extensions.get("hostbay.status.version")
    now = time.monotonic()
    if memo is None or memo[1] < now:
        memo = (current_version(), now + VERSION_TTL)
        current_app.extensions["hostbay.status.version"] = memo
    return memo[0]


def _store() -> dict:
    return current_app.extensions.setdefault("hostbay.status.cache", {})


def cached(builder, mimetype: str = "text/html; charset=utf-8") -> Response:
    """Return the cached response for this request's path (and ``KEY_ARGS``), or build it (``builder()`` returns the body)."""
    ttl = float(setting("HOSTBAY_STATUS_CACHE_SECONDS"))
    ver = version()
    key = request.path + "?" + "&".join(f"{k}={request.args[k]}" for k in KEY_ARGS if k in request.args)
    store = _store()
    hit = store.get(key)
    now = time.monotonic()
    if ttl <= 0 or hit is None or hit[0] != ver or hit[1] < now:
        body = builder()
        if isinstance(body, str):
            body = body.encode()
        etag = hashlib.sha1(body).hexdigest()[:20]
        hit = (ver, now + ttl, body, etag)
        with _LOCK:
            if len(store) >= MAX_ENTRIES:
                store.clear()
            store[key] = hit
        state = "miss"
    else:
        state = "hit"
    _, _, body, etag = hit
    max_age = int(setting("HOSTBAY_STATUS_MAX_AGE"))
    if request.if_none_match and etag in request.if_none_match:
        resp = Response(status=304)
    else:
        resp = Response(body, mimetype=mimetype)
    resp.set_etag(etag)
    resp.headers["Cache-Control"] = f"public, max-age={max_age}"
    resp.headers["X-Status-Cache"] = state
    return resp
