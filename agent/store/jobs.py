"""Jobs: one run of a pipeline (name and version) on an input's current content, with its status, priority,
attempts, last error and result; queued, claimed, succeeded, failed, re-queued, retried and cancelled here.

One job exists per (input, pipeline, version, input fingerprint). Every change journals an event in the same
transaction, and a success queues its outbox entries in that transaction too. All SQL on the ``jobs`` table
is here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from agent.config import Priority
from agent.errors import LeaseLost, StoreError
from agent.records import BatchVerdict, Delivery, Job, JobStatus
from agent.store import batch_review, events, inputs, outbox, schema
from agent.store.engine import ERROR_TEXT_LIMIT, grouped, insert_id, locked, read, write

PROGRESS_STAGE_LIMIT = 64  # jobs.progress_stage is String(64)


def enqueue(
    engine: Engine,
    input_id: int,
    pipeline: str,
    pipeline_version: str,
    *,
    priority: Priority = Priority.ROUTINE,
    max_attempts: int = 3,
    rule: str | None = None,
    force: bool = False,
) -> tuple[Job, bool]:
    """Queue a job for the input's current content; return (job, queued_now).

    One job exists per (input, pipeline, version, input fingerprint): a job that succeeded is never queued
    again for the same content and version unless ``force`` (explicit reprocessing); a queued or running
    one is returned as it is. A failed or cancelled one is only re-queued with ``force``.
    """
    now = time.time()
    with write(engine) as conn:
        fingerprint = inputs.route(conn, input_id)
        existing = (
            conn.execute(
                locked(select(schema.jobs)).where(
                    schema.jobs.c.input_id == input_id,
                    schema.jobs.c.pipeline == pipeline,
                    schema.jobs.c.pipeline_version == pipeline_version,
                    schema.jobs.c.input_fingerprint == fingerprint,
                )
            )
            .mappings()
            .first()
        )
        if existing is not None:
            status = JobStatus(existing["status"])
            if not force or status in (JobStatus.QUEUED, JobStatus.RUNNING):
                return _from_row(existing), False
            conn.execute(
                update(schema.jobs)
                .where(schema.jobs.c.id == existing["id"])
                .values(
                    status=JobStatus.QUEUED.value,
                    priority=int(priority),
                    attempts=0,
                    max_attempts=max_attempts,
                    last_error=None,
                    not_before=0.0,
                    updated_at=now,
                    finished_at=None,
                    rule=rule,
                )
            )
            events.record(conn, "requeued", job_id=existing["id"], detail=f"reprocess (was {status.value})")
            return _job_in(conn, existing["id"]), True
        try:
            with conn.begin_nested():
                job_id = insert_id(
                    conn,
                    insert(schema.jobs).values(
                        input_id=input_id,
                        pipeline=pipeline,
                        pipeline_version=pipeline_version,
                        input_fingerprint=fingerprint,
                        rule=rule,
                        status=JobStatus.QUEUED.value,
                        priority=int(priority),
                        attempts=0,
                        max_attempts=max_attempts,
                        not_before=0.0,
                        created_at=now,
                        updated_at=now,
                        models=[],
                    ),
                )
        except IntegrityError as exc:  # a concurrent enqueue won the race on another connection
            raise StoreError(f"job for input {input_id} was queued concurrently") from exc
        events.record(conn, "queued", job_id=job_id, input_id=input_id, detail=f"{pipeline} {pipeline_version}")
        return _job_in(conn, job_id), True


def succeed(
    engine: Engine,
    job_id: int,
    result_path: Path,
    summary: Mapping[str, Any],
    models: Sequence[Mapping[str, str]],
    deliveries: Sequence[Delivery] = (),
    unsent_reason: str | None = None,
    owner: str | None = None,
    review: BatchVerdict | None = None,
) -> Job:
    """Record a job's success together with the outbox entries of its DICOM objects (and, for a batch's job, its
    ``review``: the verdict against the previous result), in one transaction: a crash leaves all or none. With
    ``owner``: only while that daemon holds the job's claim."""
    now = time.time()
    with write(engine) as conn:
        _require_running(conn, job_id, owner)
        conn.execute(
            update(schema.jobs)
            .where(schema.jobs.c.id == job_id)
            .values(
                status=JobStatus.SUCCEEDED.value,
                result_path=str(result_path),
                summary=dict(summary),
                models=[dict(m) for m in models],
                last_error=None,
                unsent_reason=None if unsent_reason is None else unsent_reason[:ERROR_TEXT_LIMIT],
                finished_at=now,
                updated_at=now,
            )
        )
        queued = sum(outbox.put(conn, d, job_id, now)[1] for d in deliveries)
        if review is not None:
            batch_review.record(conn, review.review, review.verdict, review.reasons, bool(deliveries), now)
        detail = str(result_path) + (f"; {queued} object(s) queued for PACS" if queued else "")
        events.record(conn, "succeeded", job_id=job_id, detail=detail)
        return _job_in(conn, job_id)


