"""built-in staff roles as rows of staff_roles

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 00:00:00

The roles admin, support and billing become rows of ``staff_roles`` (``builtin`` true), seeded with the
permissions they held when they were a constant in code (a frozen copy: later changes to the defaults in
``core/accounts.py::DEFAULT_ROLE_PERMISSIONS`` need a migration of their own for existing databases).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

NAMED = (
    "money.view", "money.adjust", "money.refunds", "services.view", "services.power", "services.manage",
    "services.force", "services.move", "services.operations", "services.inventory", "services.datacenter",
    "tickets.view", "tickets.reply", "approvals.iso", "approvals.rdns", "network.view", "network.manage",
    "customers.view", "customers.view_as", "customers.lock", "audit.view", "catalogue.packages",
    "catalogue.images", "staff.accounts", "staff.roles", "plugins.view", "plugins.nodes", "plugins.images",
    "plugins.gateways", "plugins.branding", "plugins.webhooks", "status.manage",
)
BUILTIN = {
    "admin": NAMED,
    "support": ("services.view", "services.power", "services.manage", "services.force", "services.move",
                "services.operations", "services.inventory", "services.datacenter", "tickets.view",
                "tickets.reply", "approvals.iso", "approvals.rdns", "customers.view", "customers.view_as",
                "customers.lock", "audit.view", "status.manage"),
    "billing": ("money.view", "money.adjust", "money.refunds", "customers.view", "customers.view_as", "audit.view"),
}


def upgrade():
    with op.batch_alter_table('staff_roles') as batch:
        batch.add_column(sa.Column('builtin', sa.Boolean(), server_default=sa.false(), nullable=False))
    roles = sa.table('staff_roles', sa.column('name', sa.String), sa.column('label', sa.String),
                     sa.column('permissions', sa.JSON), sa.column('builtin', sa.Boolean))
    conn = op.get_bind()
    present = set(conn.execute(sa.select(roles.c.name).where(roles.c.name.in_(BUILTIN))).scalars())
    if present:
        conn.execute(roles.update().where(roles.c.name.in_(present)).values(builtin=True))
    rows = [{"name": name, "label": name.capitalize(), "permissions": sorted(perms), "builtin": True}
            for name, perms in BUILTIN.items() if name not in present]
    if rows:
        op.bulk_insert(roles, rows)


def downgrade():
    roles = sa.table('staff_roles', sa.column('builtin', sa.Boolean))
    op.execute(roles.delete().where(roles.c.builtin == sa.true()))
    with op.batch_alter_table('staff_roles') as batch:
        batch.drop_column('builtin')
