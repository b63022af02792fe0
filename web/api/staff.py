"""Staff endpoints of /api/v1/staff: a staff member's token, with that member's role permissions
(``accounts.NAMED_PERMISSIONS``; ``staff_required`` refuses the others with 403 ``permission-denied``). Staff actions on
services go through the same ``actions.request_action`` as the staff pages."""

from __future__ import annotations

from flask import g
from flask_smorest import Blueprint
from marshmallow import fields as f
from marshmallow import validate as v
from sqlalchemy import or_, select

from hostbay.core import billing, dctasks, iso, jobs, rdns, webhooks
from hostbay.core.accounts import User
from hostbay.core.actions import STAFF_ACTIONS, request_action, staff_permission
from hostbay.core.activity import AuditEntry
from hostbay.core.catalog import Node, Package
from hostbay.core.db import db
from hostbay.core.errors import HostbayError
from hostbay.core.inventory import HardwareServer
from hostbay.core.ipam import IpAddress, IpPool, pool_usage
from hostbay.core.services import Service

from . import schemas as cs
from .auth import staff_required
from .common import ACTION_IDEMPOTENCY_PARAM, ApiProblem, PageArgs, UtcDateTime, action_moves_money, idempotent, \
    page_schema, paginate, paginate_list, problem_for_domain_error
from .schemas import Strict

blp = Blueprint("api_staff", __name__, url_prefix="/api/v1/staff", description="Staff endpoints")

STAFF_API_ACTIONS = [a for a, _ in STAFF_ACTIONS] + ["retry"]


@blp.errorhandler(HostbayError)
def _domain_error(exc):
    db.session.rollback()
    return problem_for_domain_error(exc)


class CustomerSchema(Strict):
    uuid = f.String(required=True)
    email = f.String(required=True)
    name = f.String(required=True)
    role = f.String(required=True)
    active = f.Boolean(required=True)
    created_at = UtcDateTime(required=True)


class CustomerArgs(PageArgs):
    q = f.String(validate=v.Length(max=254), metadata={"description": "part of the e-mail address or name, a service UUID or an IP address"})


class StaffServiceSchema(cs.ServiceSchema):
    customer = f.Function(lambda s: s.user.uuid, required=True, metadata={"type": "string"})
    node = f.Function(lambda s: s.node.name if s.node else None, allow_none=True, required=True,
                      metadata={"type": "string"})
    actions = f.Function(lambda s: sorted(s.actions_for(staff=True)), required=True,
                         metadata={"type": "array", "items": {"type": "string"}})


class StaffServiceArgs(PageArgs):
    state = f.String(validate=v.Length(max=20))


class StaffActionArgs(Strict):
    reason = f.String(validate=v.Length(max=200))
    when = f.String(validate=v.OneOf(["end", "now"]))
    confirm_hostname = f.String(validate=v.Length(max=253), metadata={
        "description": "terminate and cancel (now) remove the server: the service's hostname, typed as "
                       "confirmation"})


class StaffActionResult(Strict):
    service = f.Nested(StaffServiceSchema, required=True)
    operation = f.Nested(cs.OperationSchema, allow_none=True, required=True)


class NodeSchema(Strict):
    name = f.String(required=True)
    driver = f.String(required=True)
    location = f.String(required=True)
    enabled = f.Boolean(required=True)
    vcpus = f.Integer(required=True)
    memory_mib = f.Integer(required=True)
    disk_gib = f.Integer(required=True)
    used_vcpus = f.Integer(required=True)
    used_memory_mib = f.Integer(required=True)
    used_disk_gib = f.Integer(required=True)


