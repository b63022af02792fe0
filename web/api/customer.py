"""Customer endpoints of /api/v1: the token's user is the customer. Every object is found through the customer's
own lookups (``services.get_customer_service``, ``iso.get_own``, ``tickets.get_customer_ticket``,
``payments.payment_for_customer``): another customer's UUID is a 404, the same as one that does not exist."""

from __future__ import annotations

from flask import g, request
from flask.views import MethodView  # noqa: F401
from flask_smorest import Blueprint
from sqlalchemy import func, select

from hostbay.core import billing, iso, jobs, ledger, payments, rdns, tickets
from hostbay.core.accounts import SSHKey, add_ssh_key
from hostbay.core.actions import PANEL_ACTIONS, request_action
from hostbay.core.activity import ActivityEntry, log_activity
from hostbay.core.catalog import Image, Package, images_for, orderable_packages
from hostbay.core.db import db
from hostbay.core.errors import HostbayError, NotFound
from hostbay.core.inventory import OutOfStock
from hostbay.core.services import Service, customer_services, get_customer_service

from . import schemas as s
from .common import ACTION_IDEMPOTENCY_PARAM, IDEMPOTENCY_REQUIRED_PARAM, ApiProblem, PageArgs, action_moves_money, \
    idempotent, paginate, paginate_list, problem_for_domain_error, request_key

blp = Blueprint("api_customer", __name__, url_prefix="/api/v1", description="Customer endpoints")

# Actions of services.ACTIONS that the actions endpoint performs (the others have their own endpoints).
API_ACTIONS = [a for a, _label, _confirm in PANEL_ACTIONS]


@blp.errorhandler(HostbayError)
def _domain_error(exc):
    db.session.rollback()
    return problem_for_domain_error(exc)


def _user():
    return g.api_user


def power_rule(svc: Service, action: str) -> None:
    """The panel's rule for power actions (core.power.refusal: Start only when stopped, Stop and Restart only
    when running); the reading is marked stale so the next read shows the new state. The caller commits."""
    from hostbay.core import power as power_mod

    if action not in power_mod.POWER_ACTIONS:
        return
    why = power_mod.refusal(action, power_mod.power_of(svc))
    if why:
        raise ApiProblem(409, "action-not-allowed", why, title="Action not allowed")
    power_mod.mark_stale(svc)


def confirm_or_problem(svc: Service, action: str, typed: str | None, params: dict) -> None:
    """core.confirm's check of destructive actions: the hostname typed as confirmation, else 400
    ``confirmation-required``."""
    from hostbay.core.confirm import destructive, require_confirmation
    from hostbay.core.errors import UserError

    try:
        require_confirmation(svc, action, typed, params)
    except UserError as exc:
        raise ApiProblem(400, "confirmation-required", exc.customer_message, title="Confirmation required",
                         action=destructive(action, params)) from None


def own_service(uuid: str) -> Service:
    svc = get_customer_service(_user().id, uuid)
    if svc is None:
        raise ApiProblem(404, "not-found", "No such service.")
    return svc


# --- catalogue ---------------------------------------------------------------------------------------------------

@blp.route("/packages")
@blp.arguments(PageArgs, location="query")
@blp.response(200, s.PackagePage)
def list_packages(args):
    """Orderable packages with their prices per cycle."""
    return paginate_list(orderable_packages(), args)


@blp.route("/packages/<package_uuid>/images")
@blp.response(200, s.ImageSchema(many=True))
def package_images(package_uuid):
    """The operating system images a package can be ordered with."""
    pkg = db.session.scalar(select(Package).filter_by(uuid=package_uuid))
    if pkg is None or not pkg.orderable:
        raise ApiProblem(404, "not-found", "No such package.")
    return images_for(pkg)


# --- services ----------------------------------------------------------------------------------------------------

@blp.route("/services")
@blp.arguments(PageArgs, location="query")
@blp.response(200, s.ServicePage)
def list_services(args):
    """The customer's services (terminated, cancelled and removal-queued ones are not listed)."""
    return paginate(customer_services(_user().id).order_by(Service.created_at, Service.id), args)


