"""IP pools: creating (IPv4 pools are materialised address by address), changing and summarising them."""

from __future__ import annotations

import ipaddress
import logging

from sqlalchemy import func, insert, select

from . import clock
from .activity import audit
from .db import db
from .errors import UserError
from .ipam_models import (ASSIGNED, EPOCH, FREE, _INSERT_CHUNK, IpAddress, IpPool, MAX_IPV4_POOL_PREFIX,
                          RDNS_POLICIES, RELEASED, RESERVED)

log = logging.getLogger("hostbay.core.ipam")


# ---------------------------------------------------------------------------------------------------------------
# Pools
# ---------------------------------------------------------------------------------------------------------------

class PoolError(UserError):
    pass


def _parse_ranges(network, reserved: list[str]) -> list[tuple[int, int]]:
    """Reserved entries ("a.b.c.d", "a-b", "cidr") as inclusive integer ranges inside ``network``."""
    out = []
    for item in reserved:
        item = item.strip()
        if not item:
            continue
        try:
            if "-" in item:
                lo, hi = (ipaddress.ip_address(p.strip()) for p in item.split("-", 1))
            elif "/" in item:
                net = ipaddress.ip_network(item, strict=False)
                lo, hi = net.network_address, net.broadcast_address
            else:
                lo = hi = ipaddress.ip_address(item)
        except ValueError:
            raise PoolError(f"“{item}” is not an address, a range (a-b) or a subnet.") from None
        if lo.version != network.version or lo not in network or hi not in network or int(hi) < int(lo):
            raise PoolError(f"Reserved range “{item}” is not inside {network}.")
        out.append((int(lo), int(hi)))
    return out


def create_pool(*, name: str, cidr: str, gateway: str | None = None, prefix: int | None = None,
                nameservers: list[str] | None = None, reserved: list[str] | None = None, location: str | None = None,
                node_ids: list[int] | None = None, rdns_policy: str = "immediate", cooldown_hours: int | None = None,
                actor=None) -> IpPool:
    """Create a pool; IPv4 pools get one row per address (the network, broadcast, gateway and reserved ranges as
    ``reserved`` rows). Flushes; the caller commits."""
    from .catalog import Node

    name = (name or "").strip()
    if not name:
        raise PoolError("Give the pool a name.")
    try:
        network = ipaddress.ip_network((cidr or "").strip(), strict=True)
    except ValueError as exc:
        raise PoolError(f"“{cidr}” is not a subnet in CIDR notation ({exc}).") from None
    if rdns_policy not in RDNS_POLICIES:
        raise PoolError("Unknown reverse DNS policy.")
    gw = None
    if gateway:
        try:
            gw = ipaddress.ip_address(gateway.strip())
        except ValueError:
            raise PoolError(f"Gateway “{gateway}” is not an address.") from None
        if gw.version != network.version or gw not in network:
            raise PoolError(f"The gateway must be inside {network}.")
    ns = []
    for item in nameservers or []:
        try:
            ns.append(str(ipaddress.ip_address(item.strip())))
        except ValueError:
            raise PoolError(f"Name server “{item}” is not an address.") from None
    ranges = _parse_ranges(network, reserved or [])
    if network.version == 4:
        if network.prefixlen < MAX_IPV4_POOL_PREFIX:
            raise PoolError(f"An IPv4 pool can be at most a /{MAX_IPV4_POOL_PREFIX}; split larger subnets.")
        prefix = network.prefixlen if prefix is None else int(prefix)
        if not network.prefixlen <= prefix <= 32:
            raise PoolError("The IPv4 prefix must be between the subnet's and 32.")
    else:
        prefix = 64 if prefix is None else int(prefix)
        if not network.prefixlen <= prefix <= 128 or (prefix < 128 and network.prefixlen == prefix):
            raise PoolError("The IPv6 assignment prefix must be longer than the subnet's (e.g. /64 from a /48).")
    overlapping = [p.cidr for p in db.session.scalars(select(IpPool).where(IpPool.version == network.version))
                   if ipaddress.ip_network(p.cidr).overlaps(network)]
    if overlapping:
        raise PoolError(f"{network} overlaps the pool {overlapping[0]}.")
    if db.session.scalar(select(IpPool.id).where(IpPool.name == name)):
        raise PoolError(f"A pool named “{name}” exists already.")
    pool = IpPool(name=name, version=network.version, cidr=str(network), gateway=str(gw) if gw else None,
                  prefix=prefix, nameservers=ns, reserved=[r.strip() for r in reserved or [] if r.strip()],
                  location=(location or "").strip() or None, rdns_policy=rdns_policy,
                  cooldown_hours=cooldown_hours, next_index=1)
    if node_ids:
        pool.nodes = list(db.session.scalars(select(Node).where(Node.id.in_(node_ids))))
    db.session.add(pool)
    db.session.flush()
    if network.version == 4:
        _materialise_ipv4(pool, network, gw, ranges)
    audit("ip_pool.create", "ip_pool", pool.uuid, actor=actor,
          after={"name": name, "cidr": str(network), "gateway": pool.gateway, "prefix": prefix,
                 "location": pool.location, "nodes": [n.name for n in pool.nodes], "rdns_policy": rdns_policy})
    db.session.flush()
    return pool


