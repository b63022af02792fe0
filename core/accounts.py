"""Accounts: customers and staff, roles, SSH keys."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from . import clock
from .db import db, new_uuid
from .errors import FieldError, UserError
from .sealed import SealedString

CUSTOMER_ROLE = "customer"  # the one role that is not staff
ADMIN_ROLE = "admin"  # always holds every permission, whatever its row says
# The staff roles are data: rows of ``staff_roles`` (core/staff_roles.py), the built-in ones (admin, support,
# billing; ``builtin``, never deleted or renamed) next to the custom ones. Each row lists the named permissions
# (``area.action``) it holds; every staff page and action checks one of them. The areas (no dot) group the named
# permissions; an area name in a role's list (roles saved before the named permissions) stands for every
# permission of that area.
AREAS = ("money", "services", "tickets", "approvals", "network", "plugins",
         "customers",  # search customers, their services, wallet and activity
         "audit",  # the audit trail and its CSV export
         "catalogue",  # packages, prices and OS images
         "staff",  # staff accounts, roles, two-factor resets
         "status")  # the public status page
# name -> one line for the role editor
NAMED_PERMISSIONS: dict[str, str] = {
    "money.view": "See wallets, ledgers, payments and refund requests",
    "money.adjust": "Credit or debit a wallet, reverse an entry, reconcile or credit a payment",
    "money.refunds": "Approve or reject refund requests",
    "services.view": "See every service, its infrastructure, operations and audit trail",
    "services.power": "Start, stop and restart a server (when its power state allows it)",
    "services.manage": "Suspend, unsuspend, renew from the wallet, terminate or cancel a service",
    "services.force": "Force power off, restart, suspend, unsuspend, terminate; mark work failed",
    "services.move": "Move a service to another node of its driver",
    "services.operations": "See failed and stuck work; retry or abandon it",
    "services.inventory": "Dedicated server inventory: add, edit, assign, BMC settings",
    "services.datacenter": "Datacenter tasks: see, start, note and finish them",
    "tickets.view": "Read the support tickets",
    "tickets.reply": "Reply to and close tickets",
    "approvals.iso": "Approve or reject uploaded ISO images",
    "approvals.rdns": "Approve or reject reverse DNS requests",
    "network.view": "See IP pools and their addresses",
    "network.manage": "Create and change IP pools, addresses and DNS backends",
    "customers.view": "Search customers; see their services, wallet, tickets and activity",
    "customers.view_as": "Open a customer's dashboard read-only (the customer is told)",
    "customers.lock": "Lock or unlock an account (ends its sessions)",
    "audit.view": "Read and export the audit trail",
    "catalogue.packages": "Create and change packages and their prices",
    "catalogue.images": "Create and change OS images",
    "staff.accounts": "Invite staff, change their role, reset their two-factor",
    "staff.roles": "Create, change and delete custom roles; change the support and billing roles",
    "plugins.view": "See installed plugins and drivers",
    "plugins.nodes": "Add and change hypervisor nodes, test them, set their placement",
    "plugins.images": "Manage driver images (templates) on the nodes",
    "plugins.gateways": "Configure payment gateways (API keys, webhook secrets)",
    "plugins.branding": "Change the branding and the help pages",
    "plugins.webhooks": "Manage outgoing webhooks and redeliver them",
    "status.manage": "Edit the status page: components, incidents, maintenance, probes",
}
# Every name a role may list: the areas and the named permissions.
PERMISSION_NAMES = (*AREAS, *NAMED_PERMISSIONS)
# The built-in roles as a new database gets them (core.staff_roles.ensure_builtin_roles and the migration that
# adds them seed these); after that the rows decide, and staff with ``staff.roles`` change support and billing.
DEFAULT_ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    ADMIN_ROLE: tuple(NAMED_PERMISSIONS),
    "support": ("services.view", "services.power", "services.manage", "services.force", "services.move",
                "services.operations", "services.inventory", "services.datacenter", "tickets.view",
                "tickets.reply", "approvals.iso", "approvals.rdns", "customers.view", "customers.view_as",
                "customers.lock", "audit.view", "status.manage"),
    "billing": ("money.view", "money.adjust", "money.refunds", "customers.view", "customers.view_as", "audit.view"),
}


def area_of(permission: str) -> str:
    return permission.split(".", 1)[0]


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="customer")
    active: Mapped[bool] = mapped_column(default=True)
    totp_secret: Mapped[str | None] = mapped_column(SealedString)  # stored sealed (core/sealed.py)
    # Bumped to end every login session of the account (see core/sessions.py).
    session_generation: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())

    ssh_keys = relationship("SSHKey", back_populates="user", cascade="all, delete-orphan", lazy="selectin")

    def get_id(self) -> str:  # Flask-Login: the public UUID, never the row id
        return self.uuid

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_staff(self) -> bool:
        if self.role == ADMIN_ROLE:
            return True
        if self.role == CUSTOMER_ROLE:
            return False
        from .staff_roles import role_permissions  # a row of staff_roles (core/staff_roles.py)

        return role_permissions(self.role) is not None

    def can(self, permission: str) -> bool:
        """Whether the user's role holds ``permission`` (a named permission; an area: every named permission of
        it). Admin holds everything; a customer nothing staff-only."""
        if self.role == ADMIN_ROLE:
            return True
        if self.role == CUSTOMER_ROLE:
            return False
        from .staff_roles import role_grants

        granted = role_grants(self.role) or frozenset()
        if "." in permission:
            return permission in granted
        named = [n for n in NAMED_PERMISSIONS if area_of(n) == permission]
        return bool(named) and all(n in granted for n in named)

    def set_password(self, password: str) -> None:
        if len(password) < 10:
            raise UserError("Passwords need at least 10 characters.")
        self.password_hash = generate_password_hash(password, method="scrypt")

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


def create_user(email: str, password: str, role: str = "customer", name: str = "") -> User:
    email = normalise_email(email)
    if role != CUSTOMER_ROLE:
        from .staff_roles import role_permissions

        if role_permissions(role) is None:
            raise UserError(f"Unknown role {role!r}.")
    if db.session.scalar(db.select(User).filter_by(email=email)):
        raise UserError("An account with this e-mail address exists already.")
    user = User(email=email, role=role, name=name)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    return user


def normalise_email(email: str) -> str:
    email = (email or "").strip().lower()
    local, _, domain = email.partition("@")
    if not local or "." not in domain or " " in email or len(email) > 254:
        raise UserError("Enter a valid e-mail address.")
    return email


SSH_KEY_TYPES = {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"}


def parse_ssh_public_key(text: str) -> tuple[str, str, str]:
    """Validate an OpenSSH public key line; return (type, base64 blob, SHA256 fingerprint)."""
    parts = (text or "").strip().split()
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise FieldError("public_key",
                         "This is not an OpenSSH public key (it should start with ssh-ed25519, ssh-rsa or ecdsa-…).")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (n,) = struct.unpack(">I", blob[:4])
        inner_type = blob[4:4 + n].decode()
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise FieldError("public_key", "The key data is damaged: copy the whole line of your .pub file.") from None
    if inner_type != parts[0]:
        raise FieldError("public_key", "The key type does not match the key data.")
    if parts[0] == "ssh-rsa" and len(blob) < 270:
        raise FieldError("public_key", "RSA keys shorter than 2048 bits are refused.")
    fp = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return parts[0], parts[1], fp


class SSHKey(db.Model):
    __tablename__ = "ssh_keys"
    __table_args__ = (UniqueConstraint("user_id", "fingerprint"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())

    user = relationship("User", back_populates="ssh_keys")


def add_ssh_key(user: User, name: str, text: str) -> SSHKey:
    name = (name or "").strip()
    if not name or len(name) > 80:
        raise FieldError("name", "Give the key a name of at most 80 characters.")
    ktype, blob, fp = parse_ssh_public_key(text)
    if any(k.fingerprint == fp for k in user.ssh_keys):
        raise FieldError("public_key", "This key is in your account already.")
    key = SSHKey(user=user, name=name, public_key=f"{ktype} {blob} {name}", fingerprint=fp)
    db.session.add(key)
    db.session.flush()
    return key
