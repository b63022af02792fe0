"""Staff administration: what waits for staff, the audit trail as readable differences, customer search, failed
and stuck operations, catalogue changes. The staff pages (web/staff_admin.py) and the REST API use these functions
rather than their own queries."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update

from . import clock, jobs
from .activity import ActivityEntry, AuditEntry, audit, log_activity
from .db import db
from .errors import FieldErrorCollector, FieldErrors, UserError

ABANDONED = "abandoned"  # an operation staff gave up on: never run again, kept for the record


# --- what waits --------------------------------------------------------------------------------------------------

def waiting_counts() -> list[dict]:
    """Counts of what waits for staff, each with the staff endpoint of its queue and the permission it needs."""
    from . import dctasks, iso, rdns
    from .billing import REFUND_PENDING, RefundRequest
    from .tickets import OPEN as TICKET_OPEN, Ticket

    def count(stmt) -> int:
        return db.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0

    since = clock.now() - timedelta(days=30)
    return [
        {"label": "ISO approvals", "count": count(select(iso.IsoImage.id).where(iso.IsoImage.state == iso.PENDING)),
         "endpoint": "staff_iso.queue", "permission": "approvals.iso"},
        {"label": "Reverse DNS approvals",
         "count": count(select(rdns.RdnsRequest.id).where(rdns.RdnsRequest.state == rdns.PENDING)),
         "endpoint": "staff_network.rdns_queue", "permission": "approvals.rdns"},
        {"label": "Refund requests",
         "count": count(select(RefundRequest.id).where(RefundRequest.state == REFUND_PENDING)),
         "endpoint": "staff_billing.refunds", "permission": "money.view"},
        {"label": "Open tickets", "count": count(select(Ticket.id).where(Ticket.status == TICKET_OPEN)),
         "endpoint": "staff_tickets.queue", "permission": "tickets.view"},
        {"label": "Datacenter tasks",
         "count": count(select(dctasks.DatacenterTask.id)
                        .where(dctasks.DatacenterTask.state.in_((dctasks.OPEN, dctasks.IN_PROGRESS)))),
         "endpoint": "staff_inventory.tasks", "permission": "services.datacenter"},
        {"label": "Failed operations", "count": count(failed_operations()),
         "endpoint": "staff_admin.operations", "permission": "services.operations"},
        {"label": "Orders refused for want of stock (30 days)",
         "count": count(select(AuditEntry.id).where(AuditEntry.action == "dedicated.out_of_stock",
                                                    AuditEntry.created_at >= since)),
         "endpoint": "staff_inventory.index", "permission": "services.inventory"},
    ]


# --- the audit trail ---------------------------------------------------------------------------------------------

def _text(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _flatten(data, prefix: str = "") -> dict:
    out = {}
    for key, value in (data or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def readable_diff(before: dict | None, after: dict | None) -> list[dict]:
    """Before/after as rows ``{field, before, after, change}`` in words: nested keys are dotted paths, unchanged
    fields are left out, change is "added", "removed" or "changed"."""
    b, a = _flatten(before if isinstance(before, dict) else {"value": before} if before is not None else {}), \
        _flatten(after if isinstance(after, dict) else {"value": after} if after is not None else {})
    rows = []
    for field in sorted(set(b) | set(a)):
        if field in b and field in a and b[field] == a[field]:
            continue
        change = "added" if field not in b else "removed" if field not in a else "changed"
        rows.append({"field": field.replace("_", " "), "before": _text(b.get(field)) if field in b else "—",
                     "after": _text(a.get(field)) if field in a else "—", "change": change})
    return rows


def audit_query(*, actor: str = "", customer: str = "", service: str = "", kind: str = "",
                since: datetime | None = None, until: datetime | None = None):
    """The audit trail, newest first, filtered. ``actor`` and ``customer`` are e-mail addresses (or parts),
    ``service`` a service UUID, ``kind`` an action prefix (``service.``, ``refund``)."""
    from .accounts import User
    from .services import Service

    q = select(AuditEntry).order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
    if actor:
        ids = select(User.id).where(User.email.contains(actor.strip().lower()))
        q = q.where(AuditEntry.actor_id.in_(ids))
    if customer:
        users = db.session.execute(select(User.id, User.uuid).where(User.email.contains(customer.strip().lower()))
                                   ).all()
        uids = [u.id for u in users]
        svcs = db.session.execute(select(Service.id, Service.uuid).where(Service.user_id.in_(uids))).all() \
            if uids else []
        targets = [u.uuid for u in users] + [str(u.id) for u in users] + [s.uuid for s in svcs]
        q = q.where(or_(AuditEntry.actor_id.in_(uids), AuditEntry.target_id.in_(targets))) if targets \
            else q.where(AuditEntry.id < 0)
    if service:
        svc = db.session.scalar(select(Service).filter_by(uuid=service.strip()))
        ids = [service.strip()] + ([str(svc.id)] if svc else [])
        q = q.where(AuditEntry.target_id.in_(ids))
    if kind:
        q = q.where(AuditEntry.action.startswith(kind.strip()))
    if since:
        q = q.where(AuditEntry.created_at >= since)
    if until:
        q = q.where(AuditEntry.created_at < until)
    return q


def actor_emails(entries) -> dict[int, str]:
    from .accounts import User

    ids = {e.actor_id for e in entries if e.actor_id}
    return dict(db.session.execute(select(User.id, User.email).where(User.id.in_(ids))).all()) if ids else {}


def audit_csv(entries) -> str:
    """CSV of audit entries: when, actor, address, action, target, detail, and the difference in words."""
    emails = actor_emails(entries)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["when", "actor_type", "actor", "address", "action", "target_type", "target_id", "detail",
                "difference"])
    for e in entries:
        diff = "; ".join(f"{r['field']}: {r['before']} → {r['after']}" for r in readable_diff(e.before, e.after))
        w.writerow([e.created_at.isoformat(), e.actor_type, emails.get(e.actor_id, ""), e.address or "",
                    e.action, e.target_type, e.target_id or "", e.detail or "", diff])
    return out.getvalue()


# --- customers ---------------------------------------------------------------------------------------------------

def customer_query(q: str | None = None):
    """A select of the customers whose e-mail or name contains ``q``, who own a service with UUID ``q`` or hold
    address ``q`` (all customers without ``q``); callers add the order and the page."""
    from .accounts import User
    from .ipam import IpAddress
    from .services import Service

    stmt = select(User).where(User.role == "customer")
    q = (q or "").strip()
    if not q:
        return stmt
    by_service = select(Service.user_id).where(Service.uuid == q)
    by_address = (select(Service.user_id).join(IpAddress, IpAddress.service_id == Service.id)
                  .where(IpAddress.address == q))
    like = f"%{q.lower()}%"
    return stmt.where(or_(func.lower(User.email).like(like), func.lower(User.name).like(like),
                          User.id.in_(by_service), User.id.in_(by_address)))


def search_customers(q: str, limit: int = 50):
    from .accounts import User

    return db.session.scalars(customer_query(q).order_by(User.email).limit(limit)).all()


def record_view_as(customer, staff, address: str | None = None) -> None:
    """A staff member opened the customer's dashboard read-only: audited, and shown in the customer's activity."""
    audit("customer.view_as", "user", customer.uuid, actor=staff, before={"customer_told": False},
          after={"viewed": "dashboard (read-only)", "customer_told": True}, detail="read-only view of the dashboard")
    log_activity(customer.id, "account", "A member of our staff viewed your dashboard (read-only) to help you.")


def customer_activity(user_id: int, limit: int = 50):
    return db.session.scalars(select(ActivityEntry).where(ActivityEntry.user_id == user_id)
                              .order_by(ActivityEntry.created_at.desc(), ActivityEntry.id.desc()).limit(limit)).all()


# --- failed and stuck operations ---------------------------------------------------------------------------------

def failed_operations(include_retrying: bool = True):
    states = (jobs.FAILED, jobs.RETRYING) if include_retrying else (jobs.FAILED,)
    return (select(jobs.Operation).where(jobs.Operation.state.in_(states))
            .order_by(jobs.Operation.created_at.desc(), jobs.Operation.id))


def stuck_operations(minutes: float | None = None):
    """Running operations whose heartbeat stopped ``minutes`` ago (their worker died or hangs); by default the stale
    threshold after which another worker takes the claim over (jobs.stale_seconds, HOSTBAY_STALE_SECONDS)."""
    seconds = jobs.stale_seconds() if minutes is None else minutes * 60
    cutoff = clock.now() - timedelta(seconds=seconds)
    return (select(jobs.Operation).where(jobs.Operation.state == jobs.RUNNING,
                                         or_(jobs.Operation.heartbeat_at < cutoff,
                                             jobs.Operation.heartbeat_at.is_(None)))
            .order_by(jobs.Operation.created_at))


def left_behind(op: jobs.Operation) -> list[str]:
    """What abandoning ``op`` leaves as it is, in words staff act on."""
    from .catalog import Node
    from .ipam import IpAddress
    from .services import Service

    out = []
    svc = db.session.get(Service, op.service_id) if op.service_id else None
    if svc is None:
        out.append("No service is attached; nothing else changes.")
        return out
    out.append(f"Service {svc.hostname} ({svc.uuid}) stays in state “{svc.state}”; nothing moves it on by itself.")
    if svc.node_id:
        node = db.session.get(Node, svc.node_id)
        out.append(f"Its reservation on node {node.name if node else svc.node_id} stays held "
                   "(vCPU, memory and disk count as used).")
    n = db.session.scalar(select(func.count(IpAddress.id)).where(IpAddress.service_id == svc.id)) or 0
    if n:
        out.append(f"{n} address{'es' if n != 1 else ''} stay assigned to it.")
    if (svc.infra_ref or {}):
        out.append("Whatever the driver created for it (domain, disks, server) stays on the host: "
                   f"{json.dumps(svc.infra_ref, sort_keys=True)}.")
    if op.kind == "service.move" and (op.payload or {}).get("to_node_id") and svc.node_id != op.payload["to_node_id"]:
        target = db.session.get(Node, op.payload["to_node_id"])
        out.append(f"The room reserved for the move on node {target.name if target else op.payload['to_node_id']} "
                   "stays held as well.")
    out.append("No money moves: charges already made stay, nothing is refunded.")
    return out


def abandon(op: jobs.Operation, actor, reason: str = "") -> jobs.Operation:
    """Give up on a failed or retrying operation: it never runs again. A conditional UPDATE: a concurrent retry
    or run wins."""
    res = db.session.execute(update(jobs.Operation)
                             .where(jobs.Operation.id == op.id,
                                    jobs.Operation.state.in_((jobs.FAILED, jobs.RETRYING)))
                             .values(state=ABANDONED, finished_at=clock.now())
                             .execution_options(synchronize_session=False))
    if res.rowcount != 1:
        raise UserError("Only failed or retrying operations can be abandoned.")
    audit("operation.abandon", "operation", op.id, actor=actor, before={"state": op.state},
          after={"state": ABANDONED}, detail="; ".join([reason[:300]] + left_behind(op)) if reason
          else "; ".join(left_behind(op)))
    db.session.refresh(op)
    return op


def retry_many(op_ids: list[str], actor) -> tuple[int, int]:
    """Bulk retry through jobs.retry; returns (retried, skipped: not failed)."""
    done = skipped = 0
    for op_id in op_ids:
        op = db.session.get(jobs.Operation, op_id)
        if op is None or op.state != jobs.FAILED:
            skipped += 1
            continue
        jobs.retry(op, actor=actor)
        done += 1
    return done, skipped


# --- catalogue ---------------------------------------------------------------------------------------------------

PACKAGE_INT_FIELDS = ("vcpus", "memory_mib", "disk_gib", "ipv4_count", "port_speed_mbit", "sort")


def package_snapshot(pkg) -> dict:
    return {"slug": pkg.slug, "name": pkg.name, "kind": pkg.kind, "driver": pkg.driver,
            "description": pkg.description, **{f: getattr(pkg, f) for f in PACKAGE_INT_FIELDS},
            "ipv6": pkg.ipv6, "traffic_quota_gib": pkg.traffic_quota_gib, "hardware": dict(pkg.hardware or {}),
            "visible": pkg.visible, "retired": pkg.retired,
            "pool_addresses": _pool_names(pkg.pool_addresses or {}),
            "iso_quota_count": pkg.iso_quota_count, "iso_quota_bytes": pkg.iso_quota_bytes,
            "prices": {p.cycle: p.price_cents for p in pkg.prices}}


def _pool_names(counts: dict) -> dict[str, int]:
    """Included addresses per pool, keyed by pool name (for the audit trail)."""
    from .ipam import IpPool

    out = {}
    for pool_id, n in sorted(counts.items(), key=lambda kv: int(kv[0])):
        pool = db.session.get(IpPool, int(pool_id))
        out[pool.name if pool else f"#{pool_id}"] = int(n)
    return out


def check_pool_addresses(counts: dict) -> dict[str, int]:
    """Validate included addresses per pool ({pool id: count}); returns them as stored ({"<id>": n}, zero counts
    dropped). Raises FieldErrors naming each bad pool's field ``pool_<id>``."""
    from .ipam import IpPool

    out, errors = {}, FieldErrorCollector()
    for pool_id, n in counts.items():
        field = f"pool_{pool_id}"
        try:
            pool_id, n = int(pool_id), int(n)
        except (TypeError, ValueError):
            errors.add(field, "Included addresses per pool must be whole numbers.")
            continue
        pool = db.session.get(IpPool, pool_id)
        if pool is None:
            errors.add(field, f"There is no IP pool #{pool_id}.")
        elif n < 0:
            errors.add(field, f"Addresses from pool {pool.name} must be at least 0.")
        elif n:
            out[str(pool_id)] = n
    errors.raise_if_any()
    return out


