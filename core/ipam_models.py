"""IP address management: the pools and addresses, their states, and the read-only lookups other areas
need (a service's addresses and resolvers). Imports nothing of rdns or network."""

from __future__ import annotations

import ipaddress
import logging
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import (JSON, BigInteger, CheckConstraint, Column, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint, select, text)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from . import clock
from .db import db, new_uuid
from .drivers import Address
from .errors import TransientDriverError

log = logging.getLogger("hostbay.core.ipam")

FREE, ASSIGNED, RESERVED, RELEASED = "free", "assigned", "reserved", "released"
EPOCH = datetime(1970, 1, 1)
RDNS_POLICIES = ("immediate", "forward_match", "approval")
RDNS_POLICY_LABELS = {"immediate": "Applied at once", "forward_match": "Applied when the forward record matches",
                      "approval": "Reviewed by staff"}
MAX_IPV4_POOL_PREFIX = 16  # the largest IPv4 pool: a /16 (65,536 rows)
_INSERT_CHUNK = 5000


class PoolExhausted(TransientDriverError):
    """No free address in any pool that serves the service; retried later (staff add addresses meanwhile)."""

    customer_message = "No network address is free right now. Our staff have been notified and will add capacity."


pool_nodes = Table(
    "ip_pool_nodes", db.metadata,
    Column("pool_id", ForeignKey("ip_pools.id", ondelete="CASCADE"), primary_key=True),
    Column("node_id", ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
)


class IpPool(db.Model):
    """A subnet addresses are handed out from. Bound to nodes (``nodes``) or to a location; a pool with neither
    serves every node."""

    __tablename__ = "ip_pools"
    __table_args__ = (CheckConstraint("version IN (4, 6)", name="version_known"),
                      CheckConstraint("rdns_policy IN ('immediate', 'forward_match', 'approval')",
                                      name="rdns_policy_known"))

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    version: Mapped[int] = mapped_column()
    cidr: Mapped[str] = mapped_column(String(64), unique=True)
    gateway: Mapped[str | None] = mapped_column(String(45))
    # IPv4: the prefix length configured on the server (normally the subnet's). IPv6: the prefix each service gets.
    prefix: Mapped[int] = mapped_column()
    nameservers: Mapped[list] = mapped_column(JSON, default=list)
    reserved: Mapped[list] = mapped_column(JSON, default=list)  # ["10.0.0.1-10.0.0.9", "10.0.1.0/28", ...]
    location: Mapped[str | None] = mapped_column(String(64))
    rdns_policy: Mapped[str] = mapped_column(String(16), default="immediate")
    cooldown_hours: Mapped[int | None] = mapped_column()  # None: HOSTBAY_IP_COOLDOWN_HOURS
    next_index: Mapped[int] = mapped_column(BigInteger, default=1)  # IPv6 counter (index 0 holds the gateway)
    enabled: Mapped[bool] = mapped_column(default=True)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())

    nodes = relationship("Node", secondary=pool_nodes, lazy="selectin")

    @property
    def network(self):
        return ipaddress.ip_network(self.cidr)

    def cooldown(self) -> timedelta:
        hours = self.cooldown_hours
        if hours is None:
            hours = current_app.config.get("HOSTBAY_IP_COOLDOWN_HOURS", 24)
        return timedelta(hours=hours)


class IpAddress(db.Model):
    """One address (IPv4) or one handed-out prefix (IPv6, ``address`` is its first usable address)."""

    __tablename__ = "ip_addresses"
    __table_args__ = (
        UniqueConstraint("pool_id", "ordinal"),
        CheckConstraint("state IN ('free', 'assigned', 'reserved', 'released')", name="state_known"),
        CheckConstraint("(state = 'assigned') = (service_id IS NOT NULL)", name="holder"),
        Index("ix_ip_addresses_free", "pool_id", "available_at", "ordinal",
              postgresql_where=text("state = 'free'"), sqlite_where=text("state = 'free'")),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("ip_pools.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(BigInteger)  # offset from the pool's network address (IPv6: prefix index)
    address: Mapped[str] = mapped_column(String(45), unique=True)
    prefix: Mapped[int] = mapped_column()
    state: Mapped[str] = mapped_column(String(10), default=FREE)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"), index=True)
    available_at: Mapped[datetime] = mapped_column(default=EPOCH)
    ptr: Mapped[str | None] = mapped_column(String(253))  # the record applied in DNS
    note: Mapped[str] = mapped_column(String(200), default="")
    updated_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())

    pool = relationship("IpPool", lazy="joined")
    service = relationship("Service")

    @property
    def version(self) -> int:
        return 6 if ":" in self.address else 4

    @property
    def cooling(self) -> bool:
        return self.state == FREE and self.available_at > clock.now()

    def as_address(self) -> Address:
        return Address(self.address, self.prefix, self.pool.gateway)


def addresses_for(service) -> list[Address]:
    rows = db.session.scalars(select(IpAddress).where(IpAddress.service_id == service.id,
                                                      IpAddress.state == ASSIGNED)
                              .order_by(IpAddress.pool_id, IpAddress.ordinal))
    return [r.as_address() for r in rows]


def nameservers_for(service) -> list[str]:
    """The resolvers of the pools the service's addresses come from (first pool first, no duplicates)."""
    out: list[str] = []
    pools = db.session.scalars(select(IpPool).join(IpAddress, IpAddress.pool_id == IpPool.id)
                               .where(IpAddress.service_id == service.id, IpAddress.state == ASSIGNED)
                               .order_by(IpPool.version, IpPool.id)).unique()
    for p in pools:
        for ns in p.nameservers or []:
            if ns not in out:
                out.append(ns)
    return out
