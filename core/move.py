"""Moving a service to another node of the same driver (staff "Move", capability ``move``).

The design, chosen once:
- **Which nodes.** The target runs the service's driver, is another node, is enabled and not draining, has room
  for the service's reservation, and is served by every IP pool the service's addresses come from. The service
  keeps its addresses (no re-addressing, so the customer's DNS and firewall rules stay right); a node that no pool
  of those addresses serves is not offered.
- **Capacity.** The target's room is reserved when staff confirm (a conditional UPDATE, like placement), so no
  order takes it during the copy; when the driver reports the move done, the service's reservation row moves to
  the target and the source's counters go down, in one transaction with the new node and reference.
- **State.** active → ``moving`` (busy: the customer sees "Moving to another host" and the operation's progress,
  every action waits) → active. A failed move stays ``moving`` and is retried from the staff page; the driver's
  ``move`` is idempotent.
- **Trail.** An audit entry with the node before and after; the customer's activity says the server was moved,
  never naming a node.
"""

from __future__ import annotations

from sqlalchemy import func, select, update

from . import jobs, network
from .activity import audit, log_activity
from .catalog import Node
from .db import db, new_uuid
from .errors import ActionNotAllowed, FatalDriverError, UserError
from .placement import NodeReservation, _need, _reserve_on
from .services import ACTIVE, MOVING, Service, require_action, transition


def _need_of(service: Service) -> dict:
    res = db.session.get(NodeReservation, service.id)
    if res is not None:
        return {"vcpus": res.vcpus, "memory_mib": res.memory_mib, "disk_gib": res.disk_gib}
    return _need(service.package)


def _pools_of(service: Service) -> list:
    from .ipam import IpAddress
    from .ipam_models import IpPool

    ids = db.session.scalars(select(IpAddress.pool_id).where(IpAddress.service_id == service.id).distinct()).all()
    return db.session.scalars(select(IpPool).where(IpPool.id.in_(ids))).all() if ids else []


def _serves(pool, node: Node) -> bool:
    if pool.nodes:
        return any(n.id == node.id for n in pool.nodes)
    if pool.location:
        return pool.location == node.location
    return True


def refusal(service: Service, node: Node | None) -> str | None:
    """Why ``node`` cannot take ``service``, in words for staff; None when it can."""
    if node is None:
        return "Choose a node to move the service to."
    if service.node is None:
        return "This service is on no node yet."
    if node.id == service.node_id:
        return f"The service is on {node.name} already."
    if node.driver != service.node.driver:
        return f"{node.name} runs the {node.driver} driver, not {service.node.driver}."
    if not node.enabled:
        return f"{node.name} is disabled for placement."
    if node.draining:
        return f"{node.name} is draining: it takes no new services."
    need = _need_of(service)
    if (node.used_vcpus + need["vcpus"] > node.vcpus or node.used_memory_mib + need["memory_mib"] > node.memory_mib
            or node.used_disk_gib + need["disk_gib"] > node.disk_gib):
        return (f"{node.name} lacks room for {need['vcpus']} vCPU, {need['memory_mib']} MiB and "
                f"{need['disk_gib']} GiB.")
    for pool in _pools_of(service):
        if not _serves(pool, node):
            return f"The service's addresses come from pool {pool.name}, which does not serve {node.name}."
    return None


def candidates(service: Service) -> list[tuple[Node, str | None]]:
    """Every other node of the service's driver with the reason it cannot take the service (None: it can)."""
    if service.node is None:
        return []
    nodes = db.session.scalars(select(Node).where(Node.driver == service.node.driver, Node.id != service.node_id)
                               .order_by(Node.name)).all()
    return [(n, refusal(service, n)) for n in nodes]


