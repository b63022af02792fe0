"""Driver interfaces: the primitives a plugin implements. Core owns everything around them (jobs, retries,
locks, state transitions, billing); a driver only talks to its infrastructure.

Every driver class carries:
- ``name``: a stable key stored in the database (``"kvm"``); never rename it.
- ``label``: a short user-visible name (``"KVM (libvirt)"``).
- ``settings``: a list of :class:`Setting` describing its configuration; it drives the admin form and validation.
- ``capabilities``: names of optional primitives it implements (see each interface's ``OPTIONAL``).

Drivers raise :class:`~hostbay.core.errors.TransientDriverError` for conditions a retry may cure and
:class:`~hostbay.core.errors.FatalDriverError` for ones it will not.
"""

from __future__ import annotations

import abc
import enum
import ipaddress
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, ClassVar

from .errors import SettingsError


@dataclass(frozen=True)
class Setting:
    """One declarative configuration field of a driver."""

    key: str
    label: str
    type: str = "str"  # str, int, bool, secret, choice, url
    required: bool = True
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()

    def clean(self, raw: Any) -> Any:
        if raw is None or raw == "":
            if self.required and self.default is None:
                raise ValueError("is required")
            return self.default
        if self.type == "int":
            try:
                return int(raw)
            except (TypeError, ValueError):
                raise ValueError("must be a whole number") from None
        if self.type == "bool":
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("must be true or false")
        if self.type == "choice" and raw not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}")
        if self.type == "url" and "://" not in str(raw):
            raise ValueError("must be a URL")
        return str(raw)