def check_package(pkg, values: dict, prices: dict[str, int]) -> dict:
    """Check a package's values and prices ({cycle: cents}) before :func:`save_package` stores them: raises
    FieldErrors naming every bad field (``slug``, ``name``, ``vcpus``, ``memory_mib``, ``disk_gib``,
    ``price_<cycle>``, ``prices``, ``pool_<id>``, ``iso_quota_count``, ``iso_quota_bytes``); returns the values as
    stored."""
    from .catalog import CYCLES, Package

    errors = FieldErrorCollector()
    for cycle, cents in prices.items():
        if cycle not in CYCLES:
            errors.add(f"price_{cycle}", f"Unknown billing cycle {cycle}.")
        elif cents < 0:
            errors.add(f"price_{cycle}", "Prices cannot be negative.")
    if not prices:
        errors.add("prices", "Give the package a price for at least one billing cycle.")
    slug = values.get("slug") or (pkg.slug if pkg else "")
    if not slug or len(slug) > 64:
        errors.add("slug", "Give the package a short name (slug) of at most 64 characters.")
    else:
        other = db.session.scalar(select(Package).filter_by(slug=slug))
        if other is not None and other is not pkg:
            errors.add("slug", f"A package with the slug {slug} exists already.")
    if not (values.get("name") or "").strip():
        errors.add("name", "Give the package a name.")
    kind = values.get("kind") or (pkg.kind if pkg else "vps")
    if kind == "vps":
        for field, minimum, message in (("vcpus", 1, "A VPS package needs at least 1 vCPU."),
                                        ("memory_mib", 128, "A VPS package needs at least 128 MiB of memory."),
                                        ("disk_gib", 1, "A VPS package needs at least 1 GiB of disk.")):
            value = values.get(field, getattr(pkg, field, None) if pkg else None)
            if value is not None and value < minimum:
                errors.add(field, message)
    if "pool_addresses" in values:
        with errors.check("pool_addresses"):
            values = {**values, "pool_addresses": check_pool_addresses(values["pool_addresses"] or {})}
    for field in ("iso_quota_count", "iso_quota_bytes"):
        if values.get(field) is not None and values[field] < 0:
            errors.add(field, "The ISO quota cannot be negative.")
    errors.raise_if_any()
    return values


