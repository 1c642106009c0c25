"""The size of each customer's last top-up, kept on the user for the low-balance warning

Revision ID: 0012
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None

# The sources that top a balance up, as billing_site.credits.TOP_UP_SOURCES then.
TOP_UP_SOURCES = "('pack', 'monthly', 'free', 'admin')"


def upgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_top_up_credits", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE users SET last_top_up_credits = ("
        " SELECT credit_lots.credits_granted FROM credit_lots"
        " WHERE credit_lots.user_id = users.id"
        f" AND credit_lots.source IN {TOP_UP_SOURCES}"
        " ORDER BY credit_lots.created_at DESC, credit_lots.id DESC LIMIT 1)"
    )


def downgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("last_top_up_credits")
