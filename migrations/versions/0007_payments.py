"""Orders become the payment record: what Stripe took, invoices, renewals

Revision ID: 0007
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expected_amount_cents", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("amount_subtotal_cents", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("amount_discount_cents", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("amount_tax_cents", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("promotion_code", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("stripe_invoice_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("stripe_customer_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("hosted_invoice_url", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("receipt_url", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("period_start", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("period_end", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("description", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("customer_notice", sa.Text(), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_orders_stripe_invoice_id"), ["stripe_invoice_id"]
        )
        batch_op.create_index(
            batch_op.f("ix_orders_stripe_customer_id"), ["stripe_customer_id"], unique=False
        )
    # Existing orders expected exactly what they were booked at.
    op.execute("UPDATE orders SET expected_amount_cents = amount_cents")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.alter_column("expected_amount_cents", nullable=False)
        batch_op.alter_column("amount_discount_cents", server_default=None)
        batch_op.alter_column("amount_tax_cents", server_default=None)


def downgrade():
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_stripe_customer_id"))
        batch_op.drop_constraint(batch_op.f("uq_orders_stripe_invoice_id"), type_="unique")
        for column in (
            "customer_notice",
            "description",
            "period_end",
            "period_start",
            "receipt_url",
            "hosted_invoice_url",
            "stripe_customer_id",
            "stripe_invoice_id",
            "promotion_code",
            "amount_tax_cents",
            "amount_discount_cents",
            "amount_subtotal_cents",
            "expected_amount_cents",
        ):
            batch_op.drop_column(column)
