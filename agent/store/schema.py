"""Tables of the job store: the current schema, as the queries of :mod:`agent.store` see it.

Databases are brought to it by the Alembic revisions of :mod:`agent.store.migrations`. To change the schema:
edit the tables below and add a revision that turns the previous schema into the new one (docs/architecture.md,
"Schema migrations"); tests/unit/test_store_migrations.py checks that a database at the newest revision matches
these tables. Only the modules of :mod:`agent.store` use them; each table's queries live in its concept's module.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine.interfaces import Dialect


def escape_nul(text: str) -> str:
    """``text`` with its NUL characters written as ``\\x00``: PostgreSQL refuses NUL in text values."""
    return text.replace("\x00", "\\x00") if "\x00" in text else text


class FreeText(TypeDecorator[str]):
    """Text that comes from outside (errors, reasons, notes, a peer's name): unbounded, and on PostgreSQL stored
    with NUL characters escaped (:func:`escape_nul`) instead of refused, so an exception message or an AE title
    carrying a NUL cannot make a job's or an instance's record fail. SQLite stores such text as it is."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return value if value is None or dialect.name != "postgresql" else escape_nul(value)


metadata = MetaData()

inputs = Table(
    "inputs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("key", Text, nullable=False, unique=True),  # a series UID, or a slide's path
    Column("path", Text, nullable=False),
    Column("study_uid", String(64)),
    Column("series_uid", String(64)),
    Column("fingerprint", String(64), nullable=False),
    Column("attrs", JSON, nullable=False),
    Column("instance_count", Integer, nullable=False, default=0),
    Column("state", String(16), nullable=False),
    Column("reason", FreeText),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("purged_at", Float),  # v4: its files were deleted by retention (its key became "purged:<id>")
    Index("ix_inputs_state_updated", "state", "updated_at"),
    Index("ix_inputs_study", "study_uid"),  # r0005: a PACS batch source looks up the series of a study
)

instances = Table(
    "instances",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sop_instance_uid", String(64), nullable=False, unique=True),
    Column("sop_class_uid", String(64), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("series_uid", String(64), nullable=False),
    Column("input_id", Integer, ForeignKey("inputs.id"), nullable=False),
    Column("path", Text, nullable=False),
    Column("size", BigInteger, nullable=False),  # bytes: a whole-slide instance may pass 2 GiB
    Column("source", FreeText, nullable=False),  # "scp:<calling AE>" or "folder:<path>"
    Column("received_at", Float, nullable=False),
    Index("ix_instances_series", "series_uid"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("input_id", Integer, ForeignKey("inputs.id"), nullable=False),
    Column("pipeline", String(64), nullable=False),
    Column("pipeline_version", String(32), nullable=False),
    Column("input_fingerprint", String(64), nullable=False),
    Column("rule", String(128)),
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("last_error", FreeText),
    Column("not_before", Float, nullable=False, default=0.0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("result_path", Text),
    Column("summary", JSON),
    Column("models", JSON, nullable=False),
    Column("unsent_reason", FreeText),  # v3: why a succeeded job's findings were not made for PACS
    Column("purged_at", Float),  # v4: its result folder was deleted by retention
    Column("claimed_by", String(200)),  # r0002: the daemon (executor.node) that claimed it last
    Column("lease_until", Float),  # r0002: while running, its claim holds until then unless renewed
    Column("progress_done", Integer),  # r0006: units done of progress_total (a slide's tiles), while running
    Column("progress_total", Integer),  # r0006
    Column("progress_stage", String(64)),  # r0006: what it is doing (an MR job's stage)
    Column("progress_at", Float),  # r0006: when it last reported
    UniqueConstraint("input_id", "pipeline", "pipeline_version", "input_fingerprint", name="uq_job_effect"),
    Index("ix_jobs_claim", "status", "priority", "not_before", "id"),
    Index("ix_jobs_finished", "finished_at"),  # r0006: the worklist pages cases by when they were analysed
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Float, nullable=False),
    Column("job_id", Integer, ForeignKey("jobs.id")),
    Column("input_id", Integer, ForeignKey("inputs.id")),
    Column("event", String(32), nullable=False),
    Column("detail", FreeText),
    Index("ix_events_job", "job_id"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id")),
    Column("destination", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("sop_instance_uid", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_status", Integer),
    Column("last_error", FreeText),
    Column("next_attempt_at", Float, nullable=False, default=0.0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("sent_at", Float),
    Column("note", FreeText),  # v2: what was sent instead (fallback) and why
    Column("claimed_by", String(200)),  # r0003: the daemon whose sender took the entry for a round
    Column("lease_until", Float),  # r0003: when that claim lapses unless the entry is resolved
    UniqueConstraint("destination", "sop_instance_uid", name="uq_outbox_object"),
)

associations = Table(  # v5: the audit trail, one row per association or refused connection (agent.store.audit)
    "associations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=False),
    Column("calling_ae", String(64), nullable=False),  # as the peer sent it, non-printable characters escaped
    Column("called_ae", String(64), nullable=False),
    Column("address", String(64), nullable=False),
    Column("refusal", String(32)),  # a dicom_node RefusalReason; NULL: accepted
    Column("detail", Text),
    Column("instances_stored", Integer, nullable=False, default=0),
    Index("ix_associations_started", "started_at"),
)

batch_runs = Table(  # r0004: one row per run of a batch (agent.store.batch_runs); one run per (batch, slot)
    "batch_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("batch", String(128), nullable=False),  # scheduler.batches[].name, or "(manual)" for oncoagent batch
    Column("slot", Float, nullable=False),  # the scheduled time it is for (a hand-run batch: when it started)
    Column("status", String(16), nullable=False),  # a BatchRunStatus
    Column("paths", JSON, nullable=False),  # what it reads, as it was when it started (a resumed run reads these)
    Column("reprocess", Boolean, nullable=False),
    Column("owner", String(200)),  # the process (executor.node) that holds it while it runs
    Column("lease_until", Float),  # while running, its holder's claim holds until then unless renewed
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("resumed", Integer, nullable=False, default=0),  # how many times it was taken over after a crash
    Column("error", FreeText),
    Column("options", JSON),  # r0005: sources, send_results and thresholds as they were when it started
    UniqueConstraint("batch", "slot", name="uq_batch_run_slot"),
)

batch_run_inputs = Table(  # r0004: the inputs a run took, and the job it queued for each (NULL: none)
    "batch_run_inputs",
    metadata,
    Column("run_id", Integer, ForeignKey("batch_runs.id"), primary_key=True),
    Column("input_id", Integer, ForeignKey("inputs.id"), primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id")),
    Column("taken_at", Float, nullable=False),
    Column("previous", JSON),  # r0005: the figures of the input's previous result when the run took it
    Column("verdict", String(16)),  # r0005: a Verdict, once the run's result is in (NULL: not yet)
    Column("reasons", JSON),  # r0005: why it is discordant
    Column("sent", Boolean),  # r0005: whether its DICOM objects went to the outbox (send_results)
    Column("compared_at", Float),  # r0005
    Index("ix_batch_run_inputs_job", "job_id"),  # r0005: every job's success looks up the run awaiting it
)

users = Table(  # r0006: local accounts of the web worklist (agent.store.users)
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # pathologist | radiologist | admin | viewer
    Column("password_hash", Text),  # argon2; NULL: signs in only through the trusted proxy header
    Column("created_at", Float, nullable=False),
    Column("disabled_at", Float),
)

web_sessions = Table(  # r0006: signed-in browsers; the cookie holds a token whose SHA-256 is the key
    "web_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("csrf", String(64), nullable=False),  # the token every state-changing request must carry
    Column("address", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_web_sessions_user", "user_id"),
)

reviews = Table(  # r0006: a reviewer's pass over a job's result; reopening a signed case starts a new version
    "reviews",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # in_review | signed_off | superseded
    Column("holder_id", Integer, ForeignKey("users.id")),  # who holds it while in review
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("signed_at", Float),
    Column("signed_by", Integer, ForeignKey("users.id")),
    Column("note", Text),
    Column("result", JSON),  # the confirmed figures at sign-off (counts, lesions)
    Column("sr_sop_instance_uid", String(64)),  # the verified SR made at sign-off
    UniqueConstraint("job_id", "version", name="uq_review_version"),
)

review_decisions = Table(  # r0006: the reviewer's word on one detection or lesion (the latest one counts)
    "review_decisions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("review_id", Integer, ForeignKey("reviews.id"), nullable=False),
    Column("target", String(32), nullable=False),  # "d:<index>" a detection, "l:<n>" a lesion, "a:<n>" added
    Column("decision", String(16), nullable=False),  # confirmed | rejected | added
    Column("label", String(32)),  # the class it has after the decision (CTC/CTM; malignant/benign)
    Column("geometry", JSON),  # an added cell's level-0 box
    Column("model_version", String(64)),  # the model whose output was judged
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("at", Float, nullable=False),
    UniqueConstraint("review_id", "target", name="uq_review_target"),
    Index("ix_review_decisions_at", "at"),
)

web_audit = Table(  # r0006: every view of a case and every decision made on the web (who, when, from where, what)
    "web_audit",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Float, nullable=False),
    Column("user_name", String(128)),  # NULL: not signed in (a refused login)
    Column("address", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("job_id", Integer),
    Column("detail", Text),
    Index("ix_web_audit_at", "at"),
)