@blp.route("/services/<service_uuid>")
@blp.response(200, s.ServiceSchema)
def get_service(service_uuid):
    """One service; `actions` lists what can be done in its current state."""
    return own_service(service_uuid)


@blp.route("/services/<service_uuid>/power")
@blp.response(200, s.PowerSchema)
def get_power(service_uuid):
    """The power state as the panel shows it (core.power): a reading at most 30 s old with its age, from the
    hypervisor for a VPS and from the server's BMC for a dedicated server (`manual`: switched by the datacenter
    team); `actions` are the power actions that make sense in that state."""
    from hostbay.core import inventory
    from hostbay.core import power as power_mod

    svc = own_service(service_uuid)
    has_server = inventory.server_of(svc) is not None if svc.kind == "dedicated" else bool(svc.infra_ref)
    if not has_server:
        raise ApiProblem(409, "action-not-allowed", "This service has no server yet.")
    reading = power_mod.power_of(svc)
    return {"service": svc.uuid, "power": reading.state, "label": reading.label, "checked_at": reading.checked_at,
            "age_seconds": reading.age_seconds,
            "actions": sorted(power_mod.power_actions(reading) & svc.actions_for(staff=False))}


@blp.route("/services/<service_uuid>/actions/<action>", methods=["POST"])
@idempotent(required=action_moves_money)
@blp.arguments(s.ActionArgs)
@blp.response(200, s.ActionResultSchema)
@blp.doc(parameters=[ACTION_IDEMPOTENCY_PARAM])
def service_action(args, service_uuid, action):
    """Start, stop, restart, reinstall, renew or cancel, with the panel's state rules (services.ACTIONS).
    `renew` charges the wallet and requires an Idempotency-Key (else 400 `idempotency-key-required`)."""
    svc = own_service(service_uuid)
    if action not in API_ACTIONS:
        raise ApiProblem(404, "not-found", f"No action “{action[:40]}” here; actions: {', '.join(API_ACTIONS)}.")
    import hashlib

    key = getattr(g, "idempotency_key", None)
    params = {"request_id": hashlib.sha256(f"{_user().uuid}:{key}".encode()).hexdigest()[:36] if key else None}
    if action == "reinstall" and args.get("image"):
        image = db.session.scalar(select(Image).filter_by(uuid=args["image"]))
        if image is None:
            raise NotFound("No such image.")
        params["image_id"] = image.id
    if action == "cancel":
        params["when"] = args.get("when", "end")
    from hostbay.core.services import require_action

    require_action(svc, action, staff=False)  # the state rule first, then the power state's
    power_rule(svc, action)
    confirm_or_problem(svc, action, args.get("confirm_hostname"), params)
    op = request_action(svc, action, _user(), **params)
    db.session.commit()
    db.session.refresh(svc)
    return {"service": svc, "operation": op}


@blp.route("/services/<service_uuid>/operations")
@blp.arguments(PageArgs, location="query")
@blp.response(200, s.OperationPage)
def list_operations(args, service_uuid):
    """The service's operations and their progress, newest first."""
    svc = own_service(service_uuid)
    q = select(jobs.Operation).where(jobs.Operation.service_id == svc.id) \
        .order_by(jobs.Operation.created_at.desc(), jobs.Operation.id)
    return paginate(q, args)


@blp.route("/services/<service_uuid>/operations/<operation_id>")
@blp.response(200, s.OperationSchema)
def get_operation(service_uuid, operation_id):
    svc = own_service(service_uuid)
    op = db.session.scalar(select(jobs.Operation).where(jobs.Operation.id == operation_id,
                                                        jobs.Operation.service_id == svc.id))
    if op is None:
        raise ApiProblem(404, "not-found", "No such operation.")
    return op


# --- package change ----------------------------------------------------------------------------------------------

def quote_package_change(service, package):
    """The signed quote for a package change, as the panel's review page makes it (core.quotes)."""
    from hostbay.core.quotes import create_quote

    return create_quote(service, package)