class Driver(abc.ABC):
    name: ClassVar[str]
    label: ClassVar[str]
    settings: ClassVar[list[Setting]] = []
    capabilities: ClassVar[frozenset[str]] = frozenset()
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: dict[str, Any] | None = None):
        self.config = self.clean_settings(config or {})

    @classmethod
    def clean_settings(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Validate raw settings (from a form or the database); raise SettingsError listing every bad field."""
        errors, out = {}, {}
        for s in cls.settings:
            try:
                out[s.key] = s.clean(values.get(s.key))
            except ValueError as exc:
                errors[s.key] = f"{s.label} {exc}"
        if errors:
            raise SettingsError(errors)
        from .logs import register_secret

        for s in cls.settings:  # a secret setting never reaches a log line, whatever logs it
            if s.type == "secret":
                register_secret(out.get(s.key))
        return out

    def validate(self) -> None:
        """Check that the configured infrastructure answers (admin 'test connection'). Raise DriverError if not."""

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities


# --------------------------------------------------------------------------------------------------------------
# Virtualization
# --------------------------------------------------------------------------------------------------------------

class PowerState(str, enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    MISSING = "missing"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Address:
    address: str
    prefix: int
    gateway: str | None = None

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version


@dataclass(frozen=True)
class ServerSpec:
    """What a virtual server should be. ``node`` holds the node's cleaned driver settings."""

    uuid: str
    hostname: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    image: dict[str, Any]  # {"name": ..., "source": driver-specific template reference, "os": ...}
    node: dict[str, Any]
    ssh_keys: tuple[str, ...] = ()
    addresses: tuple[Address, ...] = ()
    nameservers: tuple[str, ...] = ()
    port_speed_mbit: int | None = None
    root_password: str | None = None
    # Where the guest reports that it finished its first boot (see core/readiness.py): a single-use signed URL
    # the driver hands to the guest (cloud-init phone_home for the KVM driver). None: nobody waits for a report.
    ready_url: str | None = None


@dataclass(frozen=True)
class ConsoleTarget:
    """Where the console proxy connects. Never shown to a customer."""

    host: str
    port: int
    protocol: str = "vnc-websocket"  # or "vnc" (raw RFB over TCP) or "websocket" (an upstream the proxy opens)
    path: str = "/"
    password: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Progress = Callable[[int, str], None]  # (percent 0..100, customer-safe text)


class VirtDriver(Driver):
    """A virtualization backend (KVM/libvirt, Proxmox). ``ref`` is the dict ``create`` returned, stored in the
    service's admin-only infrastructure reference."""

    # "readiness": the driver hands ``spec.ready_url`` to the guest, which reports to it after its first boot
    # "move": the driver moves a server to another node of the same driver (staff "Move", core/move.py)
    OPTIONAL = frozenset({"resize", "rebuild", "iso", "console", "suspend", "readiness", "move"})

    @abc.abstractmethod
    def create(self, spec: ServerSpec, progress: Progress) -> dict[str, Any]:
        """Create and start the server. Idempotent: if a server for ``spec.uuid`` already exists, finish it and
        return its reference rather than creating a second one."""

    @abc.abstractmethod
    def status(self, ref: dict[str, Any]) -> PowerState: ...

    @abc.abstractmethod
    def start(self, ref: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def stop(self, ref: dict[str, Any], timeout: float = 60) -> None:
        """Graceful shutdown, forced off after ``timeout`` seconds. Stopping a stopped server is not an error."""

    @abc.abstractmethod
    def restart(self, ref: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def reinstall(self, ref: dict[str, Any], spec: ServerSpec, progress: Progress) -> dict[str, Any]:
        """Replace the system disk with a fresh one from ``spec.image``; returns the (possibly new) reference."""

    @abc.abstractmethod
    def delete(self, ref: dict[str, Any]) -> None:
        """Remove the server and every volume it owned. Deleting a missing server is not an error."""

    # optional -------------------------------------------------------------------------------------------------
    def resize(self, ref: dict[str, Any], spec: ServerSpec, progress: Progress) -> dict[str, Any]:
        """Grow vCPU, memory and disk to ``spec`` (capability ``resize``)."""
        raise NotImplementedError

    def rebuild(self, ref: dict[str, Any], spec: ServerSpec, progress: Progress) -> dict[str, Any]:
        """Recreate with a smaller disk; data is erased (capability ``rebuild``)."""
        raise NotImplementedError

    def suspend(self, ref: dict[str, Any]) -> None:
        """Make the server unusable for its owner (capability ``suspend``; default: stop)."""
        self.stop(ref)

    def unsuspend(self, ref: dict[str, Any]) -> None:
        self.start(ref)

    def mount_iso(self, ref: dict[str, Any], iso_path: str) -> None:
        """Insert an ISO into the CD-ROM and boot from it next (capability ``iso``)."""
        raise NotImplementedError

    def eject_iso(self, ref: dict[str, Any]) -> None:
        raise NotImplementedError

    def console_target(self, ref: dict[str, Any]) -> ConsoleTarget:
        """Where the console of a running server is (capability ``console``)."""
        raise NotImplementedError

    def move(self, ref: dict[str, Any], spec: ServerSpec, target: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Move the server from its node (``spec.node``, the source's cleaned settings) to the node whose cleaned
        settings are ``target``, keeping its disk and addresses, and leave it running on the target; returns the
        reference on the target (capability ``move``). Idempotent: a retry after a crash finishes the move, and at
        the end exactly one server exists for ``spec.uuid``, on the target."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------------------
# Power (dedicated servers)
# --------------------------------------------------------------------------------------------------------------

class PowerDriver(Driver):
    """Out-of-band power control of a physical server (IPMI, Redfish). ``target`` holds the hardware item's
    cleaned settings (BMC address, credentials)."""

    OPTIONAL = frozenset({"boot_device"})

    @abc.abstractmethod
    def power_state(self, target: dict[str, Any]) -> PowerState: ...

    @abc.abstractmethod
    def power_on(self, target: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def power_off(self, target: dict[str, Any], soft: bool = False) -> None: ...

    @abc.abstractmethod
    def power_cycle(self, target: dict[str, Any]) -> None: ...

    def set_boot_device(self, target: dict[str, Any], device: str, efi: bool = False) -> None:
        """'pxe', 'disk' or 'cdrom' for the next boot only, in EFI mode when ``efi`` (capability
        ``boot_device``). Verified by reading it back; an unknown device is a DriverError."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------------------
# Payments
# --------------------------------------------------------------------------------------------------------------

class PaymentStatus(str, enum.Enum):
    PENDING = "pending"          # created, nothing paid yet
    CONFIRMING = "confirming"    # paid, waiting for confirmations
    SETTLED = "settled"          # confirmed: credit the wallet
    UNDERPAID = "underpaid"      # expired or settled with less than asked
    EXPIRED = "expired"
    INVALID = "invalid"


@dataclass(frozen=True)
class Checkout:
    provider_ref: str            # the provider's invoice/charge id
    checkout_url: str
    status: PaymentStatus = PaymentStatus.PENDING


@dataclass(frozen=True)
class PaymentState:
    provider_ref: str
    status: PaymentStatus
    amount_received: Decimal | None = None  # USD actually received, when the provider says
    raw_status: str = ""


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook delivery. ``event_id`` deduplicates deliveries; ``provider_ref`` names the payment."""

    event_id: str
    provider_ref: str
    status: PaymentStatus | None
    amount_received: Decimal | None = None
    raw_type: str = ""
    # The reference ``fetch`` needs when it differs from ``provider_ref`` (e.g. a payment id under an invoice).
    fetch_ref: str | None = None


class PaymentGateway(Driver):
    OPTIONAL = frozenset({"refetch"})

    @abc.abstractmethod
    def create_checkout(self, amount: Decimal, reference: str, return_url: str, notify_url: str) -> Checkout:
        """Create the provider's invoice for ``amount`` USD; ``reference`` is hostbay's payment id."""

    @abc.abstractmethod
    def parse_webhook(self, headers: dict[str, str], raw_body: bytes) -> WebhookEvent:
        """Verify the signature over ``raw_body`` (constant-time) and parse it. Raise SignatureError if forged."""

    def fetch(self, provider_ref: str) -> PaymentState:
        """Authoritative status from the provider (capability ``refetch``)."""
        raise NotImplementedError


class SignatureError(Exception):
    """A webhook whose signature does not verify."""


# --------------------------------------------------------------------------------------------------------------
# Network filters and DNS
# --------------------------------------------------------------------------------------------------------------

class NetworkFilter(Driver):
    """Keeps a server's traffic to its allocated addresses. ``drivers`` names the VirtDriver(s) it serves."""

    drivers: ClassVar[frozenset[str]] = frozenset()

    @abc.abstractmethod
    def apply(self, virt: VirtDriver, ref: dict[str, Any], addresses: list[Address]) -> None:
        """Make ``addresses`` the only ones the server may send from. Idempotent."""


class DnsBackend(Driver):
    """Applies reverse-DNS records."""

    @abc.abstractmethod
    def set_ptr(self, address: str, hostname: str | None) -> None:
        """Set (or with ``None`` remove) the PTR record of ``address``."""

    def resolve(self, hostname: str) -> list[str]:
        """Forward addresses of ``hostname`` (for the 'forward must match' policy)."""
        import socket

        try:
            return sorted({ai[4][0] for ai in socket.getaddrinfo(hostname, None)})
        except OSError:
            return []


# The methods a driver must override to advertise each optional capability (the registry fails a driver that
# advertises a capability without them; core offers an action only when the driver advertises its capability).
CAPABILITY_METHODS: dict[type, dict[str, tuple[str, ...]]] = {
    VirtDriver: {"resize": ("resize",), "rebuild": ("rebuild",), "iso": ("mount_iso", "eject_iso"),
                 "console": ("console_target",), "suspend": ("suspend",),
                 "move": ("move",)},
    PowerDriver: {"boot_device": ("set_boot_device",)},
    PaymentGateway: {"refetch": ("fetch",)},
}

INTERFACES = {
    "virt": VirtDriver,
    "power": PowerDriver,
    "payment": PaymentGateway,
    "network_filter": NetworkFilter,
    "dns": DnsBackend,
}