def save_package(pkg, values: dict, prices: dict[str, int], actor, *, apply_to_existing: bool = False):
    """Create (``pkg`` None) or change a package (checked by :func:`check_package`). Price changes reach existing
    services only with ``apply_to_existing``: their next renewal charges the new price and each customer is told in
    their activity."""
    from .catalog import Package, PackagePrice
    from .services import HIDDEN_FROM_CUSTOMER, Service

    values = check_package(pkg, values, prices)
    slug = values.get("slug") or (pkg.slug if pkg else "")
    before = package_snapshot(pkg) if pkg else None
    if pkg is None:
        pkg = Package(slug=slug, name=values["name"], driver=values["driver"])
        db.session.add(pkg)
    for key, value in values.items():
        setattr(pkg, key, value)
    old_prices = {p.cycle: p for p in pkg.prices}
    for cycle, cents in prices.items():
        if cycle in old_prices:
            old_prices[cycle].price_cents = cents
        else:
            pkg.prices.append(PackagePrice(cycle=cycle, price_cents=cents))
    for cycle, row in old_prices.items():
        if cycle not in prices:
            pkg.prices.remove(row)
    db.session.flush()
    after = package_snapshot(pkg)
    audit("package.create" if before is None else "package.update", "package", pkg.uuid, actor=actor,
          before=before, after=after)
    told = 0
    if before is not None and apply_to_existing:
        for cycle, cents in prices.items():
            if before["prices"].get(cycle) == cents:
                continue
            for svc in db.session.scalars(select(Service).where(Service.package_id == pkg.id, Service.cycle == cycle,
                                                                Service.state.not_in(HIDDEN_FROM_CUSTOMER),
                                                                Service.price_cents != cents)).all():
                old = svc.price_cents
                svc.price_cents = cents
                audit("service.price", "service", svc.uuid, actor=actor, before={"price_cents": old},
                      after={"price_cents": cents}, detail="package price change applied to the next renewal")
                log_activity(svc.user_id, "billing",
                             f"The price of {svc.hostname} changes from ${old / 100:,.2f} to ${cents / 100:,.2f} "
                             f"per {cycle} from its next renewal on {svc.renews_at.date().isoformat()}.",
                             service_id=svc.id)
                told += 1
    return pkg, told


