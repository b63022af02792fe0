"""IP address management: IPv4/IPv6 pools, race-free allocation, release into a cooldown, staff operations.

Lifecycle code calls exactly these functions:

- ``allocate_for_service(service)`` during provisioning: reserve the package's addresses (idempotent per service)
  and return them as ``drivers.Address`` items. It flushes; the handler's driver-call template commits before
  the driver works, so no address lock is held meanwhile;
- ``addresses_for(service)``: the addresses currently attached;
- ``main_address_of(Service.id)``: a correlated subquery for a service's main address, so a list of services
  shows its addresses in the same query (the customer dashboard);
- ``release_for_service(service)`` on removal: put them into cooldown.

Design
------
**IPv4 rows are materialised.** Creating an IPv4 pool inserts one ``ip_addresses`` row per host address (a /16 is
65,536 rows, a few megabytes). The network, broadcast and gateway addresses and the pool's reserved ranges are
stored as ``reserved`` rows, so staff see every address of the subnet and who holds it.

**Allocation is one indexed UPDATE, independent of the used count.** Each row has ``state`` and
``available_at``: the moment from which a free row may be handed out (the epoch for never-used rows; the end of its
cooldown for released ones). A partial index ``(pool_id, available_at, ordinal) WHERE state = 'free'`` holds only
free rows, ordered the way allocation wants them, so::

    WITH picked AS MATERIALIZED (SELECT id FROM ip_addresses
                                  WHERE pool_id=:p AND state='free' AND available_at <= :now
                                  ORDER BY available_at, ordinal LIMIT :n FOR UPDATE SKIP LOCKED)
    UPDATE ip_addresses SET state='assigned', service_id=:s ... FROM picked
     WHERE ip_addresses.id = picked.id AND state='free'
    RETURNING id, address

reads the first ``n`` index entries and stops: the assigned rows are not in the index at all, and rows still in
cooldown sort after every row that may be handed out (their ``available_at`` is in the future), so neither a full
pool nor a long cooldown list makes the query slower. Ordering by ``available_at`` also means never-used addresses
go first and released ones are reused oldest-first. (A nullable ``cooldown_until`` would need ``NULLS FIRST`` in
the index, which SQLite cannot declare; a non-null ``available_at`` has the same meaning and one index order on
both databases.)

**Race freedom.** On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets concurrent allocators pass over rows another
transaction is taking instead of queueing behind it; the outer ``AND state='free'`` re-check makes a row that
changed meanwhile drop out (READ COMMITTED re-evaluates the condition on the newest row version). On SQLite every
write transaction starts with ``BEGIN IMMEDIATE`` (core/db.py), so allocators are serialised. The last line is in
the schema: an address row is one row (unique ``address``), and ``service_id`` is a single column, so one address
can never be attached to two services; ``ck_ip_addresses_holder`` keeps assigned rows tied to a service.

**IPv6 is never materialised.** An IPv6 pool hands out one prefix per service (``assign_prefix``, e.g. /64 out of a
/48, or /128 single addresses) from a per-pool counter ``next_index``, advanced by a conditional UPDATE
(``WHERE next_index = :seen``), and the row is created only when it is handed out. Released IPv6 rows are kept
(state ``released``) and never reused: the space is large enough that reuse is not worth its risk.
"""

from __future__ import annotations

import ipaddress
import logging
from datetime import datetime

from sqlalchemy import Integer, bindparam, or_, select, update

from . import clock
from .activity import audit
from .db import db, is_postgres
from .drivers import Address
from .errors import FatalDriverError, TransientDriverError, UserError

log = logging.getLogger(__name__)

# the rows, lookups and pool management live in their own modules; their names stay importable from here
from .ipam_models import (addresses_for, ASSIGNED, EPOCH, FREE, _INSERT_CHUNK, IpAddress, IpPool,
                          MAX_IPV4_POOL_PREFIX, nameservers_for, pool_nodes, PoolExhausted, RDNS_POLICIES,
                          RDNS_POLICY_LABELS, RELEASED, RESERVED)  # noqa: E402,F401
