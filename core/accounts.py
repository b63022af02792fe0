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

ROLES = ("customer", "admin", "support", "billing")
STAFF_ROLES = ("admin", "support", "billing")
# Which staff roles may do what; "admin" may do everything. The areas (no dot) group the named permissions
# (``area.action``) that every staff page and action checks; a built-in role holds a permission when its roles
# name it. A custom role (core/staff_roles.py) holds exactly the named permissions it lists (an area name in its
# list, from before the named permissions, stands for every permission of that area).
AREAS = {
    "money": ("admin", "billing"),
    "services": ("admin", "support"),
    "tickets": ("admin", "support"),
    "approvals": ("admin", "support"),
    "network": ("admin",),
    "plugins": ("admin",),
    "customers": ("admin", "support", "billing"),  # search customers, their services, wallet and activity
    "audit": ("admin", "support", "billing"),  # the audit trail and its CSV export
    "catalogue": ("admin",),  # packages, prices and OS images
    "staff": ("admin",),  # staff accounts, roles, two-factor resets
    "status": ("admin", "support"),  # the public status page
}
# name -> (the built-in roles that hold it, one line for the role editor)
NAMED_PERMISSIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "money.view": (AREAS["money"], "See wallets, ledgers, payments and refund requests"),
    "money.adjust": (AREAS["money"], "Credit or debit a wallet, reverse an entry, reconcile or credit a payment"),
    "money.refunds": (AREAS["money"], "Approve or reject refund requests"),
    "services.view": (AREAS["services"], "See every service, its infrastructure, operations and audit trail"),
    "services.power": (AREAS["services"], "Start, stop and restart a server (when its power state allows it)"),
    "services.manage": (AREAS["services"], "Suspend, unsuspend, renew from the wallet, terminate or cancel a service"),
    "services.force": (AREAS["services"], "Force power off, restart, suspend, unsuspend, terminate; mark work failed"),
    "services.move": (AREAS["services"], "Move a service to another node of its driver"),
    "services.operations": (AREAS["services"], "See failed and stuck work; retry or abandon it"),
    "services.inventory": (AREAS["services"], "Dedicated server inventory: add, edit, assign, BMC settings"),
    "services.datacenter": (AREAS["services"], "Datacenter tasks: see, start, note and finish them"),
    "tickets.view": (AREAS["tickets"], "Read the support tickets"),
    "tickets.reply": (AREAS["tickets"], "Reply to and close tickets"),
    "approvals.iso": (AREAS["approvals"], "Approve or reject uploaded ISO images"),
    "approvals.rdns": (AREAS["approvals"], "Approve or reject reverse DNS requests"),
    "network.view": (AREAS["network"], "See IP pools and their addresses"),
    "network.manage": (AREAS["network"], "Create and change IP pools, addresses and DNS backends"),
    "customers.view": (AREAS["customers"], "Search customers; see their services, wallet, tickets and activity"),
    "customers.view_as": (AREAS["customers"], "Open a customer's dashboard read-only (the customer is told)"),
    "customers.lock": (AREAS["services"], "Lock or unlock an account (ends its sessions)"),
    "audit.view": (AREAS["audit"], "Read and export the audit trail"),
    "catalogue.packages": (AREAS["catalogue"], "Create and change packages and their prices"),
    "catalogue.images": (AREAS["catalogue"], "Create and change OS images"),
    "staff.accounts": (AREAS["staff"], "Invite staff, change their role, reset their two-factor"),
    "staff.roles": (AREAS["staff"], "Create, change and delete custom roles"),
    "plugins.view": (AREAS["plugins"], "See installed plugins and drivers"),
    "plugins.nodes": (AREAS["plugins"], "Add and change hypervisor nodes, test them, set their placement"),
    "plugins.images": (AREAS["plugins"], "Manage driver images (templates) on the nodes"),
    "plugins.gateways": (AREAS["plugins"], "Configure payment gateways (API keys, webhook secrets)"),
    "plugins.branding": (AREAS["plugins"], "Change the branding and the help pages"),
    "plugins.webhooks": (AREAS["plugins"], "Manage outgoing webhooks and redeliver them"),
    "status.manage": (AREAS["status"], "Edit the status page: components, incidents, maintenance, probes"),
}
# Every permission name (areas and named permissions) -> the built-in roles that hold it.
PERMISSIONS = {**AREAS, **{name: roles for name, (roles, _) in NAMED_PERMISSIONS.items()}}


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
        if self.role in STAFF_ROLES:
            return True
        if self.role in ROLES:
            return False
        from .staff_roles import custom_permissions  # a custom staff role (core/staff_roles.py)

        return custom_permissions(self.role) is not None

    def can(self, permission: str) -> bool:
        if self.role == "admin" or self.role in PERMISSIONS.get(permission, ()):
            return True
        if self.role in ROLES:
            return False
        from .staff_roles import custom_permissions

        held = custom_permissions(self.role) or ()
        return permission in held or ("." in permission and area_of(permission) in held)

    def set_password(self, password: str) -> None:
        if len(password) < 10:
            raise UserError("Passwords need at least 10 characters.")
        self.password_hash = generate_password_hash(password, method="scrypt")

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


def create_user(email: str, password: str, role: str = "customer", name: str = "") -> User:
    email = normalise_email(email)
    if role not in ROLES:
        from .staff_roles import custom_permissions

        if custom_permissions(role) is None:
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