def request_move(service: Service, node: Node | None, actor, *, reason: str = "", request_id: str | None = None):
    """Staff move ``service`` to ``node``: checks, reserves the target's room, active → moving, enqueues
    ``service.move``. The caller commits; returns the operation."""
    db.session.refresh(service)
    if service.kind != "vps":
        raise ActionNotAllowed("Only virtual servers move between nodes.")
    require_action(service, "move", staff=True)
    why = refusal(service, node)
    if why:
        raise UserError(why)
    need = _need_of(service)
    if not _reserve_on(node.id, need):
        raise UserError(f"{node.name} filled up a moment ago; choose another node.")
    source = service.node
    if not transition(service, MOVING, expect=ACTIVE):
        raise ActionNotAllowed("This service changed a moment ago; reload the page and try again.")
    op = jobs.enqueue("service.move", key=f"move:{service.uuid}:{request_id or new_uuid()}", service=service,
                      title="Move server", payload={"actor_id": getattr(actor, "id", None), "actor_type": "staff",
                                                    "from_node_id": source.id, "to_node_id": node.id, "need": need})
    log_activity(service.user_id, "move", f"Support staff started moving {service.hostname} to another host; it "
                 "keeps its addresses and data and may be unreachable for a few minutes.", service.id)
    audit("service.move.requested", "service", service.uuid, actor=actor,
          before={"state": ACTIVE, "node": source.name}, after={"state": MOVING, "node": node.name,
                                                               "operation": op.id}, detail=(reason or "")[:200])
    return op


@jobs.handler("service.move", queue=jobs.DRIVER)
def move_job(op, payload):
    from .lifecycle import _actor, _progress, _service_of, build_spec, driver_for

    svc = _service_of(op)
    target = db.session.get(Node, payload["to_node_id"])
    if svc.state == ACTIVE and svc.node_id == payload["to_node_id"]:
        return {"state": ACTIVE, "text": "Moved"}  # finished by an earlier attempt
    if svc.state != MOVING:
        raise FatalDriverError(f"service {svc.uuid} is {svc.state}, not moving")
    if target is None:
        raise FatalDriverError(f"target node {payload['to_node_id']} is gone")
    source = db.session.get(Node, payload["from_node_id"])
    before = {"node": source.name if source else None, "infra_ref": dict(payload.get("from_ref") or svc.infra_ref
                                                                       or {})}
    if svc.node_id != target.id:  # (a retry after the driver's part committed goes straight on below)
        drv, ref, spec = driver_for(svc), dict(svc.infra_ref or {}), build_spec(svc)
        if not drv.supports("move"):
            raise FatalDriverError(f"driver {drv.name} cannot move servers")
        op.payload = {**(op.payload or {}), "from_ref": ref}
        new_ref = jobs.call_driver(op, drv.move, ref, spec, dict(target.settings or {}), _progress(op, 10, 90),
                                   pct=10, text="Moving your server to another host")
        svc = db.session.get(Service, svc.id)
        res = db.session.get(NodeReservation, svc.id)
        if res is not None and res.node_id != target.id:  # the source's room goes back; the target's was reserved
            db.session.execute(update(Node).where(Node.id == res.node_id).values(
                used_vcpus=Node.used_vcpus - res.vcpus, used_memory_mib=Node.used_memory_mib - res.memory_mib,
                used_disk_gib=Node.used_disk_gib - res.disk_gib).execution_options(synchronize_session=False))
            res.node_id = target.id
        svc.node_id, svc.infra_ref = target.id, dict(new_ref or ref)
        db.session.flush()
        db.session.commit()
    svc = _service_of(op)
    network.apply_network_filter(svc, driver_for(svc), op=op)
    if not transition(svc, ACTIVE, expect=MOVING):
        raise FatalDriverError(f"service {svc.uuid} left moving while the job ran (now {svc.state})")
    from . import power

    power.mark_stale(svc)
    log_activity(svc.user_id, "move", f"{svc.hostname} was moved to another host; its addresses and data are "
                 "unchanged.", svc.id)
    audit("service.moved", "service", svc.uuid, before=before,
          after={"node": target.name, "infra_ref": dict(svc.infra_ref or {})}, detail=f"operation {op.id}",
          actor_type="staff", actor=_actor(payload))
    db.session.commit()
    return {"state": ACTIVE, "text": "Moved"}


def held_on(node_id: int) -> int:
    """Services whose reservation is on ``node_id`` (for tests and the node page)."""
    return db.session.scalar(select(func.count()).select_from(NodeReservation)
                             .where(NodeReservation.node_id == node_id)) or 0