class StaffPackageSchema(cs.PackageSchema):
    driver = f.String(required=True)
    visible = f.Boolean(required=True)
    retired = f.Boolean(required=True)
    pool_addresses = f.Method("_pool_addresses", required=True,
                              metadata={"type": "object", "additionalProperties": {"type": "integer"},
                                        "description": "Included addresses per named pool, by pool UUID (see "
                                                       "/pools); empty: ipv4_count and ipv6 from any pool serving "
                                                       "the node"})

    def _pool_addresses(self, obj):
        counts = obj.pool_counts()
        if not counts:
            return {}
        uuids = dict(db.session.execute(select(IpPool.id, IpPool.uuid).where(IpPool.id.in_(counts))).all())
        return {uuids[pid]: n for pid, n in counts.items() if pid in uuids}


class PoolSchema(Strict):
    uuid = f.String(required=True)
    name = f.String(required=True)
    version = f.Integer(required=True)
    cidr = f.String(required=True)
    gateway = f.String(allow_none=True, required=True)
    location = f.String(allow_none=True, required=True)
    rdns_policy = f.String(required=True)
    enabled = f.Boolean(required=True)
    usage = f.Function(lambda p: pool_usage(p), required=True,
                       metadata={"type": "object", "additionalProperties": {"type": "integer"}})


class PoolAddressSchema(Strict):
    address = f.String(required=True)
    state = f.String(required=True)
    ptr = f.String(allow_none=True, required=True)
    service = f.Function(lambda a: a.service_uuid, allow_none=True, required=True,
                         metadata={"type": "string"})


class ApprovalSchema(Strict):
    type = f.String(required=True, metadata={"description": "iso or rdns"})
    uuid = f.String(required=True)
    customer = f.String(required=True)
    summary = f.String(required=True)
    created_at = UtcDateTime(required=True)


class RefundSchema(Strict):
    uuid = f.String(required=True)
    customer = f.Function(lambda r: db.session.get(User, r.user_id).uuid, required=True, metadata={"type": "string"})
    amount_cents = f.Integer(required=True)
    reason = f.String(required=True)
    state = f.String(required=True)
    created_at = UtcDateTime(required=True)


class StaffOperationSchema(cs.OperationSchema):
    kind = f.String(required=True)
    attempts = f.Integer(required=True)
    admin_error = f.String(attribute="error", allow_none=True, required=True)
    service = f.Function(lambda o: o.service_uuid, allow_none=True, required=True,
                         metadata={"type": "string"})


class AuditSchema(Strict):
    action = f.String(required=True)
    actor_type = f.String(required=True)
    actor = f.Function(lambda a: a.actor_uuid, allow_none=True, required=True, metadata={"type": "string"})
    target_type = f.String(required=True)
    target_id = f.String(allow_none=True, required=True)
    detail = f.String(required=True)
    created_at = UtcDateTime(required=True)


class AuditArgs(PageArgs):
    target_id = f.String(validate=v.Length(max=64))


class WebhookArgs(Strict):
    url = f.String(required=True, validate=v.Length(min=1, max=500))
    events = f.List(f.String(validate=v.OneOf(webhooks.EVENTS)), required=True, validate=v.Length(min=1, max=10))
    description = f.String(validate=v.Length(max=200))


class WebhookSchema(Strict):
    uuid = f.String(required=True)
    url = f.String(required=True)
    description = f.String(required=True)
    events = f.List(f.String(), required=True)
    active = f.Boolean(required=True)
    created_at = UtcDateTime(required=True)


class WebhookCreatedSchema(WebhookSchema):
    secret = f.String(required=True, metadata={"description": "HMAC-SHA256 key of the signatures; shown once"})


class DeliverySchema(Strict):
    uuid = f.String(required=True)
    event = f.String(required=True)
    state = f.String(required=True)
    attempts = f.Integer(required=True)
    redeliveries = f.Integer(required=True)
    last_status = f.Integer(allow_none=True, required=True)
    last_error = f.String(allow_none=True, required=True)
    attempt_log = f.List(f.Dict(), required=True)
    body = f.String(required=True)
    created_at = UtcDateTime(required=True)
    delivered_at = UtcDateTime(allow_none=True, required=True)


