"""Customer side of IPAM: the addresses partial on the service page and reverse-DNS changes.

Customers only ever reach their own services (``get_customer_service``) and, through them, only the addresses
attached to those services: any other address answers 404, exactly like an unknown one.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request
from flask_login import current_user, login_required
from sqlalchemy import select

from hostbay.core import rdns
from hostbay.core.db import db
from hostbay.core.errors import HostbayError, NotFound
from hostbay.core.ipam import ASSIGNED, RDNS_POLICY_LABELS, IpAddress
from hostbay.web.common import own_service_or_404

bp = Blueprint("network", __name__, url_prefix="/panel")


def service_addresses(service) -> list[dict]:
    """What the customer sees per address: address/prefix, gateway, PTR, the latest request and the policy."""
    rows = db.session.scalars(select(IpAddress).where(IpAddress.service_id == service.id,
                                                      IpAddress.state == ASSIGNED)
                              .order_by(IpAddress.pool_id, IpAddress.ordinal)).all()
    out = []
    for row in rows:
        latest = rdns.open_request_for(row.id)
        out.append({
            "address": row.address, "prefix": row.prefix, "gateway": row.pool.gateway, "version": row.version,
            "ptr": row.ptr, "policy": row.pool.rdns_policy, "policy_label": RDNS_POLICY_LABELS[row.pool.rdns_policy],
            "request": None if latest is None or latest.state == rdns.APPLIED else {
                "hostname": latest.hostname, "state": latest.state, "label": latest.label,
                "note": latest.staff_note, "open": latest.state in rdns.OPEN},
        })
    return out


@bp.app_context_processor
def _partial_data():
    return {"service_addresses": service_addresses}


_owned_service = own_service_or_404


@bp.get("/services/<uuid>/addresses")
@login_required
def addresses(uuid: str):
    service = _owned_service(uuid)
    if request.accept_mimetypes.best == "application/json":
        return jsonify(addresses=service_addresses(service))
    return render_template("services/addresses.html", service=service)


@bp.post("/services/<uuid>/rdns")
@login_required
def set_rdns(uuid: str):
    service = _owned_service(uuid)
    data = request.get_json(silent=True) if request.is_json else request.form
    address, hostname = (data or {}).get("address", ""), (data or {}).get("hostname", "")
    try:
        req = rdns.request_ptr(service, address, hostname, current_user)
        db.session.commit()  # the apply job is dispatched after this commit
    except NotFound:
        db.session.rollback()
        abort(404)
    except HostbayError as exc:
        db.session.rollback()
        if request.is_json:
            return jsonify(error=exc.customer_message), 400
        flash(exc.customer_message, "error")
        return redirect(_back(service))
    db.session.refresh(req)  # the apply job may have run already (in-process jobs): say what actually happened
    if request.is_json:
        return jsonify(address=req.address.address, hostname=req.hostname, state=req.state, status=req.label)
    flash(rdns.OUTCOME_MESSAGES.get(req.state, req.label), "error" if req.state == rdns.FAILED else "info")
    return redirect(_back(service))


def _back(service) -> str:
    return f"/panel/services/{service.uuid}#addresses"
