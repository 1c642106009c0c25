"""A downgrade scheduled for the period end, kept on the subscription

Revision ID: 0011
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scheduled_tier", sa.String(length=20), nullable=True))
        batch_op.add_column(
            sa.Column("scheduled_change_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("stripe_schedule_id", sa.String(length=255), nullable=True))


def downgrade():
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("stripe_schedule_id")
        batch_op.drop_column("scheduled_change_at")
        batch_op.drop_column("scheduled_tier")