class HardwareServerSchema(Strict):
    uuid = f.String(required=True)
    name = f.String(required=True)
    state = f.String(required=True)
    state_label = f.String(attribute="label", required=True)
    location = f.String(required=True)
    rack = f.String(required=True)
    rack_position = f.String(required=True)
    cpu_model = f.String(required=True)
    cpu_cores = f.Integer(required=True)
    ram_gib = f.Integer(required=True)
    disk_count = f.Integer(required=True)
    disk_size_gib = f.Integer(required=True)
    disk_type = f.String(required=True)
    nic_speed_mbit = f.Integer(required=True)
    power_driver = f.String(required=True)
    has_bmc = f.Boolean(required=True, metadata={"description": "BMC address and user set (the password is never "
                                                               "returned)"})
    bmc_host = f.String(allow_none=True, required=True)
    bmc_username = f.String(allow_none=True, required=True)
    auto_install = f.Boolean(required=True)
    service = f.Function(lambda h: _service_uuid(h.service_id), allow_none=True, required=True,
                         metadata={"type": "string"})
    notes = f.String(required=True)
    created_at = UtcDateTime(required=True)


class InventoryArgs(PageArgs):
    state = f.String(validate=v.Length(max=16))
    location = f.String(validate=v.Length(max=64))


class DatacenterArgs(PageArgs):
    location = f.String(validate=v.Length(max=64))


class DatacenterTaskSchema(Strict):
    uuid = f.String(required=True)
    kind = f.String(required=True)
    label = f.String(required=True)
    description = f.Function(lambda t: t.describe(), required=True, metadata={"type": "string"})
    state = f.String(required=True)
    server = f.Function(lambda t: t.server.uuid, required=True, metadata={"type": "string"})
    server_name = f.Function(lambda t: t.server.name, required=True, metadata={"type": "string"})
    location = f.Function(lambda t: t.server.location, required=True, metadata={"type": "string"})
    rack = f.Function(lambda t: t.server.rack, required=True, metadata={"type": "string"})
    rack_position = f.Function(lambda t: t.server.rack_position, required=True, metadata={"type": "string"})
    service = f.Function(lambda t: _service_uuid(t.service_id), allow_none=True, required=True,
                         metadata={"type": "string"})
    params = f.Dict(required=True)
    requested_by_type = f.String(required=True)
    requested_by = f.Function(lambda t: t.requested_by.email if t.requested_by is not None else None,
                              allow_none=True, required=True, metadata={"type": "string"})
    notes = f.String(required=True)
    created_at = UtcDateTime(required=True)
    started_at = UtcDateTime(allow_none=True, required=True)
    finished_at = UtcDateTime(allow_none=True, required=True)


class TaskNoteArgs(Strict):
    notes = f.String(validate=v.Length(max=2000))


class TaskNoteRequiredArgs(Strict):
    notes = f.String(required=True, validate=v.Length(min=1, max=2000))


class TaskFinishArgs(TaskNoteArgs):
    outcome = f.String(required=True, validate=v.OneOf(["done", "failed"]))


def _service_uuid(service_id):
    return db.session.scalar(select(Service.uuid).where(Service.id == service_id)) if service_id else None


CustomerPage = page_schema(CustomerSchema, "StaffCustomerPage")
StaffServicePage = page_schema(StaffServiceSchema, "StaffServicePage")
PoolAddressPage = page_schema(PoolAddressSchema, "StaffPoolAddressPage")
StaffOperationPage = page_schema(StaffOperationSchema, "StaffOperationPage")
AuditPage = page_schema(AuditSchema, "StaffAuditPage")
DeliveryPage = page_schema(DeliverySchema, "StaffDeliveryPage")
RefundPage = page_schema(RefundSchema, "StaffRefundPage")
DatacenterTaskPage = page_schema(DatacenterTaskSchema, "StaffDatacenterTaskPage")
HardwareServerPage = page_schema(HardwareServerSchema, "StaffHardwareServerPage")


def _customer(uuid):
    user = db.session.scalar(select(User).filter_by(uuid=uuid))
    if user is None:
        raise ApiProblem(404, "not-found", "No such customer.")
    return user


