"""The URL new servers report to when their first boot is done (cloud-init ``phone_home``; see
core/readiness.py). No login and no CSRF token: the signed, single-use token in the path is the credential.
Every refusal (bad signature, another service's token, expired, already used, unknown service) is the same 404,
so the endpoint tells a prober nothing."""

from __future__ import annotations

from flask import Blueprint

from hostbay.core import readiness
from hostbay.core.db import db

from .extensions import csrf, limiter

bp = Blueprint("guest", __name__, url_prefix="/guest")


@bp.route("/<service_uuid>/ready/<token>", methods=["POST"])
@csrf.exempt
@limiter.limit("30 per minute")
def ready(service_uuid, token):
    from flask import request

    if len(token) > 512 or len(service_uuid) != 36:
        return "not found\n", 404, {"Content-Type": "text/plain"}
    ok = readiness.report(service_uuid, token, request.form.to_dict() if request.form else None)
    db.session.commit()
    if not ok:
        return "not found\n", 404, {"Content-Type": "text/plain"}
    return "ok\n", 200, {"Content-Type": "text/plain"}
