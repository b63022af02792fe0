"""The billing engine: orders, package changes with pro-rata, staff money actions and refund requests.

Every function here that moves money does it through :mod:`hostbay.core.ledger` with an idempotency key derived
from the caller's key, inside one transaction with the work the money pays for: either the debit, the service
row and its operation all commit, or none of them does. Replaying a call with the same key returns the first
result and changes nothing. The rules are written down, with worked examples, in ``docs/billing.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column, relationship

from . import clock, jobs, ledger
from .accounts import SSHKey, User
from .activity import audit, log_activity
from .catalog import CYCLE_LABELS, CYCLES, Image, Package, add_cycle
from .db import db, new_uuid
from .errors import ActionNotAllowed, FieldError, NotFound, UserError
from .inventory import OutOfStock, record_demand
from .money import format_cents, prorata_cents
from .services import ACTIVE, PENDING, REBUILDING, RESIZING, Service, require_action, transition

MAX_KEY_LEN = 120
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


# --------------------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------------------

def normalise_hostname(hostname: str) -> str:
    """An RFC 1123 host name, lower-cased, without a trailing dot; UserError otherwise."""
    name = (hostname or "").strip().lower().rstrip(".")
    if not name:
        raise FieldError("hostname", "Enter a hostname, e.g. web1.example.com.")
    if len(name) > 253:
        raise FieldError("hostname", "A hostname has at most 253 characters.")
    labels = name.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise FieldError("hostname", "A hostname consists of labels of letters, digits and hyphens "
                             "(1 to 63 characters, not starting or ending with a hyphen), separated by dots.")
    if len(labels) > 1 and labels[-1].isdigit():
        raise FieldError("hostname", "A hostname cannot end in a number-only label (that looks like an IP address).")
    return name


def _check_key(key: str) -> str:
    key = (key or "").strip()
    if not key or len(key) > MAX_KEY_LEN:
        raise UserError("The request is missing its reference; reload the page and try again.")
    return key


def _require_money_staff(actor: User, permission: str = "money.adjust") -> None:
    if actor is None or not getattr(actor, "is_staff", False) or not actor.can(permission):
        raise ActionNotAllowed("Only staff with the money permission can do this.")


def _require_orderable(package: Package, cycle: str) -> int:
    if package is None or not package.orderable:
        raise UserError("This package is not available for new orders.")
    if cycle not in CYCLES:
        raise UserError("Choose a billing cycle.")
    price = package.price_cents(cycle)
    if price is None:
        raise UserError(f"This package is not sold with {CYCLE_LABELS[cycle].lower()} billing.")
    return price


# --------------------------------------------------------------------------------------------------------------
# Orders
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OrderQuote:
    package: Package
    cycle: str
    price_cents: int
    balance_cents: int
    starts_at: datetime
    renews_at: datetime

    @property
    def shortfall_cents(self) -> int:
        return max(0, self.price_cents - self.balance_cents)

    @property
    def affordable(self) -> bool:
        return self.shortfall_cents == 0


def quote_order(user: User, package: Package, cycle: str) -> OrderQuote:
    """What an order would cost now, and whether the wallet covers it (nothing is written)."""
    price = _require_orderable(package, cycle)
    now = clock.now()
    return OrderQuote(package=package, cycle=cycle, price_cents=price, balance_cents=ledger.balance_cents(user.id),
                      starts_at=now, renews_at=add_cycle(now, cycle))


def _resolve_image(package: Package, image) -> Image | None:
    if image is None or image == "":
        if package.kind == "vps":
            raise FieldError("image", "Choose an operating system image.")
        return None
    if not isinstance(image, Image):
        column = Image.id if isinstance(image, int) else Image.uuid
        image = db.session.scalar(select(Image).where(column == image))
    if image is None or not image.enabled or image.driver != package.driver:
        raise FieldError("image", "This operating system image is not available for this package.")
    if package.kind == "vps" and image.min_disk_gib > package.disk_gib:
        raise FieldError("image", "This operating system image needs a larger disk than the package has.")
    return image


def _resolve_keys(user: User, ssh_key_ids) -> list[int]:
    """SSH keys by row id or public UUID; every one must belong to ``user``. Returns sorted row ids."""
    wanted = list(dict.fromkeys(ssh_key_ids or []))
    if not wanted:
        return []
    ids = {k for k in wanted if isinstance(k, int) and not isinstance(k, bool)}
    uuids = {str(k) for k in wanted if not isinstance(k, int)}
    keys = db.session.scalars(select(SSHKey).where(
        SSHKey.user_id == user.id, (SSHKey.id.in_(ids)) | (SSHKey.uuid.in_(uuids)))).all()
    if len(keys) != len(wanted):
        raise FieldError("ssh_keys", "One of the selected SSH keys is not in your account.")
    return sorted(k.id for k in keys)


@dataclass(frozen=True)
class OrderDraft:
    """A validated order, not yet paid: what the confirmation page shows and :func:`place_order` pays for."""
    package: Package
    cycle: str
    price_cents: int
    hostname: str
    image: Image | None
    ssh_key_ids: list[int]


def prepare_order(user: User, package: Package, cycle: str, hostname: str, image=None,
                  ssh_key_ids=()) -> OrderDraft:
    """Validate an order without writing anything: package orderable, cycle priced, image enabled and of the
    package's platform, SSH keys owned by ``user``, hostname RFC 1123. Raises UserError with a safe message."""
    price = _require_orderable(package, cycle)
    return OrderDraft(package=package, cycle=cycle, price_cents=price, hostname=normalise_hostname(hostname),
                      image=_resolve_image(package, image), ssh_key_ids=_resolve_keys(user, ssh_key_ids))


