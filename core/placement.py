"""Placement: the capacity a service holds on its node. A reservation and the node's ``used_*`` counters change
together in one transaction, with conditional updates, so no two concurrent orders overfill a node."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import ForeignKey, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from .catalog import Node
from .db import db
from .errors import FatalDriverError
from .services import Service


def _registry():
    return current_app.extensions["hostbay"]


class NodeReservation(db.Model):
    """The capacity a service holds on its node. Created with the node's ``used_*`` increase in one transaction
    and removed with the decrease in one transaction, so the node's counters always equal the sum of its rows."""

    __tablename__ = "node_reservations"

    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    vcpus: Mapped[int] = mapped_column(default=0)
    memory_mib: Mapped[int] = mapped_column(default=0)
    disk_gib: Mapped[int] = mapped_column(default=0)


def _need(package) -> dict:
    return {"vcpus": package.vcpus, "memory_mib": package.memory_mib, "disk_gib": package.disk_gib}


def _reserve_on(node_id: int, need: dict) -> bool:
    """Conditionally add ``need`` to the node's reservations: no two concurrent orders can overfill it."""
    res = db.session.execute(
        update(Node).where(Node.id == node_id, Node.enabled.is_(True), Node.draining.is_(False),
                           Node.used_vcpus + need["vcpus"] <= Node.vcpus,
                           Node.used_memory_mib + need["memory_mib"] <= Node.memory_mib,
                           Node.used_disk_gib + need["disk_gib"] <= Node.disk_gib)
        .values(used_vcpus=Node.used_vcpus + need["vcpus"],
                used_memory_mib=Node.used_memory_mib + need["memory_mib"],
                used_disk_gib=Node.used_disk_gib + need["disk_gib"])
        .execution_options(synchronize_session=False))
    return res.rowcount == 1


def place(service: Service) -> Node:
    """Reserve room for ``service`` on a node of its package's driver (idempotent: a service that holds a
    reservation keeps it). Candidates with room are ordered by free memory; ``hostbay_choose_node`` may pick."""
    existing = db.session.get(NodeReservation, service.id)
    if existing is not None:
        if service.node_id != existing.node_id:
            service.node_id = existing.node_id
        return db.session.get(Node, existing.node_id)
    need = _need(service.package)
    candidates = db.session.scalars(
        select(Node).where(Node.driver == service.package.driver, Node.enabled.is_(True), Node.draining.is_(False),
                           Node.used_vcpus + need["vcpus"] <= Node.vcpus,
                           Node.used_memory_mib + need["memory_mib"] <= Node.memory_mib,
                           Node.used_disk_gib + need["disk_gib"] <= Node.disk_gib)
        .order_by((Node.memory_mib - Node.used_memory_mib).desc(), Node.id)).all()
    if not candidates:
        raise FatalDriverError(f"no enabled {service.package.driver} node has room for package "
                               f"{service.package.slug}", customer_message="No server capacity is available right "
                               "now. Our staff have been notified and will set up your service.")
    named = service.package.pool_counts()
    if named:
        candidates = _served_by_every_pool(service.package, named, list(candidates))
    chosen = _registry().hook.hostbay_choose_node(service=service, candidates=list(candidates))
    if chosen is not None and chosen in candidates:
        candidates.remove(chosen)
        candidates.insert(0, chosen)
    for node in candidates:
        if _reserve_on(node.id, need):
            db.session.add(NodeReservation(service_id=service.id, node_id=node.id, **need))
            service.node_id = node.id
            db.session.flush()
            db.session.refresh(node)
            return node
    raise FatalDriverError("every candidate node filled up during placement",
                           customer_message="No server capacity is available right now. Our staff have been "
                           "notified and will set up your service.")


def _served_by_every_pool(package, named: dict[int, int], candidates: list[Node]) -> list[Node]:
    """The candidates every pool ``package`` takes addresses from serves; a clear refusal when none is left (the
    service is then placed nowhere and no address is taken)."""
    from .ipam import IpPool, pool_serves

    pools = [db.session.get(IpPool, pool_id) for pool_id in sorted(named)]
    unusable = [p.name if p else f"#{pid}" for pid, p in zip(sorted(named), pools) if p is None or not p.enabled]
    if unusable:
        names = ", ".join(unusable)
        raise FatalDriverError(f"package {package.slug} includes addresses from missing or disabled pools: {names}",
                               customer_message=_NO_ADDRESSES)
    kept = [n for n in candidates if all(pool_serves(p, n) for p in pools)]
    if not kept:
        raise FatalDriverError(f"no enabled {package.driver} node with room is attached to every pool of package "
                               f"{package.slug} ({', '.join(p.name for p in pools)})", customer_message=_NO_ADDRESSES)
    return kept


_NO_ADDRESSES = ("No server with the addresses your package includes is available right now. Our staff have been "
                 "notified and will set up your service.")


def adjust_reservation(service: Service) -> None:
    """Make the service's reservation match its (new) package; growth is conditional on the node's room."""
    res = db.session.get(NodeReservation, service.id)
    if res is None:
        return
    need = _need(service.package)
    delta = {k: need[k] - getattr(res, k) for k in need}
    if not any(delta.values()):
        return
    grow = {k: max(0, v) for k, v in delta.items()}
    if any(grow.values()) and not _reserve_on(res.node_id, grow):
        raise FatalDriverError(f"node {res.node_id} lacks room to grow service {service.uuid}",
                               customer_message="The package change needs more room than the server's host has. "
                               "Our staff have been notified.")
    shrink = {k: max(0, -v) for k, v in delta.items()}
    if any(shrink.values()):
        db.session.execute(update(Node).where(Node.id == res.node_id).values(
            used_vcpus=Node.used_vcpus - shrink["vcpus"], used_memory_mib=Node.used_memory_mib - shrink["memory_mib"],
            used_disk_gib=Node.used_disk_gib - shrink["disk_gib"]).execution_options(synchronize_session=False))
    for k, v in need.items():
        setattr(res, k, v)
    db.session.flush()


def release_reservation(service: Service) -> bool:
    """Give the service's capacity back to its node (idempotent)."""
    res = db.session.get(NodeReservation, service.id)
    if res is None:
        return False
    gone = db.session.execute(delete(NodeReservation).where(NodeReservation.service_id == service.id)
                              .execution_options(synchronize_session=False)).rowcount
    if gone:
        db.session.execute(update(Node).where(Node.id == res.node_id).values(
            used_vcpus=Node.used_vcpus - res.vcpus, used_memory_mib=Node.used_memory_mib - res.memory_mib,
            used_disk_gib=Node.used_disk_gib - res.disk_gib).execution_options(synchronize_session=False))
    db.session.expunge(res)
    return bool(gone)