def _service(uuid):
    svc = db.session.scalar(select(Service).filter_by(uuid=uuid))
    if svc is None:
        raise ApiProblem(404, "not-found", "No such service.")
    return svc


# --- customers ---------------------------------------------------------------------------------------------------

@blp.route("/customers")
@staff_required("customers.view")
@blp.arguments(CustomerArgs, location="query")
@blp.response(200, CustomerPage)
def customers(args):
    from hostbay.core import admin

    # the panel's customer search (e-mail, name, service UUID, address)
    return paginate(admin.customer_query(args.get("q")).order_by(User.created_at, User.id), args)


@blp.route("/customers/<customer_uuid>")
@staff_required("customers.view")
@blp.response(200, CustomerSchema)
def customer(customer_uuid):
    return _customer(customer_uuid)


# --- services ----------------------------------------------------------------------------------------------------

@blp.route("/services")
@staff_required("services.view")
@blp.arguments(StaffServiceArgs, location="query")
@blp.response(200, StaffServicePage)
def services(args):
    q = select(Service).order_by(Service.created_at, Service.id)
    if args.get("state"):
        q = q.where(Service.state == args["state"])
    return paginate(q, args)


@blp.route("/services/<service_uuid>")
@staff_required("services.view")
@blp.response(200, StaffServiceSchema)
def service(service_uuid):
    return _service(service_uuid)


@blp.route("/services/<service_uuid>/actions/<action>", methods=["POST"])
@staff_required("services.view")
@idempotent(required=action_moves_money)
@blp.arguments(StaffActionArgs)
@blp.response(200, StaffActionResult)
@blp.doc(parameters=[ACTION_IDEMPOTENCY_PARAM])
def service_action(args, service_uuid, action):
    """Staff actions with the staff rules of services.ACTIONS (suspend, unsuspend, terminate, retry, ...); each
    needs its permission (power actions `services.power`, retry `services.operations`, the others
    `services.manage`), and power actions follow the panel's rule (Start only when stopped, Stop and Restart only
    when running). `renew` charges the customer's wallet and requires an Idempotency-Key."""
    svc = _service(service_uuid)
    if action not in STAFF_API_ACTIONS:
        raise ApiProblem(404, "not-found", f"No staff action “{action[:40]}”.")
    perm = "services.operations" if action == "retry" else staff_permission(action)
    if not g.api_user.can(perm):
        raise ApiProblem(403, "permission-denied", f"Your role does not have the permission for this action ({perm}).")
    from .customer import confirm_or_problem, power_rule

    if action in svc.actions_for(staff=True):
        power_rule(svc, action)
        svc = _service(service_uuid)

    typed = args.pop("confirm_hostname", None)
    params = {k: val for k, val in args.items() if val}
    if action == "cancel":
        params.setdefault("when", "now")
    confirm_or_problem(svc, action, typed, params)
    op = request_action(svc, action, g.api_user, **params)
    db.session.commit()
    db.session.refresh(svc)
    return {"service": svc, "operation": op}


# --- catalogue and infrastructure --------------------------------------------------------------------------------

@blp.route("/nodes")
@staff_required("plugins.nodes")
@blp.response(200, NodeSchema(many=True))
def nodes():
    return db.session.scalars(select(Node).order_by(Node.name)).all()


@blp.route("/packages")
@staff_required("services.view")
@blp.response(200, StaffPackageSchema(many=True))
def packages():
    return db.session.scalars(select(Package).order_by(Package.sort, Package.id)).all()


@blp.route("/pools")
@staff_required("network.view")
@blp.response(200, PoolSchema(many=True))
def pools():
    return db.session.scalars(select(IpPool).order_by(IpPool.name)).all()