def place_order(user: User, package: Package, cycle: str, hostname: str, image=None, ssh_key_ids=(), *,
                key: str) -> Service:
    """Pay for ``package`` from the wallet, create the service in ``pending`` and enqueue its provisioning.

    All or nothing, flushed into the caller's transaction (the caller commits; the provisioning job is dispatched
    after that commit). ``key`` identifies the customer's request
    (a form token or an API Idempotency-Key): a replay returns the service the first call created.
    Raises UserError for invalid input and InsufficientFunds (with the shortfall) when the wallet does not
    cover the price; nothing is created or debited then.
    """
    ledger_key = f"order:{user.uuid}:{_check_key(key)}"
    existing = _replayed_service(ledger_key)
    if existing is not None:
        return existing
    draft = prepare_order(user, package, cycle, hostname, image, ssh_key_ids)
    price, hostname, image, keys = draft.price_cents, draft.hostname, draft.image, draft.ssh_key_ids
    now = clock.now()
    svc_uuid = new_uuid()
    try:
        with db.session.begin_nested():
            svc = Service(uuid=svc_uuid, user_id=user.id, package_id=package.id, kind=package.kind, state=PENDING,
                          hostname=hostname, cycle=cycle, price_cents=price,
                          image_id=image.id if image else None, ssh_key_ids=keys, period_start=now,
                          renews_at=add_cycle(now, cycle))
            db.session.add(svc)
            db.session.flush()
            if package.kind == "dedicated":  # one matching server, reserved before any charge (docs/dedicated.md)
                from .inventory import reserve_for

                reserve_for(svc, package)
            if price > 0:
                entry = ledger.debit(
                    user.id, price, kind="order", key=ledger_key, reference=("service", svc_uuid),
                    actor_type="customer", actor_id=user.id, service_id=svc.id,
                    description=f"Order: {package.name} ({CYCLE_LABELS[cycle].lower()}) for {hostname}")
                if entry.reference_id != svc_uuid:  # the same request committed concurrently
                    raise _Replayed(entry.reference_id)
            log_activity(user.id, "create", f"Ordered {package.name} for {hostname}; it is being set up.", svc.id)
            jobs.enqueue("service.provision", key=f"provision:{svc.uuid}", service=svc, title="Set up server")
            if price == 0:
                _free_order_marker(ledger_key, svc)
    except _Replayed as r:  # the savepoint is rolled back: nothing of this call stays
        return db.session.scalar(select(Service).filter_by(uuid=r.service_uuid))
    except OutOfStock:  # nothing was reserved or charged; staff see the demand (the caller commits it)
        record_demand(user, package)
        raise
    db.session.flush()
    return svc


class _Replayed(Exception):
    def __init__(self, service_uuid: str):
        self.service_uuid = service_uuid


def _replayed_service(ledger_key: str) -> Service | None:
    entry = ledger.find_entry(ledger_key)
    if entry is not None and entry.reference_type == "service":
        return db.session.scalar(select(Service).filter_by(uuid=entry.reference_id))
    op = db.session.scalar(select(jobs.Operation).filter_by(key=f"free-order:{ledger_key}"))
    if op is not None:
        return db.session.get(Service, op.service_id)
    return None