def apply_package_change(service, package, actor, confirm, key, quote_token):
    """Apply a package change for exactly the amount its signed quote carries, with the panel's rules (state,
    quote age and inputs, confirmation for a smaller disk)."""
    from hostbay.core.quotes import QuoteExpired, apply_quote, read_quote

    quoted_package, _amount = read_quote(quote_token, service)
    if quoted_package.id != package.id:
        raise QuoteExpired("This quote is for another package. Here is the current price.")
    return apply_quote(quote_token, service, actor, key=key, confirm=confirm)


def _change_target(svc, package_uuid):
    pkg = db.session.scalar(select(Package).filter_by(uuid=package_uuid))
    if pkg is None or pkg not in billing.change_candidates(svc):
        raise ApiProblem(404, "not-found", "This service cannot move to that package.")
    return pkg


@blp.route("/services/<service_uuid>/package-changes")
@blp.response(200, s.QuoteSchema(many=True))
def list_changes(service_uuid):
    """Packages the service can move to, each with the exact amount charged or credited now."""
    svc = own_service(service_uuid)
    if "change_package" not in svc.actions_for():
        return []
    return [quote_package_change(svc, p) for p in billing.change_candidates(svc)]


@blp.route("/services/<service_uuid>/package-changes/quote", methods=["POST"])
@blp.arguments(s.ChangeArgs)
@blp.response(200, s.QuoteSchema)
def quote_change(args, service_uuid):
    """The quote for one target package (nothing is written)."""
    from hostbay.core.services import require_action

    svc = own_service(service_uuid)
    require_action(svc, "change_package")
    return quote_package_change(svc, _change_target(svc, args["package"]))


@blp.route("/services/<service_uuid>/package-changes", methods=["POST"])
@idempotent()
@blp.arguments(s.ApplyChangeArgs)
@blp.response(200, s.OperationSchema)
@blp.doc(parameters=[IDEMPOTENCY_REQUIRED_PARAM])
def apply_change(args, service_uuid):
    """Change the package for exactly the amount of its quote (`quote` from `.../package-changes/quote`, valid
    5 minutes; an expired or outdated quote is a 409 `quote-expired`: quote again). Upgrades are charged,
    downgrades credited; a smaller disk rebuilds the server and needs `confirm_hostname`."""
    svc = own_service(service_uuid)
    pkg = _change_target(svc, args["package"])
    op = apply_package_change(svc, pkg, _user(), args.get("confirm_hostname"), request_key(), args["quote"])
    db.session.commit()  # the money, the state and the job together; the job is dispatched after it
    return op


# --- wallet, top-ups, orders -------------------------------------------------------------------------------------

@blp.route("/wallet")
@blp.response(200, s.WalletSchema)
def wallet():
    from hostbay.core.refunds import refundable_cents

    return {"balance_cents": ledger.balance_cents(_user().id), "refundable_cents": refundable_cents(_user().id),
            "currency": "USD"}


@blp.route("/wallet/ledger")
@blp.arguments(PageArgs, location="query")
@blp.response(200, s.LedgerPage)
def wallet_ledger(args):
    """Wallet movements, newest first."""
    return paginate(ledger.entries_for(_user().id), args)


@blp.route("/refunds")
@blp.response(200, s.RefundRequestSchema(many=True))
def list_refunds():
    """The customer's refund requests, newest first."""
    return db.session.scalars(select(billing.RefundRequest).filter_by(user_id=_user().id)
                              .order_by(billing.RefundRequest.created_at.desc(), billing.RefundRequest.id.desc())
                              .limit(100)).all()


@blp.route("/refunds", methods=["POST"])
@idempotent()
@blp.arguments(s.RefundArgs)
@blp.response(201, s.RefundRequestSchema)
@blp.doc(parameters=[IDEMPOTENCY_REQUIRED_PARAM])
def request_refund(args):
    """Ask for money to be paid back: at most `refundable_cents` of `GET /wallet` (top-ups not spent yet;
    bonuses and credits stay in the wallet), one pending request at a time. Staff review it. Requires an
    Idempotency-Key."""
    req = billing.request_refund(_user(), args["amount_cents"], args["reason"], args.get("payout_details", ""))
    db.session.commit()
    return req