@blp.route("/pools/<pool_uuid>/addresses")
@staff_required("network.view")
@blp.arguments(PageArgs, location="query")
@blp.response(200, PoolAddressPage)
def pool_addresses(args, pool_uuid):
    pool = db.session.scalar(select(IpPool).filter_by(uuid=pool_uuid))
    if pool is None:
        raise ApiProblem(404, "not-found", "No such pool.")
    page = paginate(select(IpAddress).where(IpAddress.pool_id == pool.id).order_by(IpAddress.ordinal), args)
    ids = {a.service_id for a in page["items"] if a.service_id}
    uuids = dict(db.session.execute(select(Service.id, Service.uuid).where(Service.id.in_(ids))).all()) if ids else {}
    for a in page["items"]:
        a.service_uuid = uuids.get(a.service_id)
    return page


# --- queues ------------------------------------------------------------------------------------------------------

@blp.route("/queues/approvals")
@staff_required(("approvals.iso", "approvals.rdns"))
@blp.response(200, ApprovalSchema(many=True))
def approvals():
    """ISO images and reverse DNS requests waiting for staff review."""
    out = []
    for i in iso.pending_queue():
        out.append({"type": "iso", "uuid": i.uuid, "customer": db.session.get(User, i.user_id).uuid,
                    "summary": f"{i.name} ({i.size_bytes} bytes)", "created_at": i.created_at})
    for r in rdns.pending_queue():
        out.append({"type": "rdns", "uuid": r.uuid, "customer": db.session.get(User, r.user_id).uuid,
                    "summary": f"{r.address.address if r.address else ''} -> {r.hostname or '(none)'}",
                    "created_at": r.created_at})
    return out


class DecisionArgs(Strict):
    decision = f.String(required=True, validate=v.OneOf(["approve", "reject"]))
    note = f.String(validate=v.Length(max=2000), metadata={"description": "Required to reject; the customer reads it"})


class RefundDecisionArgs(DecisionArgs):
    external_reference = f.String(validate=v.Length(max=200),
                                  metadata={"description": "Required to approve: the payout's transaction id"})


class DecisionSchema(Strict):
    type = f.String(required=True)
    uuid = f.String(required=True)
    state = f.String(required=True)


@blp.route("/queues/approvals/<kind>/<item_uuid>", methods=["POST"])
@staff_required(("approvals.iso", "approvals.rdns"))
@blp.arguments(DecisionArgs)
@blp.response(200, DecisionSchema)
def decide_approval(args, kind, item_uuid):
    """Approve or reject an ISO image (`kind` iso) or a reverse DNS request (`kind` rdns), as on the staff pages."""
    approve, note = args["decision"] == "approve", args.get("note", "")
    if kind == "iso":
        item = db.session.scalar(select(iso.IsoImage).filter_by(uuid=item_uuid))
        if item is None:
            raise ApiProblem(404, "not-found", "No such ISO image.")
        iso.decide(item, approve, g.api_user, note)
        db.session.commit()
    elif kind == "rdns":
        item = rdns.approve(item_uuid, g.api_user, note) if approve else rdns.reject(item_uuid, g.api_user, note)
        db.session.commit()  # the apply job (an approval) is dispatched after this commit
    else:
        raise ApiProblem(404, "not-found", "Approvals are of kind iso or rdns.")
    return {"type": kind, "uuid": item.uuid, "state": item.state}


@blp.route("/queues/refunds/<refund_uuid>", methods=["POST"])
@staff_required("money.refunds")
@blp.arguments(RefundDecisionArgs)
@blp.response(200, RefundSchema)
def decide_refund(args, refund_uuid):
    """Approve (after paying out externally, with its reference) or reject a refund request."""
    req = db.session.scalar(select(billing.RefundRequest).filter_by(uuid=refund_uuid))
    if req is None:
        raise ApiProblem(404, "not-found", "No such refund request.")
    if args["decision"] == "approve":
        req = billing.approve_refund(req, g.api_user, args.get("external_reference", ""), args.get("note", ""))
    else:
        req = billing.reject_refund(req, g.api_user, args.get("note", ""))
    db.session.commit()
    return req