from .ipam_pools import (create_pool, _materialise_ipv4, _parse_ranges, pool_summary, pool_usage, PoolError,
                         pool_serves, pools_for, update_pool)  # noqa: E402,F401


# ---------------------------------------------------------------------------------------------------------------
# Allocation
# ---------------------------------------------------------------------------------------------------------------

_TAKE_STATEMENTS: dict[bool, object] = {}


def _take_statement(postgres: bool):
    """The allocation UPDATE, built once per dialect (values are bound parameters)."""
    stmt = _TAKE_STATEMENTS.get(postgres)
    if stmt is None:
        t = IpAddress.__table__
        pick = (select(t.c.id).where(t.c.pool_id == bindparam("b_pool"), t.c.state == FREE,
                                     t.c.available_at <= bindparam("b_now"))
                .order_by(t.c.available_at, t.c.ordinal).limit(bindparam("b_n", type_=Integer)))
        if postgres:
            # A MATERIALIZED CTE runs the locking pick exactly once; as an IN (subquery) PostgreSQL may plan a
            # nested loop that re-runs it per outer row and takes far more than LIMIT rows.
            picked = pick.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
            stmt = update(t).where(t.c.id == picked.c.id, t.c.state == FREE)
        else:
            stmt = update(t).where(t.c.id.in_(pick.scalar_subquery()), t.c.state == FREE)
        stmt = (stmt.values(state=ASSIGNED, service_id=bindparam("b_service"), updated_at=bindparam("b_now"),
                            note="").returning(t.c.id, t.c.address).execution_options(synchronize_session=False))
        _TAKE_STATEMENTS[postgres] = stmt
    return stmt


def take_ipv4(pool_id: int, count: int, service_id: int, now: datetime | None = None) -> list[tuple[int, str]]:
    """Assign up to ``count`` free IPv4 rows of one pool to ``service_id`` in the current transaction; returns
    ``(id, address)`` pairs (fewer when the pool runs out). See the module docstring for why this is race-free and
    why its cost does not depend on how full the pool is."""
    now = now or clock.now()
    stmt = _take_statement(is_postgres())
    taken: list[tuple[int, str]] = []
    while len(taken) < count:
        rows = db.session.execute(stmt, {"b_pool": pool_id, "b_now": now, "b_n": count - len(taken),
                                         "b_service": service_id}).all()
        if not rows:
            # Nothing free and unlocked. On PostgreSQL a locked row might be returned to the pool by a rollback,
            # but waiting for that is not worth it: report what we got.
            break
        taken.extend((r[0], r[1]) for r in rows)
    return taken


def take_ipv6(pool: IpPool, service_id: int, now: datetime | None = None) -> IpAddress | None:
    """Hand out the next prefix of an IPv6 pool (conditional UPDATE of the pool's counter)."""
    now = now or clock.now()
    network = pool.network
    step = 2 ** (128 - pool.prefix)
    limit = network.num_addresses // step
    gw_index = None
    if pool.gateway:
        gw_index = (int(ipaddress.ip_address(pool.gateway)) - int(network.network_address)) // step
    for _ in range(50):
        seen = db.session.scalar(select(IpPool.next_index).where(IpPool.id == pool.id))
        index = seen
        while gw_index is not None and index == gw_index:
            index += 1
        if index >= limit:
            return None
        res = db.session.execute(update(IpPool).where(IpPool.id == pool.id, IpPool.next_index == seen)
                                 .values(next_index=index + 1).execution_options(synchronize_session=False))
        if res.rowcount != 1:
            continue
        first = int(network.network_address) + index * step
        addr = ipaddress.IPv6Address(first + 1 if pool.prefix < 128 else first)
        row = IpAddress(pool_id=pool.id, ordinal=index, address=str(addr), prefix=pool.prefix, state=ASSIGNED,
                        service_id=service_id, available_at=EPOCH, updated_at=now)
        db.session.add(row)
        db.session.flush()
        return row
    raise TransientDriverError("IPv6 counter contention; try again")


