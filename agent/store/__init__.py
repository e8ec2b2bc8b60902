"""The job store: the only package that speaks SQL.

SQLite (WAL, synchronous=FULL, immediate write transactions) by default; PostgreSQL by URL. Everything that
must survive a crash goes through here: received instances, inputs (series and slides), jobs with their
attempts and errors, the event journal and the outbox. Timestamps are seconds since the epoch.

One module per concept, each holding that concept's SQL, row mapping and transactions:

- :mod:`~agent.store.engine` — opening the database, read/write transactions, migrations, SQLite/PostgreSQL
  differences;
- :mod:`~agent.store.schema` — the tables (the current schema); :mod:`~agent.store.migrations` — the Alembic
  revisions that bring a database to it;
- :mod:`~agent.store.instances`, :mod:`~agent.store.inputs`, :mod:`~agent.store.jobs`,
  :mod:`~agent.store.outbox`, :mod:`~agent.store.events` (the journal), :mod:`~agent.store.counts`,
  :mod:`~agent.store.retention` (what may be purged, and recording that it was), :mod:`~agent.store.audit` (the
  DICOM port's associations), :mod:`~agent.store.batch_runs` (runs of batches, once per slot, and what each
  took);
- :mod:`~agent.store.users` (the web worklist's accounts), :mod:`~agent.store.web_sessions` (their signed-in
  browsers), :mod:`~agent.store.reviews` (case reviews, one row per version, with a decision per target),
  :mod:`~agent.store.web_audit` (every view and decision made on the web), :mod:`~agent.store.review_stats`
  (what reviewers decided on the AI's findings, per model version).

:class:`Store` is the façade the rest of the daemon holds: each method runs one concept function on the
store's engine. A new store concept gets its own module here and its methods on the façade.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from agent.config import Priority
from agent.records import (
    BatchComparison,
    BatchReview,
    BatchRun,
    BatchRunProgress,
    BatchRunStatus,
    BatchVerdict,
    Delivery,
    Input,
    InputKind,
    Instance,
    Job,
    JobStatus,
    OutboxItem,
    OutboxStatus,
    Verdict,
)
from agent.review_records import Decision, DecisionKind, Review, Role, User, WebAuditEvent
from agent.store import audit as _audit
from agent.store import batch_review as _batch_review
from agent.store import batch_runs as _batch_runs
from agent.store import claims as _claims
from agent.store import counts as _counts
from agent.store import engine as _engine
from agent.store import events as _events
from agent.store import inputs as _inputs
from agent.store import instances as _instances
from agent.store import jobs as _jobs
from agent.store import outbox as _outbox
from agent.store import retention as _retention
from agent.store import review_stats as _review_stats
from agent.store import reviews as _reviews
from agent.store import users as _users
from agent.store import web_audit as _web_audit
from agent.store import web_sessions as _web_sessions
from agent.store.driver import HeldConnection
from agent.store.engine import ERROR_TEXT_LIMIT
from agent.store.inputs import EMPTY_FINGERPRINT
from agent.store.retention import InputPurge, ResultPurge
from dicom_node.records import AssociationRecord

__all__ = ["EMPTY_FINGERPRINT", "ERROR_TEXT_LIMIT", "InputPurge", "ResultPurge", "Store"]


class Store:
    """The store over one database (an SQLAlchemy engine); see the concept modules for what each method does."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._recording = HeldConnection(engine)  # the receive path's group commits

    # ----------------------------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        store = cls(_engine.open_engine(url))
        if migrate:
            store.migrate()
        return store

    def close(self) -> None:
        self._recording.close()
        self.engine.dispose()

    def migrate(self) -> str:
        """Create or upgrade the schema; return the Alembic revision now in force."""
        return _engine.migrate(self.engine)

    def ping(self) -> None:
        """A trivial read: raises StoreError when the database does not answer (``/healthz``)."""
        _engine.ping(self.engine)

    # ----------------------------------------------------------------------------------- instances

    def add_instance(self, inst: Instance) -> bool:
        """Record a stored DICOM instance and its series; False when the SOP Instance UID was known."""
        return self.add_instances([inst])[0]

    def add_instances(self, insts: Sequence[Instance]) -> list[bool]:
        """Record several instances in one transaction (one commit); for each, whether it was new."""
        return _instances.add(self._recording, insts)

    def instance_changed(self, inst: Instance, content: str) -> bool:
        """A known instance stored again with another dataset (``content``: its digest): its series' content
        is new; False when the instance is not recorded."""
        return _instances.changed(self.engine, inst, content)

    def has_instance(self, sop_instance_uid: str) -> bool:
        return _instances.has(self.engine, sop_instance_uid)

    def instance_paths(self, input_id: int) -> list[Path]:
        return _instances.paths(self.engine, input_id)

    # ----------------------------------------------------------------------------------- inputs

    def upsert_file_input(
        self, kind: InputKind, path: Path, fingerprint: str, attrs: Mapping[str, Any]
    ) -> tuple[Input, bool]:
        """Record a file input (a slide); return it and whether it is new or changed since last seen."""
        return _inputs.upsert_file(self.engine, kind, path, fingerprint, attrs)

    def get_input(self, input_id: int) -> Input:
        return _inputs.get(self.engine, input_id)

    def find_input(self, key: str) -> Input | None:
        return _inputs.find(self.engine, key)

    def inputs_of_study(self, study_uid: str) -> list[Input]:
        """The study's (unpurged) series, as recorded."""
        return _inputs.of_study(self.engine, study_uid)

    def receiving_inputs(self, quiet_before: float) -> list[Input]:
        """Inputs still receiving whose last change is older than ``quiet_before``."""
        return _inputs.receiving(self.engine, quiet_before)

    def list_inputs(self, limit: int = 100) -> list[Input]:
        return _inputs.newest(self.engine, limit)

    def set_context(self, input_id: int, context: Mapping[str, Any], source: str | None) -> Input:
        """Replace a slide's patient/study context (``attrs["context"]``), e.g. from a sidecar added later."""
        return _inputs.set_context(self.engine, input_id, context, source)

    def mark_ignored(self, input_id: int, reason: str) -> None:
        _inputs.mark_ignored(self.engine, input_id, reason)

    # ----------------------------------------------------------------------------------- jobs

    def enqueue(
        self,
        input_id: int,
        pipeline: str,
        pipeline_version: str,
        *,
        priority: Priority = Priority.ROUTINE,
        max_attempts: int = 3,
        rule: str | None = None,
        force: bool = False,
    ) -> tuple[Job, bool]:
        """Queue a job for the input's current content; return (job, queued_now)."""
        return _jobs.enqueue(
            self.engine, input_id, pipeline, pipeline_version,
            priority=priority, max_attempts=max_attempts, rule=rule, force=force,
        )

    def claim(self, now: float | None = None, owner: str | None = None, lease_s: float = 60.0,
              max_priority: Priority = Priority.BATCH) -> Job | None:
        """Take the next runnable job (highest priority, then oldest; or one whose lease expired) and mark it
        running, claimed by ``owner`` for ``lease_s`` seconds; ``max_priority`` ROUTINE leaves batch jobs."""
        return _claims.claim(self.engine, now, owner, lease_s, max_priority)

    def renew_leases(self, owner: str, job_ids: Sequence[int], until: float) -> list[int]:
        """Extend ``owner``'s leases of running jobs; return the ids it still held."""
        return _claims.renew(self.engine, owner, job_ids, until)

    def report_progress(self, job_id: int, done: int, total: int, stage: str, now: float) -> bool:
        """Record how far a running job is; False when it no longer runs."""
        return _jobs.report_progress(self.engine, job_id, done, total, stage, now)

    def succeed(
        self,
        job_id: int,
        result_path: Path,
        summary: Mapping[str, Any],
        models: Sequence[Mapping[str, str]],
        deliveries: Sequence[Delivery] = (),
        unsent_reason: str | None = None,
        owner: str | None = None,
        review: BatchVerdict | None = None,
    ) -> Job:
        """Record a job's success together with the outbox entries of its DICOM objects (and a batch job's
        verdict against its previous result), in one transaction; with ``owner``, only while it holds the job's
        claim (LeaseLost otherwise)."""
        return _jobs.succeed(self.engine, job_id, result_path, summary, models, deliveries, unsent_reason, owner,
                             review)

    def fail(self, job_id: int, error: str, *, retry_at: float | None = None, owner: str | None = None) -> Job:
        """Record a failed attempt: re-queue at ``retry_at`` when attempts remain, else fail for good."""
        return _jobs.fail(self.engine, job_id, error, retry_at=retry_at, owner=owner)

    def requeue_running(self, reason: str, owner: str | None = None, keep: Collection[int] = ()) -> list[int]:
        """Put jobs left ``running`` (by a crash or a stop) back in the queue (with ``owner``: only its own and
        unnamed claims; never those in ``keep``); return their ids."""
        return _claims.requeue_running(self.engine, reason, owner, keep)

    def retry(self, job_id: int) -> Job:
        """Manual retry of a failed or cancelled job, or of a succeeded one whose findings were not sent."""
        return _jobs.retry(self.engine, job_id)

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued job. Running jobs are not interrupted; cancel them once they end."""
        return _jobs.cancel(self.engine, job_id)

    def get_job(self, job_id: int) -> Job:
        return _jobs.get(self.engine, job_id)

    def job_summary(self, job_id: int) -> dict[str, Any] | None:
        return _jobs.summary(self.engine, job_id)

    def list_jobs(self, status: JobStatus | None = None, limit: int = 100) -> list[Job]:
        return _jobs.newest(self.engine, status, limit)

    def list_unsent(self, limit: int = 100) -> list[Job]:
        """Succeeded jobs whose findings were kept locally (no patient context), newest first."""
        return _jobs.unsent(self.engine, limit)

    def jobs_for_input(self, input_id: int) -> list[Job]:
        return _jobs.for_input(self.engine, input_id)

    def latest_results(self, since: float | None = None, pipelines: Sequence[str] = ()) -> list[Job]:
        """Each input's latest successful job finished since ``since`` (of ``pipelines``), unpurged."""
        return _jobs.latest_results(self.engine, since, pipelines)

    def latest_success(self, input_id: int, pipeline: str | None, before_job_id: int | None = None) -> Job | None:
        """The most recently finished successful job of ``pipeline`` (None: of any) on the input (other than
        ``before_job_id``)."""
        return _jobs.latest_success(self.engine, input_id, pipeline, before_job_id)

    def next_due(self, max_priority: Priority = Priority.BATCH) -> float | None:
        """When the earliest queued job (``max_priority`` or higher) becomes runnable (None: there is none)."""
        return _jobs.next_due(self.engine, max_priority)

    # ----------------------------------------------------------------------------------- journal

    def events(self, job_id: int) -> list[dict[str, Any]]:
        return _events.for_job(self.engine, job_id)

    # ----------------------------------------------------------------------------------- outbox

    def outbox_add(
        self, destination: str, path: Path, sop_class_uid: str, sop_instance_uid: str, job_id: int | None = None
    ) -> tuple[OutboxItem, bool]:
        """Queue an object for a destination; return (item, queued_now)."""
        return _outbox.add(self.engine, destination, path, sop_class_uid, sop_instance_uid, job_id)

    def outbox_due(self, now: float | None = None, limit: int = 500, owner: str | None = None) -> list[OutboxItem]:
        """Pending entries due and held by no sender but ``owner`` (read only)."""
        return _outbox.due(self.engine, now, limit, owner)

    def outbox_claim(self, owner: str | None = None, lease_s: float = 600.0, now: float | None = None,
                     limit: int = 500) -> list[OutboxItem]:
        """Take the due entries for ``owner``'s sender for ``lease_s`` (see :mod:`agent.store.outbox`)."""
        return _outbox.claim(self.engine, owner, lease_s, now, limit)

    def outbox_release(self, owner: str) -> int:
        """Give up ``owner``'s outbox claims (its daemon starts again); return how many there were."""
        return _outbox.release(self.engine, owner)

    def outbox_sent(self, item_id: int, status: int) -> None:
        _outbox.sent(self.engine, item_id, status)

    def outbox_failed(
        self, item_id: int, error: str, *, status: int | None = None, retry_at: float | None = None
    ) -> OutboxItem:
        """Record a failed attempt: pending again at ``retry_at``, or failed for good when it is None."""
        return _outbox.failed(self.engine, item_id, error, status=status, retry_at=retry_at)

    def outbox_substitute(
        self, item_id: int, path: Path, sop_class_uid: str, sop_instance_uid: str, note: str
    ) -> OutboxItem:
        """Send another object in place of this entry's (a fallback the destination accepts), at once."""
        return _outbox.substitute(self.engine, item_id, path, sop_class_uid, sop_instance_uid, note)

    def outbox_retry(self, item_id: int) -> OutboxItem:
        return _outbox.retry(self.engine, item_id)

    def outbox_cancel(self, item_id: int) -> OutboxItem:
        return _outbox.cancel(self.engine, item_id)

    def outbox_list(self, status: OutboxStatus | None = None, limit: int = 100) -> list[OutboxItem]:
        return _outbox.newest(self.engine, status, limit)

    def outbox_next_due(self) -> float | None:
        return _outbox.next_due(self.engine)

    # ----------------------------------------------------------------------------------- retention

    def purgeable_inputs(self, older_than: float) -> list[InputPurge]:
        """Inputs whose every result was delivered at or before ``older_than`` (and not purged), oldest first."""
        return _retention.inputs(self.engine, older_than)

    def purgeable_results(self, older_than: float) -> list[ResultPurge]:
        """Result folders of jobs delivered at or before ``older_than`` (and not purged), oldest first."""
        return _retention.results(self.engine, older_than)

    def purge_input(self, input_id: int, older_than: float, detail: str) -> tuple[Path, ...] | None:
        """Record an input purged (its instance rows removed) if still eligible; return the files to delete."""
        return _retention.purge_input(self.engine, input_id, older_than, detail)

    def purge_results(self, job_id: int, older_than: float, detail: str) -> Path | None:
        """Record a job's result folder purged if still eligible; return the folder to delete."""
        return _retention.purge_results(self.engine, job_id, older_than, detail)

    # ----------------------------------------------------------------------------------- audit trail

    def audit_add(self, records: Sequence[AssociationRecord]) -> int:
        """Record associations (accepted or refused) in one transaction; return how many."""
        return _audit.add(self.engine, records)

    def audit_list(self, since: float | None = None, limit: int = 100) -> list[AssociationRecord]:
        """The latest associations, newest first (started at or after ``since`` when given)."""
        return _audit.newest(self.engine, since, limit)

    # ----------------------------------------------------------------------------------- batch runs

    def batch_run_begin(self, batch: str, slot: float, paths: Sequence[Path], reprocess: bool, *, owner: str,
                        lease_s: float, now: float, options: Mapping[str, Any] | None = None) -> BatchRun | None:
        """Hold the run of ``batch`` for ``slot`` (new, or taken over from a holder that is gone); None when it
        is another's or has ended: the slot runs once. ``options``: the batch's sources, send_results and
        thresholds, kept with the run."""
        return _batch_runs.begin(self.engine, batch, slot, paths, reprocess, owner=owner, lease_s=lease_s, now=now,
                                 options=options)

    def batch_run_take_over(self, run_id: int, owner: str, lease_s: float, now: float) -> BatchRun | None:
        """Hold an interrupted run, or one whose holder's lease expired, to resume it; None if not resumable."""
        return _batch_runs.take_over(self.engine, run_id, owner, lease_s, now)

    def batch_runs_resumable(self, now: float) -> list[BatchRun]:
        return _batch_runs.resumable(self.engine, now)

    def batch_runs_interrupt(self, owner: str) -> list[int]:
        """Mark the runs ``owner`` holds interrupted (it stops, or starts after a crash); return their ids."""
        return _batch_runs.interrupt(self.engine, owner)

    def batch_run_take(self, run_id: int, owner: str, input_id: int, *, until: float, now: float,
                       previous: Mapping[str, Any] | None = None) -> bool:
        """Record that the run takes an input (with its previous result's figures), renewing the holder's lease;
        False when it took it before."""
        return _batch_runs.take(self.engine, run_id, owner, input_id, until=until, now=now, previous=previous)

    def batch_run_set_job(self, run_id: int, input_id: int, job_id: int) -> None:
        _batch_runs.set_job(self.engine, run_id, input_id, job_id)

    def batch_run_renew(self, run_id: int, owner: str, until: float) -> None:
        _batch_runs.renew(self.engine, run_id, owner, until)

    def batch_run_finish(self, run_id: int, owner: str, status: BatchRunStatus, error: str | None, now: float
                         ) -> BatchRun:
        return _batch_runs.finish(self.engine, run_id, owner, status, error, now)

    def batch_run_taken(self, run_id: int) -> dict[int, int | None]:
        """The inputs the run took, each with the job it queued for it (None: none)."""
        return _batch_runs.taken(self.engine, run_id)

    def batch_run_latest(self, batch: str) -> BatchRun | None:
        return _batch_runs.latest(self.engine, batch)

    def get_batch_run(self, run_id: int) -> BatchRun:
        return _batch_runs.get(self.engine, run_id)

    def batch_runs(self, limit: int = 50) -> list[BatchRunProgress]:
        """The latest runs, newest first, with their inputs and jobs counted."""
        return _batch_runs.newest(self.engine, limit)

    def batch_review_pending(self, job_id: int) -> BatchReview | None:
        """The batch run awaiting ``job_id``'s result, to compare it with the previous one; None if none does."""
        return _batch_review.pending(self.engine, job_id)

    def batch_run_of_job(self, job_id: int) -> int | None:
        """The newest batch run that queued ``job_id``, if any did."""
        return _batch_review.run_of_job(self.engine, job_id)

    def batch_run_compared(self, run_id: int, verdict: Verdict | None = None) -> list[BatchComparison]:
        """The results the run compared, with their verdicts (only ``verdict``'s, when given)."""
        return _batch_review.compared(self.engine, run_id, verdict)

    def batch_run_progress(self, run_id: int) -> BatchRunProgress:
        """One run, its jobs by status, their mean duration and its failures with their reasons."""
        return _batch_runs.progress(self.engine, run_id)

    # ----------------------------------------------------------------------------------- status

    def counts(self) -> dict[str, Any]:
        return _counts.counts(self.engine)

    def backlog(self) -> dict[str, dict[str, int]]:
        """Jobs and outbox entries by status (``/metrics``)."""
        return _counts.backlog(self.engine)

    # web worklist: accounts, sessions, reviews, web audit (agent.store.users, web_sessions, reviews, web_audit)

    def add_user(self, name: str, role: Role | str, password_hash: str | None, now: float) -> User:
        """A new account (``password_hash`` None: proxy sign-in only); UserExistsError when the name is taken."""
        return _users.add_user(self.engine, name, role, password_hash, now)

    def user_by_name(self, name: str) -> User | None:
        return _users.user_by_name(self.engine, name)

    def user_by_id(self, user_id: int) -> User | None:
        return _users.user_by_id(self.engine, user_id)

    def list_users(self) -> list[User]:
        """Every account, disabled ones included, by name."""
        return _users.list_users(self.engine)

    def set_password(self, name: str, password_hash: str | None, *, end_sessions: bool = True) -> User:
        """Replace the account's password hash; its web sessions end unless ``end_sessions`` is False."""
        return _users.set_password(self.engine, name, password_hash, end_sessions=end_sessions)

    def disable_user(self, name: str, now: float) -> User:
        """Disable the account and end its web sessions."""
        return _users.disable_user(self.engine, name, now)

    def create_session(self, user_id: int, address: str, lifetime_s: float, now: float) -> tuple[str, str]:
        """A new web session; return (token for the cookie, CSRF token). Only the token's SHA-256 is stored."""
        return _web_sessions.create_session(self.engine, user_id, address, lifetime_s, now)

    def session_user(self, token: str, now: float) -> tuple[User, str] | None:
        """The account and CSRF token of a live session; None if unknown, expired or the account is disabled."""
        return _web_sessions.session_user(self.engine, token, now)

    def end_session(self, token: str) -> bool:
        return _web_sessions.end_session(self.engine, token)

    def purge_sessions(self, now: float) -> int:
        """Delete the expired sessions; return how many."""
        return _web_sessions.purge_sessions(self.engine, now)

    def latest_review(self, job_id: int) -> Review | None:
        return _reviews.latest_review(self.engine, job_id)

    def start_review(self, job_id: int, user_id: int, now: float) -> Review:
        """The job's review in progress (held by ``user_id`` if nobody held it), a new version 1, or the signed
        one unchanged; ReviewStateError when the job has no result."""
        return _reviews.start_review(self.engine, job_id, user_id, now)

    def reopen_review(self, job_id: int, user_id: int, now: float) -> Review:
        """The next version of a signed-off case, its decisions copied; ReviewStateError unless signed off."""
        return _reviews.reopen_review(self.engine, job_id, user_id, now)

    def decide(self, review_id: int, target: str, decision: DecisionKind | str, label: str | None, geometry: Any,
               model_version: str | None, user_id: int, now: float) -> Decision:
        """Record (or replace) the decision on ``target``; ReviewStateError unless the review is in review."""
        return _reviews.decide(self.engine, review_id, target, decision, label, geometry, model_version, user_id,
                               now)

    def remove_decision(self, review_id: int, target: str, now: float | None = None) -> bool:
        """Undo the decision on ``target`` (False: none); ReviewStateError unless the review is in review."""
        return _reviews.remove_decision(self.engine, review_id, target, now)

    def decisions(self, review_id: int) -> list[Decision]:
        return _reviews.decisions(self.engine, review_id)

    def next_added_target(self, review_id: int) -> str:
        return _reviews.next_added_target(self.engine, review_id)

    def sign_off(self, review_id: int, user_id: int, result: Mapping[str, Any], note: str | None, now: float
                 ) -> Review:
        """Make the review final (the version it replaces becomes superseded); ReviewStateError unless in review:
        of two concurrent sign-offs one fails."""
        return _reviews.sign_off(self.engine, review_id, user_id, result, note, now)

    def set_note(self, review_id: int, note: str | None, now: float) -> Review:
        """The reviewer's note on a review in progress; ReviewStateError unless in review."""
        return _reviews.set_note(self.engine, review_id, note, now)

    def set_sr_uid(self, review_id: int, uid: str) -> None:
        _reviews.set_sr_uid(self.engine, review_id, uid)

    def review_summaries(self, job_ids: Collection[int]) -> dict[int, Review]:
        """The newest review of each of ``job_ids`` that has one, in one query."""
        return _reviews.review_summaries(self.engine, job_ids)

    def web_audit_record(self, events: Sequence[WebAuditEvent]) -> int:
        """Record web audit events in one transaction; return how many."""
        return _web_audit.record(self.engine, events)

    def web_audit_since(self, since: float, limit: int | None = None) -> list[WebAuditEvent]:
        """Web audit events at or after ``since``, oldest first."""
        return _web_audit.since(self.engine, since, limit)

    def audit_since(self, since: float, limit: int | None = None) -> list[AssociationRecord]:
        """The DICOM port's associations started at or after ``since``, oldest first (``oncoagent audit export``)."""
        return _audit.oldest_since(self.engine, since, limit)

    # web worklist admin page: review statistics per model version (agent.store.review_stats)

    def review_stats(self, since: float | None = None) -> list[_review_stats.ReviewStats]:
        """Per pipeline and model version, what reviewers decided on the AI's findings of signed-off cases."""
        return _review_stats.review_stats(self.engine, since)

    # training data from reviews (agent.training_export): the signed-off reviews with their jobs

    def signed_reviews(self, since: float | None = None, pipelines: Sequence[str] = ()) -> list[tuple[Review, Job]]:
        """The newest signed-off review of each job signed since ``since``, of ``pipelines`` (all: empty)."""
        return _reviews.signed_reviews(self.engine, since, pipelines)