def _free_order_marker(ledger_key: str, svc: Service) -> None:
    """A free package moves no money, so no ledger entry carries the request key: keep it on a no-op marker
    operation instead, so that a replay still finds the service."""
    from .jobs import Operation, SUCCEEDED

    db.session.add(Operation(key=f"free-order:{ledger_key}", kind="billing.free_order", service_id=svc.id,
                             user_id=svc.user_id, state=SUCCEEDED, title="Order", progress_pct=100,
                             progress_text="Done"))


# --------------------------------------------------------------------------------------------------------------
# Package changes
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChangeQuote:
    service: Service
    old_package: Package
    new_package: Package
    old_price_cents: int
    new_price_cents: int
    amount_cents: int  # signed: + the customer pays, - the wallet is credited
    at: datetime
    disk_shrinks: bool

    @property
    def is_upgrade(self) -> bool:
        return self.new_price_cents > self.old_price_cents

    @property
    def remaining_fraction(self) -> float:  # for display only, never for money
        total = (self.service.renews_at - self.service.period_start).total_seconds()
        left = (self.service.renews_at - self.at).total_seconds()
        return max(0.0, min(1.0, left / total)) if total > 0 else 0.0


def change_candidates(service: Service) -> list[Package]:
    """Packages ``service`` can move to: orderable, same kind and driver, priced for its cycle, not its own, with
    room for its operating system image."""
    from .catalog import orderable_packages

    min_disk = service.image.min_disk_gib if service.image is not None else 0
    caps = service.capabilities
    return [p for p in orderable_packages(service.kind)
            if p.id != service.package_id and p.driver == service.package.driver
            and p.price_cents(service.cycle) is not None and p.disk_gib >= min_disk
            and change_capability(service, p) in caps]


def change_capability(service: Service, new_package: Package) -> str:
    """The driver capability moving to ``new_package`` needs: ``rebuild`` for a smaller disk, else ``resize``."""
    return "rebuild" if new_package.disk_gib < service.package.disk_gib else "resize"


def quote_change(service: Service, new_package: Package) -> ChangeQuote:
    """The exact pro-rata amount of moving ``service`` to ``new_package`` now (nothing is written)::

        amount = (new cycle price - current cycle price) x (renews_at - now) / (renews_at - period_start)

    computed exactly and rounded once, half up, to cents (see docs/billing.md).
    """
    if new_package is None or not new_package.orderable:
        raise UserError("This package is not available.")
    if new_package.id == service.package_id:
        raise UserError("The service has this package already.")
    if new_package.kind != service.kind or new_package.driver != service.package.driver:
        raise UserError("The service cannot move to this package (it runs on a different platform).")
    if service.image is not None and service.image.min_disk_gib > new_package.disk_gib:
        raise UserError(f"The operating system of this server needs at least {service.image.min_disk_gib} GiB of "
                        "disk; this package has less.")
    if change_capability(service, new_package) not in service.capabilities:
        raise ActionNotAllowed("The package of this server cannot be changed to this one on its platform."
                               if service.capabilities & {"resize", "rebuild"} else
                               "The package of this server cannot be changed on its platform.")
    new_price = new_package.price_cents(service.cycle)
    if new_price is None:
        raise UserError(f"This package is not sold with {CYCLE_LABELS[service.cycle].lower()} billing.")
    now = clock.now()
    amount = prorata_cents(service.price_cents, new_price, now, service.period_start, service.renews_at)
    return ChangeQuote(service=service, old_package=service.package, new_package=new_package,
                       old_price_cents=service.price_cents, new_price_cents=new_price, amount_cents=amount, at=now,
                       disk_shrinks=new_package.disk_gib < service.package.disk_gib)