@blp.route("/queues/datacenter")
@staff_required("services.datacenter")
@blp.arguments(DatacenterArgs, location="query")
@blp.response(200, DatacenterTaskPage)
def datacenter_tasks(args):
    """Open datacenter tasks (core.dctasks: open or in progress, oldest first), with location, rack, kind,
    requester and notes; `location` filters."""
    return paginate(dctasks.open_tasks(args.get("location") or None), args)


def _task(task_uuid):
    t = db.session.scalar(select(dctasks.DatacenterTask).filter_by(uuid=task_uuid))
    if t is None:
        raise ApiProblem(404, "not-found", "No such datacenter task.")
    return t


@blp.route("/queues/datacenter/<task_uuid>")
@staff_required("services.datacenter")
@blp.response(200, DatacenterTaskSchema)
def datacenter_task(task_uuid):
    return _task(task_uuid)


@blp.route("/queues/datacenter/<task_uuid>/start", methods=["POST"])
@staff_required("services.datacenter")
@blp.arguments(TaskNoteArgs)
@blp.response(200, DatacenterTaskSchema)
def start_task(args, task_uuid):
    """Take an open task (it becomes in progress, assigned to the token's staff member)."""
    t = dctasks.start(_task(task_uuid), g.api_user, args.get("notes", ""))
    db.session.commit()
    return t


@blp.route("/queues/datacenter/<task_uuid>/notes", methods=["POST"])
@staff_required("services.datacenter")
@blp.arguments(TaskNoteRequiredArgs)
@blp.response(200, DatacenterTaskSchema)
def note_task(args, task_uuid):
    t = _task(task_uuid)
    dctasks.add_note(t, g.api_user, args["notes"])
    db.session.commit()
    return t


@blp.route("/queues/datacenter/<task_uuid>/finish", methods=["POST"])
@staff_required("services.datacenter")
@blp.arguments(TaskFinishArgs)
@blp.response(200, DatacenterTaskSchema)
def finish_task(args, task_uuid):
    """Record the outcome (`done` or `failed`); the service and server move on as from the staff pages."""
    t = dctasks.finish(_task(task_uuid), g.api_user, ok=args["outcome"] == "done", notes=args.get("notes", ""))
    db.session.commit()
    return t


# --- dedicated-server inventory ----------------------------------------------------------------------------------

@blp.route("/inventory")
@staff_required("services.inventory")
@blp.arguments(InventoryArgs, location="query")
@blp.response(200, HardwareServerPage)
def inventory_servers(args):
    """Hardware servers with state and specs (`state`, `location` filter). BMC passwords are never returned."""
    q = select(HardwareServer).order_by(HardwareServer.location, HardwareServer.name, HardwareServer.id)
    if args.get("state"):
        q = q.where(HardwareServer.state == args["state"])
    if args.get("location"):
        q = q.where(HardwareServer.location == args["location"])
    return paginate(q, args)


@blp.route("/inventory/<server_uuid>")
@staff_required("services.inventory")
@blp.response(200, HardwareServerSchema)
def inventory_server(server_uuid):
    server = db.session.scalar(select(HardwareServer).filter_by(uuid=server_uuid))
    if server is None:
        raise ApiProblem(404, "not-found", "No such server.")
    return server


@blp.route("/queues/refunds")
@staff_required("money.view")
@blp.arguments(PageArgs, location="query")
@blp.response(200, RefundPage)
def refunds(args):
    return paginate(billing.pending_refunds(), args)


# --- operations and audit ----------------------------------------------------------------------------------------

def _with_service_uuids(ops):
    ids = {o.service_id for o in ops if o.service_id}
    uuids = dict(db.session.execute(select(Service.id, Service.uuid).where(Service.id.in_(ids))).all()) if ids else {}
    for o in ops:
        o.service_uuid = uuids.get(o.service_id)
    return ops


@blp.route("/operations/failed")
@staff_required("services.operations")
@blp.arguments(PageArgs, location="query")
@blp.response(200, StaffOperationPage)
def failed_operations(args):
    from hostbay.core import admin

    page = paginate(admin.failed_operations(include_retrying=False), args)
    _with_service_uuids(page["items"])
    return page