def _lock_service(service) -> None:
    """Serialise allocations for one service (idempotency under concurrent retries)."""
    from .services import Service

    # On SQLite the transaction began with BEGIN IMMEDIATE and already holds the database's write lock.
    if is_postgres():
        db.session.execute(select(Service.id).where(Service.id == service.id).with_for_update())


def allocate_for_service(service) -> list[Address]:
    """Attach the package's addresses to ``service``: when the package names pools (``pool_addresses``), exactly
    that many from each named pool (all or nothing); otherwise ``ipv4_count`` IPv4 addresses and, when the package
    has IPv6 and a pool serves the node, one IPv6 prefix. Idempotent: addresses already attached count, and only the missing
    ones are taken. Flushes; the provisioning handler commits before its driver call (so no address lock outlives
    the step). Raises :class:`PoolExhausted` (a transient
    error: the provisioning job retries) when the pools cannot cover the IPv4 count; then nothing is taken and the
    caller's transaction is left open as it was."""
    pkg = service.package
    _lock_service(service)
    have = list(db.session.scalars(select(IpAddress).where(IpAddress.service_id == service.id,
                                                           IpAddress.state == ASSIGNED)))
    have4 = sum(1 for a in have if a.version == 4)
    have6 = sum(1 for a in have if a.version == 6)
    now = clock.now()
    named = pkg.pool_counts()
    if named:
        got = _allocate_from_named_pools(service, named, have, now)
        if got:
            audit("ip.allocate", "service", service.uuid, after={"addresses": got})
        db.session.flush()
        return addresses_for(service)
    need4 = max(0, (pkg.ipv4_count or 0) - have4)
    got: list[str] = []
    if need4:
        with db.session.begin_nested():  # on exhaustion only this SAVEPOINT is undone, not the caller's work
            for pool in pools_for(service, 4):
                got.extend(a for _, a in take_ipv4(pool.id, need4 - len(got), service.id, now))
                if len(got) >= need4:
                    break
            if len(got) < need4:
                raise PoolExhausted(f"no free IPv4 address for service {service.uuid} "
                                    f"(needs {need4}, node {service.node.name if service.node else '-'})")
    if pkg.ipv6 and not have6:
        for pool in pools_for(service, 6):
            row = take_ipv6(pool, service.id, now)
            if row is not None:
                got.append(row.address)
                break
    if got:
        audit("ip.allocate", "service", service.uuid, after={"addresses": got})
    db.session.flush()
    return addresses_for(service)


def _allocate_from_named_pools(service, named: dict[int, int], have: list[IpAddress], now: datetime) -> list[str]:
    """Take from each pool the package names exactly its count (less what the service holds there already). All
    or nothing: when one pool cannot cover its count, the addresses taken from the others are given back."""
    got: list[str] = []
    with db.session.begin_nested():
        for pool_id, count in sorted(named.items()):
            pool = db.session.get(IpPool, pool_id)
            if pool is None or not pool.enabled or not pool_serves(pool, service.node):
                why = ("no longer exists" if pool is None else "is disabled" if not pool.enabled
                       else f"does not serve node {service.node.name if service.node else '-'}")
                raise FatalDriverError(
                    f"package {service.package.slug} includes addresses from pool "
                    f"{pool.name if pool else pool_id}, which {why}",
                    customer_message="Your server's IP addresses could not be reserved. Our staff have been "
                    "notified and will set up your service.")
            need = count - sum(1 for a in have if a.pool_id == pool_id)
            if need <= 0:
                continue
            if pool.version == 4:
                taken = [a for _, a in take_ipv4(pool.id, need, service.id, now)]
            else:
                taken = []
                for _ in range(need):
                    row = take_ipv6(pool, service.id, now)
                    if row is None:
                        break
                    taken.append(row.address)
            if len(taken) < need:
                raise PoolExhausted(f"pool {pool.name} has too few free addresses for service {service.uuid} "
                                    f"(needs {need}, found {len(taken)})")
            got.extend(taken)
    return got


