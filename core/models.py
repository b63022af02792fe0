"""Imports every model module so the metadata (migrations, create_all) is complete. Add new model modules here."""

from .accounts import SSHKey, User  # noqa: F401
from .activity import ActivityEntry, AuditEntry  # noqa: F401
from .catalog import Image, Node, Package, PackagePrice  # noqa: F401
from .jobs import Operation  # noqa: F401
from .ledger import LedgerEntry, Wallet  # noqa: F401
from .services import Service  # noqa: F401
from .billing import RefundRequest  # noqa: F401
from .credentials import ApiToken, RecoveryCode, TotpState  # noqa: F401
from .tickets import Ticket, TicketMessage  # noqa: F401
from .console import ConsoleToken  # noqa: F401
from .iso import IsoImage, IsoMount, IsoQuota  # noqa: F401
from .ipam_models import IpAddress, IpPool  # noqa: F401
from .rdns import DnsBackendConfig, RdnsRequest  # noqa: F401
from .payments import GatewayConfig, Payment, WebhookDelivery  # noqa: F401
from .placement import NodeReservation  # noqa: F401
from .notices import Notice  # noqa: F401
from .power import PowerReading  # noqa: F401
from .idempotency import IdempotencyRecord  # noqa: F401
from .webhooks import OutgoingDelivery, WebhookEndpoint  # noqa: F401
from .numbering import ReservedNumber  # noqa: F401
from .inventory import HardwareServer  # noqa: F401
from .dctasks import DatacenterTask  # noqa: F401
from .dedicated import InstallRequest  # noqa: F401
from .readiness import ReadinessCheck  # noqa: F401
from .staff_roles import StaffRole  # noqa: F401
from .branding import BrandSettings, HelpEntry  # noqa: F401