def check_image(img, values: dict) -> None:
    """Raise FieldErrors naming every bad field of an OS image (``driver``, ``slug``, ``name``, ``source``,
    ``min_disk_gib``)."""
    from .catalog import Image

    errors = FieldErrorCollector()
    for field in ("driver", "slug", "name", "source"):
        if not (values[field] if field in values else (getattr(img, field) if img else "")):  # given: not blank
            errors.add(field, f"The image needs a {field if field != 'source' else 'template reference'}.")
    if values.get("min_disk_gib", 1) < 1:
        errors.add("min_disk_gib", "The minimum disk is at least 1 GiB.")
    driver, slug = values.get("driver") or (img.driver if img else ""), values.get("slug") or (img.slug if img else "")
    if driver and slug:
        other = db.session.scalar(select(Image).filter_by(driver=driver, slug=slug))
        if other is not None and other is not img:
            errors.add("slug", f"The driver {driver} has an image {slug} already.")
    errors.raise_if_any()


def save_image(img, values: dict, actor):
    from .catalog import Image

    check_image(img, values)
    driver, slug = values.get("driver") or img.driver, values.get("slug") or img.slug
    fields = ("driver", "slug", "name", "source", "os_family", "min_disk_gib", "enabled")
    before = {f: getattr(img, f) for f in fields} if img else None
    if img is None:
        img = Image(driver=driver, slug=slug, name=values["name"], source=values["source"])
        db.session.add(img)
    for key, value in values.items():
        setattr(img, key, value)
    db.session.flush()
    audit("image.create" if before is None else "image.update", "image", img.uuid, actor=actor, before=before,
          after={f: getattr(img, f) for f in fields})
    return img