@blp.route("/topups", methods=["POST"])
@idempotent()
@blp.arguments(s.TopupArgs)
@blp.response(201, s.TopupSchema)
@blp.doc(parameters=[IDEMPOTENCY_REQUIRED_PARAM])
def create_topup(args):
    """Start a top-up with a payment gateway; pay at `checkout_url`. The wallet is credited when the gateway
    confirms the payment."""
    payment = payments.start_topup(_user(), args["gateway"], args["amount_cents"])
    db.session.commit()  # the pending row exists before the provider is asked
    try:
        payments.open_checkout(payment)
    finally:
        db.session.commit()  # the invoice, or the payment marked invalid when the provider failed
    return payment


@blp.route("/topups/<payment_uuid>")
@blp.response(200, s.TopupSchema)
def get_topup(payment_uuid):
    return payments.payment_for_customer(_user(), payment_uuid)


@blp.route("/orders", methods=["POST"])
@idempotent()
@blp.arguments(s.OrderArgs)
@blp.response(201, s.ServiceSchema)
@blp.doc(parameters=[IDEMPOTENCY_REQUIRED_PARAM])
def create_order(args):
    """Order a package: the price is debited from the wallet and the server is set up. Requires an
    Idempotency-Key; replays return the first order's service."""
    pkg = db.session.scalar(select(Package).filter_by(uuid=args["package"]))
    if pkg is None or not pkg.orderable:
        raise ApiProblem(404, "not-found", "No such package.")
    keys = list(dict.fromkeys(args.get("ssh_keys") or []))
    if keys and db.session.scalar(select(func.count()).select_from(SSHKey).where(
            SSHKey.user_id == _user().id, SSHKey.uuid.in_(keys))) != len(keys):
        raise ApiProblem(404, "not-found", "No such SSH key.")  # another customer's key is no key at all
    try:
        svc = billing.place_order(_user(), pkg, args["cycle"], args["hostname"], args.get("image") or None,
                                  args.get("ssh_keys") or [], key=request_key())
    except OutOfStock:
        db.session.commit()  # nothing was charged; the refused order is kept for staff (the demand list)
        raise
    db.session.commit()  # the provisioning job is dispatched after this commit
    return svc


# --- SSH keys ----------------------------------------------------------------------------------------------------

@blp.route("/ssh-keys")
@blp.response(200, s.SshKeySchema(many=True))
def list_keys():
    return db.session.scalars(select(SSHKey).filter_by(user_id=_user().id).order_by(SSHKey.name, SSHKey.id)).all()


@blp.route("/ssh-keys", methods=["POST"])
@blp.arguments(s.SshKeyArgs)
@blp.response(201, s.SshKeySchema)
def add_key(args):
    key = add_ssh_key(_user(), args["name"], args["public_key"])
    log_activity(_user().id, "ssh_key", f"SSH key “{key.name}” added.")
    db.session.commit()
    return key


@blp.route("/ssh-keys/<key_uuid>", methods=["DELETE"])
@blp.response(204)
def delete_key(key_uuid):
    key = db.session.scalar(select(SSHKey).filter_by(uuid=key_uuid, user_id=_user().id))
    if key is None:
        raise ApiProblem(404, "not-found", "No such SSH key.")
    name = key.name
    db.session.delete(key)
    log_activity(_user().id, "ssh_key", f"SSH key “{name}” deleted.")
    db.session.commit()
    return None


# --- ISOs --------------------------------------------------------------------------------------------------------

@blp.route("/isos")
@blp.response(200, s.IsoSchema(many=True))
def list_isos():
    return iso.list_for(_user().id)


