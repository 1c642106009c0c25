"""The webhook inbox becomes the worker's queue; worker heartbeats; scheduled job runs

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

DUE = "status IN ('queued', 'retrying')"


def upgrade():
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("outcome", sa.String(length=255), nullable=True))
        batch_op.create_index(
            "ix_stripe_events_due",
            ["next_attempt_at"],
            unique=False,
            postgresql_where=sa.text(DUE),
            sqlite_where=sa.text(DUE),
        )
    # Rows the old synchronous webhook left undone become due now.
    op.execute(
        "UPDATE stripe_events SET status = CASE status WHEN 'failed' THEN 'retrying' "
        "ELSE 'queued' END, next_attempt_at = CURRENT_TIMESTAMP "
        "WHERE status IN ('failed', 'received')"
    )
    op.create_table(
        "worker_heartbeats",
        sa.Column("worker_id", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_event_id", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("worker_id"),
    )
    with op.batch_alter_table("worker_heartbeats", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_worker_heartbeats_last_seen_at"), ["last_seen_at"], unique=False
        )
    op.create_table(
        "job_runs",
        sa.Column("job", sa.String(length=100), nullable=False),
        sa.Column("slot", sa.BigInteger(), nullable=False),
        sa.Column("worker_id", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("job", "slot"),
    )


def downgrade():
    op.drop_table("job_runs")
    with op.batch_alter_table("worker_heartbeats", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_worker_heartbeats_last_seen_at"))
    op.drop_table("worker_heartbeats")
    op.execute(
        "UPDATE stripe_events SET status = CASE status WHEN 'queued' THEN 'received' "
        "ELSE 'failed' END WHERE status IN ('queued', 'retrying', 'dead')"
    )
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_index("ix_stripe_events_due")
        batch_op.drop_column("outcome")
        batch_op.drop_column("next_attempt_at")