# --- nodes -------------------------------------------------------------------------------------------------------

def node_settings(cls, raw: dict) -> dict:
    """A node's driver settings cleaned by its driver class; FieldErrors names each refused one ``settings.<key>``
    (a driver's check of several settings together may name none: "settings")."""
    from .errors import SettingsError

    try:
        return cls.clean_settings(raw)
    except SettingsError as exc:
        keys = {s.key for s in cls.settings}
        raise FieldErrors({(f"settings.{k}" if k in keys else "settings"): m for k, m in exc.errors.items()}) \
            from None


def masked_settings(cls, settings: dict) -> dict:
    """A driver's settings as staff pages and the audit trail show them: a stored secret as ``***``."""
    return {s.key: ("***" if s.type == "secret" and settings.get(s.key) else settings.get(s.key)) for s in cls.settings}


def create_node(cls, values: dict, raw_settings: dict, actor, *, known_errors: dict | None = None):
    """Add a node of driver class ``cls`` (``values``: name, location, vcpus, memory_mib, disk_gib, enabled). Every
    bad field is reported at once in a FieldErrors (``name``, ``vcpus``, ``memory_mib``, ``disk_gib``,
    ``settings.<key>``), together with ``known_errors`` the caller found already; nothing is added then."""
    from .catalog import Node

    errors = FieldErrorCollector()
    for field, message in (known_errors or {}).items():
        errors.add(field, message)
    name = (values.get("name") or "").strip()
    if not name or len(name) > 64:
        errors.add("name", "Give the node a name of at most 64 characters.")
    elif db.session.scalar(select(Node.id).filter_by(name=name)):
        errors.add("name", f"A node named {name} exists already.")
    for field, label in (("vcpus", "vCPUs"), ("memory_mib", "Memory"), ("disk_gib", "Disk")):
        if values.get(field) is not None and values[field] < 0:
            errors.add(field, f"{label} cannot be negative.")
    settings = None
    with errors.check("settings"):
        settings = node_settings(cls, raw_settings)
    errors.raise_if_any()
    node = Node(name=name, driver=cls.name, settings=settings, location=values.get("location") or "default",
                vcpus=values.get("vcpus") or 0, memory_mib=values.get("memory_mib") or 0,
                disk_gib=values.get("disk_gib") or 0, enabled=bool(values.get("enabled")))
    db.session.add(node)
    db.session.flush()
    masked = masked_settings(cls, settings)
    audit("node.create", "node", node.id, actor=actor, after={"name": name, "driver": cls.name, "settings": masked})
    return node


