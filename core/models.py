"""Imports every model module so the metadata (migrations, create_all) is complete. Add new model modules here."""

from .accounts import SSHKey, User  # noqa: F401
from .activity import ActivityEntry, AuditEntry  # noqa: F401
from .catalog import Image, Node, Package, PackagePrice  # noqa: F401
from .jobs import Operation  # noqa: F401
from .ledger import LedgerEntry, Wallet  # noqa: F401
from .services import Service  # noqa: F401
from .lifecycle import NodeReservation  # noqa: F401
from .notices import Notice  # noqa: F401