def _materialise_ipv4(pool: IpPool, network, gw, ranges) -> None:
    base = int(network.network_address)
    size = network.num_addresses
    now = clock.now()
    special = set()
    if network.prefixlen <= 30:
        special = {0, size - 1}
    if gw is not None:
        special.add(int(gw) - base)

    def reserved_note(off: int) -> str | None:
        if off in special:
            return "gateway" if gw is not None and off == int(gw) - base else "network/broadcast"
        n = base + off
        for lo, hi in ranges:
            if lo <= n <= hi:
                return "reserved range"
        return None

    table = IpAddress.__table__
    rows = []
    for off in range(size):
        note = reserved_note(off)
        rows.append({"pool_id": pool.id, "ordinal": off, "address": str(ipaddress.IPv4Address(base + off)),
                     "prefix": pool.prefix, "state": RESERVED if note else FREE, "service_id": None,
                     "available_at": EPOCH, "note": note or "", "updated_at": now})
        if len(rows) >= _INSERT_CHUNK:
            db.session.execute(insert(table), rows)
            rows = []
    if rows:
        db.session.execute(insert(table), rows)


def update_pool(pool: IpPool, *, actor=None, **values) -> IpPool:
    """Change a pool's settings (not its subnet): nameservers, location, nodes, rDNS policy, cooldown, enabled."""
    from .catalog import Node

    before = pool_summary(pool)
    if "rdns_policy" in values:
        if values["rdns_policy"] not in RDNS_POLICIES:
            raise PoolError("Unknown reverse DNS policy.")
        pool.rdns_policy = values["rdns_policy"]
    if "nameservers" in values:
        try:
            pool.nameservers = [str(ipaddress.ip_address(x.strip())) for x in values["nameservers"] if x.strip()]
        except ValueError:
            raise PoolError("Every name server must be an address.") from None
    if "location" in values:
        pool.location = (values["location"] or "").strip() or None
    if "cooldown_hours" in values:
        ch = values["cooldown_hours"]
        if ch is not None and int(ch) < 0:
            raise PoolError("The cooldown cannot be negative.")
        pool.cooldown_hours = None if ch is None else int(ch)
    if "enabled" in values:
        pool.enabled = bool(values["enabled"])
    if "node_ids" in values:
        pool.nodes = list(db.session.scalars(select(Node).where(Node.id.in_(values["node_ids"] or []))))
    audit("ip_pool.update", "ip_pool", pool.uuid, actor=actor, before=before, after=pool_summary(pool))
    db.session.flush()
    return pool


def pool_summary(pool: IpPool) -> dict:
    return {"name": pool.name, "cidr": pool.cidr, "location": pool.location, "nodes": [n.name for n in pool.nodes],
            "rdns_policy": pool.rdns_policy, "cooldown_hours": pool.cooldown_hours, "enabled": pool.enabled,
            "nameservers": list(pool.nameservers or [])}


def pool_usage(pool: IpPool) -> dict[str, int]:
    """Counts per state; ``cooling`` counts free rows still in cooldown; ``size`` the pool's address count."""
    now = clock.now()
    counts = {FREE: 0, ASSIGNED: 0, RESERVED: 0, RELEASED: 0}
    for state, n in db.session.execute(select(IpAddress.state, func.count()).where(IpAddress.pool_id == pool.id)
                                       .group_by(IpAddress.state)):
        counts[state] = n
    counts["cooling"] = db.session.scalar(select(func.count()).where(
        IpAddress.pool_id == pool.id, IpAddress.state == FREE, IpAddress.available_at > now)) or 0
    if pool.version == 4:
        counts["size"] = pool.network.num_addresses
    else:
        counts["size"] = 2 ** (pool.prefix - pool.network.prefixlen)
    return counts


def pools_for(service, version: int) -> list[IpPool]:
    """Enabled pools that serve ``service``'s node: pools bound to the node first, then the node's location,
    then pools bound to neither."""
    node = service.node
    pools = list(db.session.scalars(select(IpPool).where(IpPool.version == version, IpPool.enabled.is_(True))
                                    .order_by(IpPool.id)))
    bound, located, general = [], [], []
    for p in pools:
        if not pool_serves(p, node):
            continue
        (bound if p.nodes else located if p.location else general).append(p)
    return bound + located + general


def pool_serves(pool: IpPool, node) -> bool:
    """Whether ``pool`` may give addresses to a service on ``node`` (None: a service without a node): a pool bound
    to nodes serves those nodes, a pool with a location the nodes there, a pool with neither every node."""
    if pool.nodes:
        return node is not None and any(n.id == node.id for n in pool.nodes)
    if pool.location:
        return node is not None and pool.location == node.location
    return True