@blp.route("/operations/<operation_id>/retry", methods=["POST"])
@staff_required("services.operations")
@blp.response(202, StaffOperationSchema)
def retry_operation(operation_id):
    op = db.session.get(jobs.Operation, operation_id)
    if op is None:
        raise ApiProblem(404, "not-found", "No such operation.")
    if op.state != jobs.FAILED:
        raise ApiProblem(409, "action-not-allowed", "Only failed operations can be retried.")
    jobs.retry(op, actor=g.api_user)
    db.session.commit()
    db.session.refresh(op)
    return _with_service_uuids([op])[0]


@blp.route("/audit")
@staff_required("audit.view")
@blp.arguments(AuditArgs, location="query")
@blp.response(200, AuditPage)
def audit_trail(args):
    from hostbay.core import admin

    q = admin.audit_query()  # the staff audit page's query
    if args.get("target_id"):
        q = q.where(AuditEntry.target_id == args["target_id"])
    page = paginate(q, args)
    ids = {a.actor_id for a in page["items"] if a.actor_id}
    uuids = dict(db.session.execute(select(User.id, User.uuid).where(User.id.in_(ids))).all()) if ids else {}
    for a in page["items"]:
        a.actor_uuid = uuids.get(a.actor_id)
    return page


# --- outgoing webhooks -------------------------------------------------------------------------------------------

def _endpoint(uuid):
    ep = db.session.scalar(select(webhooks.WebhookEndpoint).filter_by(uuid=uuid, active=True))
    if ep is None:
        raise ApiProblem(404, "not-found", "No such webhook.")
    return ep


@blp.route("/webhooks")
@staff_required("plugins.webhooks")
@blp.response(200, WebhookSchema(many=True))
def list_webhooks():
    return db.session.scalars(select(webhooks.WebhookEndpoint).filter_by(active=True)
                              .order_by(webhooks.WebhookEndpoint.id)).all()


@blp.route("/webhooks", methods=["POST"])
@staff_required("plugins.webhooks")
@blp.arguments(WebhookArgs)
@blp.response(201, WebhookCreatedSchema)
def create_webhook(args):
    """Register a URL for events; the answer carries the signing secret once."""
    ep = webhooks.register_endpoint(args["url"], args["events"], g.api_user, args.get("description", ""))
    db.session.commit()
    return ep


@blp.route("/webhooks/<webhook_uuid>", methods=["DELETE"])
@staff_required("plugins.webhooks")
@blp.response(204)
def delete_webhook(webhook_uuid):
    webhooks.remove_endpoint(_endpoint(webhook_uuid), g.api_user)
    db.session.commit()
    return None


@blp.route("/webhooks/<webhook_uuid>/deliveries")
@staff_required("plugins.webhooks")
@blp.arguments(PageArgs, location="query")
@blp.response(200, DeliveryPage)
def deliveries(args, webhook_uuid):
    ep = _endpoint(webhook_uuid)
    D = webhooks.OutgoingDelivery
    return paginate(select(D).where(D.endpoint_id == ep.id).order_by(D.created_at.desc(), D.id.desc()), args)


@blp.route("/webhooks/<webhook_uuid>/deliveries/<delivery_uuid>/redeliver", methods=["POST"])
@staff_required("plugins.webhooks")
@blp.response(202, DeliverySchema)
def redeliver(webhook_uuid, delivery_uuid):
    ep = _endpoint(webhook_uuid)
    d = db.session.scalar(select(webhooks.OutgoingDelivery).filter_by(uuid=delivery_uuid, endpoint_id=ep.id))
    if d is None:
        raise ApiProblem(404, "not-found", "No such delivery.")
    webhooks.redeliver(d, g.api_user)
    db.session.commit()
    db.session.refresh(d)
    return d


_ = (or_, paginate_list)  # kept for filters that combine states