def change_package(service: Service, new_package: Package, actor: User, confirm: str | None = None, *,
                   key: str, quoted_cents: int | None = None) -> jobs.Operation:
    """Move ``service`` to ``new_package`` mid-cycle and return the resize (or rebuild) operation.

    Upgrades debit the pro-rata amount (kind ``upgrade``), downgrades credit it (``downgrade_credit``); the renewal
    date stays, the next renewal charges the new package's price for the service's cycle. A smaller disk erases
    the data: it needs ``confirm`` equal to the service's hostname, else UserError and nothing changes. Then the
    service moves to ``resizing`` (``rebuilding`` for a smaller disk) and the job is enqueued, in the same
    transaction as the money. Replaying with the same ``key`` returns the first operation.
    """
    staff = bool(getattr(actor, "is_staff", False))
    if staff:
        if not actor.can("services.manage") and not actor.can("money.adjust"):
            raise ActionNotAllowed("You are not allowed to change packages.")
    elif actor is None or actor.id != service.user_id:
        raise NotFound("Service not found.")
    op_key = f"change:{service.uuid}:{_check_key(key)}"
    replay = db.session.scalar(select(jobs.Operation).filter_by(key=op_key))
    if replay is not None:
        return replay
    require_action(service, "change_package", staff=staff)
    quote = quote_change(service, new_package)
    if quoted_cents is not None:  # a signed quote (core/quotes.py): charge exactly what the customer saw
        from dataclasses import replace

        quote = replace(quote, amount_cents=int(quoted_cents))
    if quote.disk_shrinks and (confirm or "").strip().lower().rstrip(".") != service.hostname.lower():
        raise UserError(f"{new_package.name} has a smaller disk ({new_package.disk_gib} GiB instead of "
                        f"{quote.old_package.disk_gib} GiB): the server will be rebuilt and all its data erased. "
                        f"Type the hostname {service.hostname} to confirm.")
    old_package = quote.old_package
    actor_type = "staff" if staff else "customer"
    to_state = REBUILDING if quote.disk_shrinks else RESIZING
    words = f"{old_package.name} to {new_package.name} for {service.hostname}"
    with db.session.begin_nested():
        if quote.amount_cents > 0:
            ledger.debit(service.user_id, quote.amount_cents, kind="upgrade", key=f"ledger:{op_key}",
                         description=f"Upgrade from {words} (pro-rata until {service.renews_at:%Y-%m-%d})",
                         reference=("service", service.uuid), actor_type=actor_type, actor_id=actor.id,
                         service_id=service.id)
        elif quote.amount_cents < 0:
            ledger.credit(service.user_id, -quote.amount_cents, kind="downgrade_credit", key=f"ledger:{op_key}",
                          description=f"Downgrade from {words} (pro-rata until {service.renews_at:%Y-%m-%d})",
                          reference=("service", service.uuid), actor_type=actor_type, actor_id=actor.id,
                          service_id=service.id)
        if not transition(service, to_state, expect=ACTIVE, package_id=new_package.id,
                          price_cents=quote.new_price_cents):
            raise ActionNotAllowed("The service changed meanwhile; reload the page and try again.")
        if quote.disk_shrinks:
            op = jobs.enqueue("service.rebuild", key=op_key, service=service, title="Change package (rebuild)",
                              payload={"old_package_id": old_package.id, "reason": "package_change"})
        else:
            op = jobs.enqueue("service.resize", key=op_key, service=service, title="Change package",
                              payload={"old_package_id": old_package.id})
        log_activity(service.user_id, "package_change",
                     f"Package changed from {words}"
                     + ("; the server is being rebuilt and its data erased." if quote.disk_shrinks
                        else "; the server is being resized.")
                     + f" Next renewal: {format_cents(quote.new_price_cents)} on {service.renews_at:%Y-%m-%d}.",
                     service.id)
        audit("service.change_package", "service", service.uuid, actor=actor,
              before={"package": old_package.slug, "price_cents": quote.old_price_cents},
              after={"package": new_package.slug, "price_cents": quote.new_price_cents,
                     "prorata_cents": quote.amount_cents, "state": to_state})
    db.session.flush()
    return op


# --------------------------------------------------------------------------------------------------------------
# Staff money actions
# --------------------------------------------------------------------------------------------------------------

def _staff_post(user: User, amount_cents: int, *, kind: str, actor: User, key: str, description: str,
                note: str | None, action: str) -> ledger.LedgerEntry:
    _require_money_staff(actor)
    ledger_key = f"staff:{_check_key(key)}"
    existing = ledger.find_entry(ledger_key)
    if existing is not None:
        return existing
    description = (description or "").strip()
    if not description:
        raise UserError("Give a description the customer will see.")
    if not isinstance(amount_cents, int) or isinstance(amount_cents, bool) or amount_cents == 0:
        raise UserError("Enter an amount other than zero.")
    with db.session.begin_nested():
        entry = ledger.post(user.id, amount_cents, kind=kind, key=ledger_key, description=description[:255],
                            reference=("admin", actor.uuid), actor_type="staff", actor_id=actor.id, note=note)
        audit(action, "user", user.uuid, actor=actor,
              after={"amount_cents": amount_cents, "kind": kind, "entry": entry.uuid,
                     "balance_after_cents": entry.balance_after_cents},
              detail=note or description)
    db.session.flush()
    return entry