@blp.route("/isos", methods=["POST"])
@blp.arguments(s.IsoUploadArgs, location="query")
@blp.response(201, s.IsoSchema)
@blp.doc(requestBody={"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}})
def upload_iso(args):
    """Upload an ISO image as the raw request body; it counts toward the quota and waits for staff approval."""
    data = request.get_data(cache=False)
    out = iso.upload_bytes(_user(), data, args["filename"])
    db.session.commit()
    return out


@blp.route("/services/<service_uuid>/iso", methods=["PUT"])
@blp.arguments(s.MountArgs)
@blp.response(202, s.OperationSchema)
def mount_iso(args, service_uuid):
    """Mount an approved ISO image on the server."""
    svc = own_service(service_uuid)
    iso.get_own(_user().id, args["iso"])
    op = iso.request_mount(svc, args["iso"], actor=_user())
    db.session.commit()
    return op


@blp.route("/services/<service_uuid>/iso", methods=["DELETE"])
@blp.response(202, s.OperationSchema)
def eject_iso(service_uuid):
    svc = own_service(service_uuid)
    op = iso.request_eject(svc, actor=_user())
    db.session.commit()
    return op


# --- addresses and reverse DNS -----------------------------------------------------------------------------------

@blp.route("/services/<service_uuid>/addresses")
@blp.response(200, s.AddressSchema(many=True))
def list_addresses(service_uuid):
    from hostbay.core.ipam import ASSIGNED, IpAddress

    svc = own_service(service_uuid)
    rows = db.session.scalars(select(IpAddress).where(IpAddress.service_id == svc.id, IpAddress.state == ASSIGNED)
                              .order_by(IpAddress.pool_id, IpAddress.ordinal)).all()
    return [{"address": r.address, "prefix": r.prefix, "version": r.version, "ptr": r.ptr} for r in rows]


@blp.route("/services/<service_uuid>/addresses/<address>/rdns", methods=["PUT"])
@blp.arguments(s.RdnsArgs)
@blp.response(202, s.RdnsSchema)
def set_rdns(args, service_uuid, address):
    """Request a PTR record; depending on the pool's policy it is applied at once, after staff review, or once
    the name resolves to the address."""
    svc = own_service(service_uuid)
    req = rdns.request_ptr(svc, address, args.get("hostname") or None, _user())
    db.session.commit()  # the apply job is dispatched after this commit
    return req


# --- tickets -----------------------------------------------------------------------------------------------------

def _own_ticket(uuid):
    t = tickets.get_customer_ticket(_user().id, uuid)
    if t is None:
        raise ApiProblem(404, "not-found", "No such ticket.")
    return t


@blp.route("/tickets")
@blp.arguments(PageArgs, location="query")
@blp.response(200, s.TicketPage)
def list_tickets(args):
    return paginate(tickets.customer_tickets(_user().id), args)


@blp.route("/tickets", methods=["POST"])
@blp.arguments(s.TicketArgs)
@blp.response(201, s.TicketDetailSchema)
def open_ticket(args):
    if args.get("service") and get_customer_service(_user().id, args["service"]) is None:
        raise ApiProblem(404, "not-found", "No such service.")
    t = tickets.open_ticket(_user(), args["subject"], args["body"], args.get("service") or None)
    db.session.commit()
    return t


@blp.route("/tickets/<ticket_uuid>")
@blp.response(200, s.TicketDetailSchema)
def get_ticket(ticket_uuid):
    return _own_ticket(ticket_uuid)


@blp.route("/tickets/<ticket_uuid>/replies", methods=["POST"])
@blp.arguments(s.ReplyArgs)
@blp.response(201, s.TicketDetailSchema)
def reply_ticket(args, ticket_uuid):
    t = _own_ticket(ticket_uuid)
    tickets.reply(t, _user(), args["body"], staff=False)
    db.session.commit()
    return t


# --- activity ----------------------------------------------------------------------------------------------------

@blp.route("/activity")
@blp.arguments(PageArgs, location="query")
@blp.response(200, s.ActivityPage)
def activity(args):
    """The customer's activity log, newest first (customer-safe words)."""
    q = select(ActivityEntry).where(ActivityEntry.user_id == _user().id) \
        .order_by(ActivityEntry.created_at.desc(), ActivityEntry.id.desc())
    page = paginate(q, args)
    ids = {a.service_id for a in page["items"] if a.service_id}
    uuids = dict(db.session.execute(select(Service.id, Service.uuid).where(Service.id.in_(ids))).all()) if ids else {}
    page["items"] = [{"event": a.event, "message": a.message, "service": uuids.get(a.service_id),
                      "created_at": a.created_at} for a in page["items"]]
    return page