def fail(engine: Engine, job_id: int, error: str, *, retry_at: float | None = None, owner: str | None = None
         ) -> Job:
    """Record a failed attempt: re-queue at ``retry_at`` when attempts remain, else fail for good. With
    ``owner``: only while that daemon holds the job's claim."""
    now = time.time()
    error = error[:ERROR_TEXT_LIMIT]
    with write(engine) as conn:
        job = _require_running(conn, job_id, owner)
        retry = retry_at is not None and job.attempts < job.max_attempts
        values: dict[str, Any] = {"last_error": error, "updated_at": now}
        if retry:
            values |= {"status": JobStatus.QUEUED.value, "not_before": retry_at}
        else:
            values |= {"status": JobStatus.FAILED.value, "finished_at": now}
        conn.execute(update(schema.jobs).where(schema.jobs.c.id == job_id).values(**values))
        events.record(conn, "retry" if retry else "failed", job_id=job_id, detail=error)
        return _job_in(conn, job_id)


def retry(engine: Engine, job_id: int) -> Job:
    """Manual retry of a failed or cancelled job, or of a succeeded one whose findings were not sent."""
    now = time.time()
    with write(engine) as conn:
        job = _job_in(conn, job_id, lock=True)
        unsent = job.status is JobStatus.SUCCEEDED and job.unsent_reason is not None
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED) and not unsent:
            raise StoreError(f"job {job_id} is {job.status.value}; only failed or cancelled jobs, or succeeded "
                             "ones whose results were not sent, can be retried")
        conn.execute(
            update(schema.jobs)
            .where(schema.jobs.c.id == job_id)
            .values(status=JobStatus.QUEUED.value, attempts=0, not_before=0.0, finished_at=None, updated_at=now)
        )
        events.record(conn, "requeued", job_id=job_id, detail="manual retry")
        return _job_in(conn, job_id)


def cancel(engine: Engine, job_id: int) -> Job:
    """Cancel a queued job. Running jobs are not interrupted; cancel them once they end."""
    now = time.time()
    with write(engine) as conn:
        job = _job_in(conn, job_id, lock=True)
        if job.status is not JobStatus.QUEUED:
            raise StoreError(f"job {job_id} is {job.status.value}; only queued jobs can be cancelled")
        conn.execute(
            update(schema.jobs)
            .where(schema.jobs.c.id == job_id)
            .values(status=JobStatus.CANCELLED.value, finished_at=now, updated_at=now)
        )
        events.record(conn, "cancelled", job_id=job_id)
        return _job_in(conn, job_id)


def report_progress(engine: Engine, job_id: int, done: int, total: int, stage: str, now: float) -> bool:
    """Record how far a running job is: ``done`` units of ``total`` (a slide's tiles, an MR series' stages),
    doing ``stage``, as of ``now``; False when the job is not running (the report came after its end). Not
    journalled: it changes once a second. A claim clears it (a new attempt starts afresh); the end keeps it."""
    with write(engine) as conn:
        changed = conn.execute(
            update(schema.jobs)
            .where(schema.jobs.c.id == job_id, schema.jobs.c.status == JobStatus.RUNNING.value)
            .values(progress_done=done, progress_total=total, progress_stage=stage[:PROGRESS_STAGE_LIMIT],
                    progress_at=now)
        )
        return bool(changed.rowcount)


def get(engine: Engine, job_id: int) -> Job:
    with read(engine) as conn:
        return _job_in(conn, job_id)


def summary(engine: Engine, job_id: int) -> dict[str, Any] | None:
    with read(engine) as conn:
        value = conn.execute(select(schema.jobs.c.summary).where(schema.jobs.c.id == job_id)).scalar()
        return dict(value) if value else None


