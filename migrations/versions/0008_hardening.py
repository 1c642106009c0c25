"""Hardening: session versions, email verification and look-alike skeletons, 64-bit credits, site settings

Revision ID: 0008
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from billing_site.lookalikes import skeleton

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

BIG_COLUMNS = {
    "users": ["balance"],
    "credit_lots": ["credits_granted", "credits_remaining"],
    "ledger_entries": ["delta", "balance_after"],
}


def upgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("session_version", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("email_verified_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("email_skeleton", sa.String(length=254), nullable=True))
        batch_op.create_index(batch_op.f("ix_users_email_skeleton"), ["email_skeleton"])
    _backfill_users()
    for table, columns in BIG_COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.alter_column(column, existing_type=sa.Integer(), type_=sa.BigInteger())
    op.create_table(
        "site_settings",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_site_settings")),
    )


def _backfill_users():
    # Accounts made before verification existed keep their free credits.
    connection = op.get_bind()
    users = sa.table(
        "users",
        sa.column("id", sa.Integer()),
        sa.column("email", sa.String()),
        sa.column("email_skeleton", sa.String()),
        sa.column("email_verified_at", sa.DateTime(timezone=True)),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    rows = connection.execute(sa.select(users.c.id, users.c.email)).all()
    for user_id, email in rows:
        connection.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(email_skeleton=skeleton(email), email_verified_at=users.c.created_at)
        )


def downgrade():
    op.drop_table("site_settings")
    for table, columns in BIG_COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.alter_column(column, existing_type=sa.BigInteger(), type_=sa.Integer())
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_email_skeleton"))
        batch_op.drop_column("email_skeleton")
        batch_op.drop_column("email_verified_at")
        batch_op.drop_column("session_version")