def _release_rows(rows: list[IpAddress], now: datetime) -> list[tuple[str, str | None]]:
    """Free ``rows`` (IPv4 into cooldown, IPv6 retired); returns (address, old ptr) pairs."""
    out = []
    for row in rows:
        out.append((row.address, row.ptr))
        if row.version == 4:
            row.available_at = now + row.pool.cooldown()
            row.state = FREE
        else:
            row.state = RELEASED
        row.service_id = None
        row.ptr = None
        row.note = ""
        row.updated_at = now
    return out


def main_address_of(service_id_column):
    """A correlated scalar subquery giving a service's main address (first IPv4 by pool and ordinal, else its first
    address), to select beside service columns: lists of services need no second query and no Python join."""
    from sqlalchemy import case

    return (select(IpAddress.address)
            .where(IpAddress.service_id == service_id_column, IpAddress.state == ASSIGNED)
            .order_by(case((IpAddress.address.like("%:%"), 1), else_=0), IpAddress.pool_id, IpAddress.ordinal)
            .limit(1).scalar_subquery())


def release_for_service(service) -> None:
    """Detach every address of ``service``: IPv4 into the pool's cooldown, IPv6 retired; PTR records removed."""
    from . import rdns

    now = clock.now()
    rows = list(db.session.scalars(select(IpAddress).where(IpAddress.service_id == service.id,
                                                           IpAddress.state == ASSIGNED)
                                .with_for_update(of=IpAddress)))
    if not rows:
        return
    released = _release_rows(rows, now)
    rdns.cancel_open_requests([r.id for r in rows])
    for address, ptr in released:
        if ptr:
            rdns.enqueue_apply(address, None, reason="release")
    audit("ip.release", "service", service.uuid, before={"addresses": [a for a, _ in released]},
          detail="released with the service")


# ---------------------------------------------------------------------------------------------------------------
# Staff operations (each audited; the network filter is re-applied for every service whose set changed)
# ---------------------------------------------------------------------------------------------------------------

def get_address(address: str) -> IpAddress:
    try:
        norm = str(ipaddress.ip_address((address or "").strip()))
    except ValueError:
        raise UserError(f"“{address}” is not an IP address.") from None
    row = db.session.scalar(select(IpAddress).where(IpAddress.address == norm))
    if row is None:
        raise UserError(f"{norm} is not in any pool (IPv6 prefixes exist once handed out).")
    return row


def _service_by_uuid(uuid: str):
    from .services import ENDED, Service

    svc = db.session.scalar(select(Service).where(Service.uuid == (uuid or "").strip()))
    if svc is None:
        raise UserError("No service with that ID.")
    if svc.state in ENDED:
        raise UserError("That service has ended; addresses cannot be attached to it.")
    return svc


def _changed(services) -> None:
    from . import network

    for svc in {s.id: s for s in services if s is not None}.values():
        network.enqueue_filter_update(svc)


def reserve(address: str, note: str, actor) -> IpAddress:
    """Keep a free address out of allocation (a router, a customer's future order...)."""
    row = get_address(address)
    res = db.session.execute(update(IpAddress).where(IpAddress.id == row.id, IpAddress.state == FREE)
                             .values(state=RESERVED, note=(note or "")[:200], updated_at=clock.now())
                             .execution_options(synchronize_session=False))
    if res.rowcount != 1:  # nothing was written
        raise UserError(f"{row.address} is not free (it is {row.state}).")
    audit("ip.reserve", "ip_address", row.address, actor=actor, before={"state": FREE},
          after={"state": RESERVED, "note": note})
    db.session.flush()
    db.session.refresh(row)
    return row