def newest(engine: Engine, status: JobStatus | None = None, limit: int = 100) -> list[Job]:
    query = select(schema.jobs).order_by(schema.jobs.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(schema.jobs.c.status == status.value)
    with read(engine) as conn:
        return [_from_row(r) for r in conn.execute(query).mappings()]


def unsent(engine: Engine, limit: int = 100) -> list[Job]:
    """Succeeded jobs whose findings were kept locally (no patient context), newest first."""
    with read(engine) as conn:
        rows = conn.execute(
            select(schema.jobs)
            .where(schema.jobs.c.status == JobStatus.SUCCEEDED.value, schema.jobs.c.unsent_reason.is_not(None))
            .order_by(schema.jobs.c.id.desc())
            .limit(limit)
        ).mappings()
        return [_from_row(r) for r in rows]


def for_input(engine: Engine, input_id: int) -> list[Job]:
    with read(engine) as conn:
        rows = conn.execute(
            select(schema.jobs).where(schema.jobs.c.input_id == input_id).order_by(schema.jobs.c.id)
        ).mappings()
        return [_from_row(r) for r in rows]


def latest_results(engine: Engine, since: float | None, pipelines: Sequence[str] = ()) -> list[Job]:
    """Each input's latest successful job, where it finished at or after ``since`` (of ``pipelines``, when
    given), for inputs and results retention has not purged; in input order."""
    jobs, ins = schema.jobs, schema.inputs
    query = (select(jobs).join(ins, ins.c.id == jobs.c.input_id)
             .where(jobs.c.status == JobStatus.SUCCEEDED.value, jobs.c.purged_at.is_(None), ins.c.purged_at.is_(None))
             .order_by(jobs.c.input_id, jobs.c.finished_at))
    if since is not None:
        query = query.where(jobs.c.finished_at >= since)
    if pipelines:
        query = query.where(jobs.c.pipeline.in_(list(pipelines)))
    latest: dict[int, Job] = {}
    with read(engine) as conn:
        for row in conn.execute(query).mappings():
            latest[row["input_id"]] = _from_row(row)  # ordered by finish: the last one per input stays
    return list(latest.values())


def latest_success(engine: Engine, input_id: int, pipeline: str | None, before_job_id: int | None = None
                   ) -> Job | None:
    """The most recently finished successful job of ``pipeline`` (None: of any) on the input (other than
    ``before_job_id``)."""
    query = (
        select(schema.jobs)
        .where(schema.jobs.c.input_id == input_id, schema.jobs.c.status == JobStatus.SUCCEEDED.value)
        .order_by(schema.jobs.c.finished_at.desc())
        .limit(1)
    )
    if pipeline is not None:
        query = query.where(schema.jobs.c.pipeline == pipeline)
    if before_job_id is not None:
        query = query.where(schema.jobs.c.id != before_job_id)
    with read(engine) as conn:
        row = conn.execute(query).mappings().first()
        return None if row is None else _from_row(row)


def next_due(engine: Engine, max_priority: Priority = Priority.BATCH) -> float | None:
    """When the earliest queued job (of priority ``max_priority`` or higher) becomes runnable (None when there
    is none)."""
    with read(engine) as conn:
        value = conn.execute(
            select(func.min(schema.jobs.c.not_before)).where(
                schema.jobs.c.status == JobStatus.QUEUED.value, schema.jobs.c.priority <= int(max_priority))
        ).scalar()
        return None if value is None else float(value)


def count_by_status(conn: Connection) -> dict[str, int]:
    return grouped(conn, schema.jobs.c.status)


def count_unsent(conn: Connection) -> int:
    """Succeeded jobs whose findings were kept locally."""
    return int(
        conn.execute(
            select(func.count()).select_from(schema.jobs).where(
                schema.jobs.c.status == JobStatus.SUCCEEDED.value, schema.jobs.c.unsent_reason.is_not(None)
            )
        ).scalar_one()
    )


def _job_in(conn: Connection, job_id: int, *, lock: bool = False) -> Job:
    """The job, read in the caller's transaction; ``lock``: locked until it ends (it will be changed)."""
    query = select(schema.jobs).where(schema.jobs.c.id == job_id)
    row = conn.execute(locked(query) if lock else query).mappings().first()
    if row is None:
        raise StoreError(f"no job {job_id}")
    return _from_row(row)


def _require_status(conn: Connection, job_id: int, status: JobStatus) -> Job:
    job = _job_in(conn, job_id, lock=True)
    if job.status is not status:
        raise StoreError(f"job {job_id} is {job.status.value}, expected {status.value}")
    return job


def _require_running(conn: Connection, job_id: int, owner: str | None) -> Job:
    """The running job, locked; :class:`~agent.errors.LeaseLost` when ``owner`` no longer holds its claim (its
    lease expired and another daemon took it: that daemon's outcome is the one recorded)."""
    job = _require_status(conn, job_id, JobStatus.RUNNING)
    if owner is not None and job.claimed_by not in (None, owner):
        raise LeaseLost(f"job {job_id} was claimed again by {job.claimed_by} after the lease of {owner} expired")
    return job


def job_in(conn: Connection, job_id: int) -> Job:
    """The job, read in the caller's transaction."""
    return _job_in(conn, job_id)


def _from_row(row: RowMapping) -> Job:
    return Job(
        id=row["id"],
        input_id=row["input_id"],
        pipeline=row["pipeline"],
        pipeline_version=row["pipeline_version"],
        input_fingerprint=row["input_fingerprint"],
        status=JobStatus(row["status"]),
        priority=Priority(row["priority"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        not_before=row["not_before"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        rule=row["rule"],
        result_path=Path(row["result_path"]) if row["result_path"] else None,
        models=list(row["models"] or []),
        unsent_reason=row["unsent_reason"],
        claimed_by=row["claimed_by"],
        lease_until=row["lease_until"],
        progress_done=row["progress_done"],
        progress_total=row["progress_total"],
        progress_stage=row["progress_stage"],
        progress_at=row["progress_at"],
    )