def update_node(node, cls, values: dict, raw_settings: dict, actor, *, known_errors: dict | None = None) -> None:
    """Change a node's location, capacity, settings and ``enabled`` (``values``: location, vcpus, memory_mib,
    disk_gib, enabled; a capacity left out or None stays). A total below what the services on the node reserve is
    refused (raise it again, or move services off first). Every bad field is reported at once in a FieldErrors
    (``vcpus``, ``memory_mib``, ``disk_gib``, ``settings.<key>``) with ``known_errors``; nothing changes then. The
    audit entry holds the before and after (secrets masked)."""
    errors = FieldErrorCollector()
    for field, message in (known_errors or {}).items():
        errors.add(field, message)
    reserved = {"vcpus": (node.used_vcpus, "vCPUs", ""), "memory_mib": (node.used_memory_mib, "Memory", " MiB"),
                "disk_gib": (node.used_disk_gib, "Disk", " GiB")}
    for field, (used, label, unit) in reserved.items():
        value = values.get(field)
        if value is None or field in errors.errors:
            continue
        if value < 0:
            errors.add(field, f"{label} cannot be negative.")
        elif value < used:
            errors.add(field, f"The services on this node reserve {used}{unit}; {label} cannot be set below that "
                              f"(move services off first).")
    location = (values.get("location") or "").strip() or node.location
    if len(location) > 64:
        errors.add("location", "Give a location of at most 64 characters.")
    settings = None
    with errors.check("settings"):
        settings = node_settings(cls, raw_settings)
    errors.raise_if_any()

    def shape():
        masked = masked_settings(cls, node.settings or {})
        return {"location": node.location, "vcpus": node.vcpus, "memory_mib": node.memory_mib,
                "disk_gib": node.disk_gib, "enabled": node.enabled, "settings": masked}
    before = shape()
    node.settings, node.location, node.enabled = settings, location, bool(values.get("enabled"))
    for field in reserved:
        if values.get(field) is not None:
            setattr(node, field, values[field])
    db.session.flush()
    audit("node.update", "node", node.id, actor=actor, before=before, after=shape())


def node_use(node) -> list[dict]:
    """Reserved vs total per resource, with the percentage used."""
    out = []
    for label, used, total, unit in (("vCPU", node.used_vcpus, node.vcpus, ""),
                                     ("Memory", node.used_memory_mib, node.memory_mib, " MiB"),
                                     ("Disk", node.used_disk_gib, node.disk_gib, " GiB")):
        pct = round(100 * used / total) if total else 0
        out.append({"label": label, "used": used, "total": total, "unit": unit, "pct": pct})
    return out


def set_node_placement(node, actor, *, enabled: bool | None = None, draining: bool | None = None) -> None:
    """Enable/disable a node for placement or drain it (no new services; the ones on it keep running)."""
    before = {"enabled": node.enabled, "draining": node.draining}
    if enabled is not None:
        node.enabled = enabled
    if draining is not None:
        node.draining = draining
    audit("node.placement", "node", node.id, actor=actor, before=before,
          after={"enabled": node.enabled, "draining": node.draining})
