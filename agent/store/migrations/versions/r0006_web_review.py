"""The web worklist: local accounts and their sessions, case reviews (one row per version: reopening a signed
case starts a new one) with the reviewer's decision on each detection or lesion, the web audit trail (every view
and decision: who, when, from where, what), and the progress a running job reports.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import JSON, Column, Float, ForeignKey, Integer, String, Text, UniqueConstraint

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        Column("id", Integer, primary_key=True),
        Column("name", String(128), nullable=False, unique=True),
        Column("role", String(16), nullable=False),
        Column("password_hash", Text),
        Column("created_at", Float, nullable=False),
        Column("disabled_at", Float),
    )
    op.create_table(
        "web_sessions",
        Column("token_hash", String(64), primary_key=True),
        Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
        Column("csrf", String(64), nullable=False),
        Column("address", String(64), nullable=False),
        Column("created_at", Float, nullable=False),
        Column("expires_at", Float, nullable=False),
    )
    op.create_index("ix_web_sessions_user", "web_sessions", ["user_id"])
    op.create_table(
        "reviews",
        Column("id", Integer, primary_key=True),
        Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
        Column("version", Integer, nullable=False),
        Column("status", String(16), nullable=False),
        Column("holder_id", Integer, ForeignKey("users.id")),
        Column("started_at", Float, nullable=False),
        Column("updated_at", Float, nullable=False),
        Column("signed_at", Float),
        Column("signed_by", Integer, ForeignKey("users.id")),
        Column("note", Text),
        Column("result", JSON),
        Column("sr_sop_instance_uid", String(64)),
        UniqueConstraint("job_id", "version", name="uq_review_version"),
    )
    op.create_table(
        "review_decisions",
        Column("id", Integer, primary_key=True),
        Column("review_id", Integer, ForeignKey("reviews.id"), nullable=False),
        Column("target", String(32), nullable=False),
        Column("decision", String(16), nullable=False),
        Column("label", String(32)),
        Column("geometry", JSON),
        Column("model_version", String(64)),
        Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
        Column("at", Float, nullable=False),
        UniqueConstraint("review_id", "target", name="uq_review_target"),
    )
    op.create_index("ix_review_decisions_at", "review_decisions", ["at"])
    op.create_table(
        "web_audit",
        Column("id", Integer, primary_key=True),
        Column("at", Float, nullable=False),
        Column("user_name", String(128)),
        Column("address", String(64), nullable=False),
        Column("action", String(32), nullable=False),
        Column("job_id", Integer),
        Column("detail", Text),
    )
    op.create_index("ix_web_audit_at", "web_audit", ["at"])
    op.add_column("jobs", Column("progress_done", Integer))
    op.add_column("jobs", Column("progress_total", Integer))
    op.add_column("jobs", Column("progress_stage", String(64)))
    op.add_column("jobs", Column("progress_at", Float))
    op.create_index("ix_jobs_finished", "jobs", ["finished_at"])


def downgrade() -> None:
    raise NotImplementedError("schemas are not downgraded: restore the database from its backup")