def assign(address: str, service_uuid: str, actor, *, force_cooldown: bool = False) -> IpAddress:
    """Attach a free or reserved address to a service. An address still in cooldown needs ``force_cooldown``."""
    row = get_address(address)
    svc = _service_by_uuid(service_uuid)
    now = clock.now()
    cond = [IpAddress.id == row.id, IpAddress.state.in_((FREE, RESERVED))]
    if not force_cooldown:
        cond.append(or_(IpAddress.state == RESERVED, IpAddress.available_at <= now))
    before = {"state": row.state, "note": row.note}
    res = db.session.execute(update(IpAddress).where(*cond)
                             .values(state=ASSIGNED, service_id=svc.id, note="", updated_at=now)
                             .execution_options(synchronize_session=False))
    if res.rowcount != 1:  # nothing was written
        db.session.refresh(row)
        if row.cooling:
            raise UserError(f"{row.address} is in cooldown until {row.available_at:%Y-%m-%d %H:%M} UTC; "
                            "confirm to assign it anyway.")
        raise UserError(f"{row.address} cannot be assigned: it is {row.state}.")
    audit("ip.assign", "ip_address", row.address, actor=actor, before=before,
          after={"state": ASSIGNED, "service": svc.uuid})
    _changed([svc])
    db.session.flush()
    db.session.refresh(row)
    return row


def move(address: str, service_uuid: str, actor) -> IpAddress:
    """Move an assigned address to another service (its PTR record stays with the address)."""
    from . import rdns

    row = get_address(address)
    if row.state != ASSIGNED:
        raise UserError(f"{row.address} is not assigned to a service.")
    target = _service_by_uuid(service_uuid)
    old = row.service
    if old.id == target.id:
        raise UserError("The address is already on that service.")
    res = db.session.execute(update(IpAddress).where(IpAddress.id == row.id, IpAddress.state == ASSIGNED,
                                                     IpAddress.service_id == old.id)
                             .values(service_id=target.id, updated_at=clock.now())
                             .execution_options(synchronize_session=False))
    if res.rowcount != 1:  # nothing was written
        raise UserError(f"{row.address} changed meanwhile; reload and try again.")
    rdns.cancel_open_requests([row.id])
    audit("ip.move", "ip_address", row.address, actor=actor, before={"service": old.uuid},
          after={"service": target.uuid})
    _changed([old, target])
    db.session.flush()
    db.session.refresh(row)
    return row


def release(address: str, actor, *, skip_cooldown: bool = False) -> IpAddress:
    """Detach an assigned address (into cooldown) or return a reserved one to the pool."""
    from . import rdns

    row = get_address(address)
    now = clock.now()
    if row.state == RESERVED:
        if row.note in ("gateway", "network/broadcast"):
            raise UserError(f"{row.address} is the subnet's {row.note} address and stays reserved.")
        row.state, row.note, row.updated_at = FREE, "", now
        audit("ip.unreserve", "ip_address", row.address, actor=actor, before={"state": RESERVED},
              after={"state": FREE})
        db.session.flush()
        return row
    if row.state != ASSIGNED:
        raise UserError(f"{row.address} is not assigned or reserved.")
    holder = row.service
    db.session.execute(select(IpAddress.id).where(IpAddress.id == row.id).with_for_update())
    db.session.refresh(row)
    if row.state != ASSIGNED or row.service_id != holder.id:
        raise UserError(f"{row.address} changed meanwhile; reload and try again.")
    (addr, ptr), = _release_rows([row], now)
    if skip_cooldown and row.version == 4:
        row.available_at = now
    rdns.cancel_open_requests([row.id])
    if ptr:
        rdns.enqueue_apply(addr, None, reason="release")
    audit("ip.release", "ip_address", row.address, actor=actor, before={"service": holder.uuid, "ptr": ptr},
          after={"state": row.state, "available_at": row.available_at.isoformat()})
    _changed([holder])
    db.session.flush()
    return row


def service_label(service) -> str:
    return f"{service.hostname} ({service.uuid})"
