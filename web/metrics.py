"""``/metrics`` for Prometheus, and the HTTP request counters and latency histograms behind it.

Who may scrape: clients on loopback by default; ``HOSTBAY_METRICS_ALLOW`` adds networks (CIDRs, comma-separated),
``HOSTBAY_METRICS_TOKEN`` lets any client in with ``Authorization: Bearer <token>``. Everyone else gets a 404, as
for any page that is not theirs.
"""

from __future__ import annotations

import hmac
import ipaddress
import time

from flask import Blueprint, Response, abort, current_app, g, request

from hostbay.core import metrics

bp = Blueprint("metrics", __name__)


def _allowed() -> bool:
    token = current_app.config.get("HOSTBAY_METRICS_TOKEN")
    auth = request.headers.get("Authorization", "")
    if token and auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].encode(), token.encode()):
        return True
    try:
        addr = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if addr.is_loopback:
        return True
    for net in (current_app.config.get("HOSTBAY_METRICS_ALLOW") or "").split(","):
        if net.strip():
            try:
                if addr in ipaddress.ip_network(net.strip(), strict=False):
                    return True
            except ValueError:
                current_app.logger.warning("HOSTBAY_METRICS_ALLOW has an entry that is not a network: %r", net)
    return False


@bp.get("/metrics")
def scrape():
    if not _allowed():
        abort(404)
    body, content_type = metrics.render(current_app._get_current_object())
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


@bp.before_app_request
def _start_timer():
    g.hostbay_request_started = time.perf_counter()


@bp.after_app_request
def _count(resp):
    started = g.pop("hostbay_request_started", None)
    if started is not None:
        endpoint = request.endpoint or "unmatched"  # endpoint names, not paths: bounded label values
        metrics.HTTP_REQUESTS.labels(endpoint, request.method, str(resp.status_code)).inc()
        metrics.HTTP_LATENCY.labels(endpoint).observe(time.perf_counter() - started)
    return resp
