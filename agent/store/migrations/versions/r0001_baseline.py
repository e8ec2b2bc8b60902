"""Baseline: the job store's schema as the last release before Alembic left it (its own counter's version 5).

A new database gets these tables. A database of an earlier release, which counted its schema in a
``schema_info`` table (versions 1 to 5), is brought to the same tables by that release's own steps, in place,
every row kept, and the counter is dropped: from here on ``alembic_version`` says what is in force. Doing this
in the baseline, rather than one revision per old version, keeps a single starting point for every database
and leaves the old steps where they are needed and nowhere else.

The tables are frozen here as that release made them (``FreeText`` is plain ``TEXT`` in the database): this
file must not follow agent/store/schema.py, whose later changes come as revisions after this one.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    text,
)

from agent.errors import StoreError

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

LEGACY_VERSION = 5
"""The last version of the counter of ``schema_info``: the schema below."""

tables = MetaData()

Table(
    "inputs", tables,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("key", Text, nullable=False, unique=True),
    Column("path", Text, nullable=False),
    Column("study_uid", String(64)),
    Column("series_uid", String(64)),
    Column("fingerprint", String(64), nullable=False),
    Column("attrs", JSON, nullable=False),
    Column("instance_count", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("purged_at", Float),
    Index("ix_inputs_state_updated", "state", "updated_at"),
)
Table(
    "instances", tables,
    Column("id", Integer, primary_key=True),
    Column("sop_instance_uid", String(64), nullable=False, unique=True),
    Column("sop_class_uid", String(64), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("series_uid", String(64), nullable=False),
    Column("input_id", Integer, ForeignKey("inputs.id"), nullable=False),
    Column("path", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("source", Text, nullable=False),
    Column("received_at", Float, nullable=False),
    Index("ix_instances_series", "series_uid"),
)
Table(
    "jobs", tables,
    Column("id", Integer, primary_key=True),
    Column("input_id", Integer, ForeignKey("inputs.id"), nullable=False),
    Column("pipeline", String(64), nullable=False),
    Column("pipeline_version", String(32), nullable=False),
    Column("input_fingerprint", String(64), nullable=False),
    Column("rule", String(128)),
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("not_before", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("result_path", Text),
    Column("summary", JSON),
    Column("models", JSON, nullable=False),
    Column("unsent_reason", Text),
    Column("purged_at", Float),
    UniqueConstraint("input_id", "pipeline", "pipeline_version", "input_fingerprint", name="uq_job_effect"),
    Index("ix_jobs_claim", "status", "priority", "not_before", "id"),
)
Table(
    "events", tables,
    Column("id", Integer, primary_key=True),
    Column("at", Float, nullable=False),
    Column("job_id", Integer, ForeignKey("jobs.id")),
    Column("input_id", Integer, ForeignKey("inputs.id")),
    Column("event", String(32), nullable=False),
    Column("detail", Text),
    Index("ix_events_job", "job_id"),
)
Table(
    "outbox", tables,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id")),
    Column("destination", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("sop_instance_uid", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("next_attempt_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("sent_at", Float),
    Column("note", Text),
    UniqueConstraint("destination", "sop_instance_uid", name="uq_outbox_object"),
)
associations = Table(
    "associations", tables,
    Column("id", Integer, primary_key=True),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=False),
    Column("calling_ae", String(64), nullable=False),
    Column("called_ae", String(64), nullable=False),
    Column("address", String(64), nullable=False),
    Column("refusal", String(32)),
    Column("detail", Text),
    Column("instances_stored", Integer, nullable=False),
    Index("ix_associations_started", "started_at"),
)


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.has_table(conn, "schema_info"):
        _from_counter(conn)
    else:
        tables.create_all(conn)


def downgrade() -> None:
    raise NotImplementedError("the job store's schema is not downgraded: restore the database from its backup")


# ------------------------------------------------------------------------------- databases of earlier releases


def _from_counter(conn: Connection) -> None:
    """Run the steps of the old counter from the database's ``schema_info`` version to 5; drop the counter."""
    version = conn.execute(text("SELECT version FROM schema_info")).scalar_one()
    if version > LEGACY_VERSION:
        raise StoreError(f"database schema v{version} is newer than this OncoAgent; "
                         "upgrade OncoAgent or use another --data-dir")
    for step in _STEPS[version - 1:]:
        step(conn)
    op.drop_table("schema_info")


def _v1_to_v2(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE outbox ADD COLUMN note TEXT")


def _v2_to_v3(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE jobs ADD COLUMN unsent_reason TEXT")


def _v3_to_v4(conn: Connection) -> None:
    for table in ("inputs", "jobs"):
        if "purged_at" not in {c["name"] for c in inspect(conn).get_columns(table)}:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN purged_at FLOAT")


def _v4_to_v5(conn: Connection) -> None:
    associations.create(conn, checkfirst=True)


_STEPS = (_v1_to_v2, _v2_to_v3, _v3_to_v4, _v4_to_v5)  # _STEPS[n - 1] turns version n into n + 1