def admin_charge(user: User, amount_cents: int, actor: User, description: str, *, key: str,
                 note: str | None = None) -> ledger.LedgerEntry:
    """Staff charge the customer's wallet (refused if the balance does not cover it)."""
    if amount_cents <= 0:
        raise UserError("A charge must be a positive amount.")
    return _staff_post(user, -amount_cents, kind="admin_charge", actor=actor, key=key, description=description,
                       note=note, action="wallet.admin_charge")


def bonus(user: User, amount_cents: int, actor: User, description: str, *, key: str,
          note: str | None = None) -> ledger.LedgerEntry:
    """A bonus credit: it stays in the wallet (not refundable externally)."""
    if amount_cents <= 0:
        raise UserError("A bonus must be a positive amount.")
    return _staff_post(user, amount_cents, kind="bonus", actor=actor, key=key, description=description, note=note,
                       action="wallet.bonus")


def correction(user: User, amount_cents: int, actor: User, reason: str, *, key: str,
               description: str = "Balance correction") -> ledger.LedgerEntry:
    """A signed correction (positive credits, negative debits) with a mandatory staff reason."""
    reason = (reason or "").strip()
    if not reason:
        raise UserError("A correction needs a reason.")
    kind = "correction_credit" if amount_cents > 0 else "correction_debit"
    return _staff_post(user, amount_cents, kind=kind, actor=actor, key=key, description=description, note=reason,
                       action="wallet.correction")


def reverse_entry(entry: ledger.LedgerEntry, actor: User, reason: str) -> ledger.LedgerEntry:
    """Staff reverse a ledger entry once (e.g. a charged-back top-up); see :func:`ledger.reverse`."""
    _require_money_staff(actor)
    existing = ledger.find_entry(f"reversal:{entry.uuid}")
    if existing is not None:
        return existing
    owner = db.session.get(User, ledger.owner_id(entry))
    with db.session.begin_nested():
        rev = ledger.reverse(entry, reason=reason, actor_type="staff", actor_id=actor.id)
        audit("wallet.reversal", "user", owner.uuid, actor=actor,
              after={"entry": entry.uuid, "reversal": rev.uuid, "amount_cents": rev.amount_cents},
              detail=reason)
    db.session.flush()
    return rev


# --------------------------------------------------------------------------------------------------------------
# Refund requests
# --------------------------------------------------------------------------------------------------------------

REFUND_PENDING, REFUND_APPROVED, REFUND_REJECTED = "pending", "approved", "rejected"
REFUND_STATE_LABELS = {REFUND_PENDING: "Waiting for review", REFUND_APPROVED: "Approved",
                       REFUND_REJECTED: "Declined"}


class RefundRequest(db.Model):
    """A customer's request to pay wallet funds back externally. Staff review it by hand; approval records the
    payout in the ledger with the external reference (e.g. a transaction id). Nothing is sent automatically."""

    __tablename__ = "refund_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    amount_cents: Mapped[int] = mapped_column()
    reason: Mapped[str] = mapped_column(Text, default="")  # the customer's words
    payout_details: Mapped[str] = mapped_column(String(500), default="")  # where the customer wants the money
    state: Mapped[str] = mapped_column(String(16), default=REFUND_PENDING, index=True)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
    decided_at: Mapped[datetime | None] = mapped_column()
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    staff_note: Mapped[str | None] = mapped_column(String(1000))  # shown to the customer with the decision
    external_reference: Mapped[str | None] = mapped_column(String(200))
    ledger_entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"))

    user = relationship("User", foreign_keys=[user_id])
    decided_by = relationship("User", foreign_keys=[decided_by_id])
    ledger_entry = relationship("LedgerEntry")

    @property
    def state_label(self) -> str:
        return REFUND_STATE_LABELS.get(self.state, self.state)


