"""Batch runs are records: one row per run of a scheduled (or hand-run) batch, and the inputs each run took.

``batch_runs`` holds one row per (batch, slot), so that a slot runs once however many daemons share the store,
with the holder's name and lease like job claims; ``batch_run_inputs`` names each input a run took and the job
it queued for it, so that a run cut off by a crash resumes without queueing anything twice.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import JSON, Boolean, Column, Float, ForeignKey, Integer, String, Text, UniqueConstraint

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "batch_runs",
        Column("id", Integer, primary_key=True),
        Column("batch", String(128), nullable=False),
        Column("slot", Float, nullable=False),
        Column("status", String(16), nullable=False),
        Column("paths", JSON, nullable=False),
        Column("reprocess", Boolean, nullable=False),
        Column("owner", String(200)),
        Column("lease_until", Float),
        Column("started_at", Float, nullable=False),
        Column("finished_at", Float),
        Column("resumed", Integer, nullable=False),
        Column("error", Text),
        UniqueConstraint("batch", "slot", name="uq_batch_run_slot"),
    )
    op.create_table(
        "batch_run_inputs",
        Column("run_id", Integer, ForeignKey("batch_runs.id"), primary_key=True),
        Column("input_id", Integer, ForeignKey("inputs.id"), primary_key=True),
        Column("job_id", Integer, ForeignKey("jobs.id")),
        Column("taken_at", Float, nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("schemas are not downgraded: restore the database from its backup")