def request_refund(user: User, amount_cents: int, reason: str, payout_details: str = "") -> RefundRequest:
    """Queue a refund request for staff review. One pending request at a time, for at most the balance."""
    if not isinstance(amount_cents, int) or amount_cents <= 0:
        raise UserError("Enter the amount you want refunded.")
    reason = (reason or "").strip()
    if not reason:
        raise UserError("Tell us why you want a refund.")
    if db.session.scalar(select(RefundRequest.id).filter_by(user_id=user.id, state=REFUND_PENDING)):
        raise UserError("You have a refund request waiting for review already.")
    from .refunds import refundable_cents

    refundable = refundable_cents(user.id)
    if amount_cents > refundable:
        raise UserError(f"You can request at most {format_cents(refundable)}: only top-ups you have not spent yet "
                        "can be paid back; bonuses and credits stay in your wallet.")
    req = RefundRequest(user_id=user.id, amount_cents=amount_cents, reason=reason[:5000],
                        payout_details=(payout_details or "").strip()[:500])
    db.session.add(req)
    log_activity(user.id, "billing", f"Refund request for {format_cents(amount_cents)} received; our staff will "
                                     "review it.")
    db.session.flush()
    return req


def pending_refunds():
    return select(RefundRequest).filter_by(state=REFUND_PENDING).order_by(RefundRequest.created_at, RefundRequest.id)


def _decide(req: RefundRequest, actor: User, state: str, **values) -> None:
    res = db.session.execute(update(RefundRequest).where(RefundRequest.id == req.id,
                                                         RefundRequest.state == REFUND_PENDING)
                             .values(state=state, decided_at=clock.now(), decided_by_id=actor.id, **values)
                             .execution_options(synchronize_session=False))
    if res.rowcount != 1:
        raise UserError("This refund request has been decided already.")
    db.session.refresh(req)


def approve_refund(req: RefundRequest, actor: User, external_reference: str, note: str = "") -> RefundRequest:
    """Record a refund staff paid out by hand: one ledger debit (kind ``refund_payout``) with the external
    reference. Refused if the wallet no longer covers the amount; the request then stays pending."""
    _require_money_staff(actor, "money.refunds")
    external_reference = (external_reference or "").strip()
    if not external_reference:
        raise UserError("Enter the external reference of the payout (e.g. the transaction id).")
    from .refunds import refundable_cents

    refundable = refundable_cents(req.user_id)
    if req.state == REFUND_PENDING and req.amount_cents > refundable:
        raise UserError(f"Only {format_cents(refundable)} of this wallet is unspent top-up money; the rest is "
                        "wallet credit (bonuses, downgrade credits) that cannot be paid out. Decline the request "
                        "with a note.")
    with db.session.begin_nested():
        _decide(req, actor, REFUND_APPROVED, external_reference=external_reference[:200],
                staff_note=(note or "").strip()[:1000] or None)
        entry = ledger.debit(req.user_id, req.amount_cents, kind="refund_payout", key=f"refund:{req.uuid}",
                             description=f"Refund paid out externally (reference {external_reference})"[:255],
                             reference=("refund", req.uuid),
                             actor_type="staff", actor_id=actor.id,
                             note=f"external reference: {external_reference}"[:500])
        req.ledger_entry_id = entry.id
        audit("refund.approve", "refund_request", req.uuid, actor=actor,
              before={"state": REFUND_PENDING, "balance_cents": entry.balance_after_cents + req.amount_cents},
              after={"state": REFUND_APPROVED, "balance_cents": entry.balance_after_cents,
                     "amount_cents": req.amount_cents, "external_reference": external_reference,
                     "entry": entry.uuid}, detail=note or "")
    db.session.flush()
    return req


def reject_refund(req: RefundRequest, actor: User, note: str) -> RefundRequest:
    """Decline a refund request with a note the customer reads; no money moves."""
    _require_money_staff(actor, "money.refunds")
    note = (note or "").strip()
    if not note:
        raise UserError("Explain the decision in a note; the customer will read it.")
    _decide(req, actor, REFUND_REJECTED, staff_note=note[:1000])
    log_activity(req.user_id, "billing",
                 f"Your refund request for {format_cents(req.amount_cents)} was declined: {note}"[:500])
    audit("refund.reject", "refund_request", req.uuid, actor=actor, detail=note)
    db.session.flush()
    return req


def get_user_refund(user_id: int, uuid: str) -> RefundRequest | None:
    return db.session.scalar(select(RefundRequest).filter_by(user_id=user_id, uuid=uuid))


__all__ = ["OrderQuote", "OrderDraft", "prepare_order", "ChangeQuote", "RefundRequest", "quote_order", "place_order",
           "change_candidates", "quote_change", "change_package", "admin_charge", "bonus", "correction",
           "reverse_entry", "request_refund", "approve_refund", "reject_refund", "pending_refunds",
           "normalise_hostname"]
