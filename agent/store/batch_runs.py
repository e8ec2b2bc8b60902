"""Batch runs: one record per run of a batch for one scheduled slot, who holds it, and the inputs it took.

A slot runs once: ``batch_runs`` holds one row per (batch, slot), inserted in a write transaction, so of two
daemons that fire the same slot on one store one inserts the row and holds the run, and the other finds it and
skips. The holder names itself (``executor.node``) and keeps a lease, renewed as it takes inputs, like a job
claim (:mod:`agent.store.claims`): a run whose holder died (lease expired) or stopped (interrupted) is taken over
by the next daemon that looks, which resumes it. ``batch_run_inputs`` records each input a run took before it
routes it, and then the job it queued, so a resumed run queues nothing twice. Progress is read from the jobs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from agent.errors import LeaseLost, StoreError
from agent.records import BatchRun, BatchRunFailure, BatchRunProgress, BatchRunStatus, JobStatus, Verdict
from agent.store import batch_review, schema
from agent.store.engine import ERROR_TEXT_LIMIT, insert_id, locked, read, write

_runs = schema.batch_runs
_taken = schema.batch_run_inputs
_jobs = schema.jobs


def begin(engine: Engine, batch: str, slot: float, paths: Sequence[Path], reprocess: bool, *, owner: str,
          lease_s: float, now: float, options: Mapping[str, Any] | None = None) -> BatchRun | None:
    """Take the run of ``batch`` for ``slot``: a new one, or one whose holder is gone (see :func:`take_over`).
    None when the slot is another holder's, or already done or failed: the caller skips it."""
    with write(engine) as conn:
        existing = _run_for_slot(conn, batch, slot)
        if existing is None:
            try:
                with conn.begin_nested():  # a concurrent daemon inserting the same slot: one of the two fails
                    run_id = insert_id(conn, insert(_runs).values(
                        batch=batch, slot=slot, status=BatchRunStatus.RUNNING.value,
                        paths=[str(p) for p in paths], reprocess=reprocess, owner=owner,
                        lease_until=now + lease_s, started_at=now, resumed=0, options=dict(options or {}),
                    ))
                return _run_in(conn, run_id)
            except IntegrityError:
                existing = _run_for_slot(conn, batch, slot)
                if existing is None:
                    raise StoreError(f"batch run {batch} at {slot}: refused, yet not recorded") from None
        return _take_over(conn, existing, owner, lease_s, now)


def take_over(engine: Engine, run_id: int, owner: str, lease_s: float, now: float) -> BatchRun | None:
    """Hold a run that was interrupted, or whose holder's lease expired (it died), to resume it; None when it
    is held by a live holder or has ended."""
    with write(engine) as conn:
        row = conn.execute(locked(select(_runs)).where(_runs.c.id == run_id)).mappings().first()
        if row is None:
            raise StoreError(f"no batch run {run_id}")
        return _take_over(conn, _from_row(row), owner, lease_s, now)


def _take_over(conn: Connection, run: BatchRun, owner: str, lease_s: float, now: float) -> BatchRun | None:
    gone = run.status is BatchRunStatus.RUNNING and (run.lease_until or 0.0) < now
    if run.status is not BatchRunStatus.INTERRUPTED and not gone:
        return None
    conn.execute(update(_runs).where(_runs.c.id == run.id).values(
        status=BatchRunStatus.RUNNING.value, owner=owner, lease_until=now + lease_s, resumed=_runs.c.resumed + 1,
    ))
    return _run_in(conn, run.id)


def resumable(engine: Engine, now: float) -> list[BatchRun]:
    """Runs to take over: interrupted, or running under a lease that expired; oldest first."""
    with read(engine) as conn:
        rows = conn.execute(select(_runs).where(or_(
            _runs.c.status == BatchRunStatus.INTERRUPTED.value,
            and_(_runs.c.status == BatchRunStatus.RUNNING.value, _runs.c.lease_until < now),
        )).order_by(_runs.c.id)).mappings()
        return [_from_row(r) for r in rows]


def interrupt(engine: Engine, owner: str) -> list[int]:
    """Mark the runs ``owner`` holds interrupted (it stops, or starts again after a crash); return their ids."""
    with write(engine) as conn:
        held = (_runs.c.status == BatchRunStatus.RUNNING.value) & (_runs.c.owner == owner)
        ids = sorted(conn.execute(select(_runs.c.id).where(held)).scalars())
        if ids:
            conn.execute(update(_runs).where(_runs.c.id.in_(ids)).values(
                status=BatchRunStatus.INTERRUPTED.value, lease_until=None))
        return ids


def take(engine: Engine, run_id: int, owner: str, input_id: int, *, until: float, now: float,
         previous: Mapping[str, Any] | None = None) -> bool:
    """Record that the run takes an input (before routing it), with the figures of its ``previous`` result, and
    renew the holder's lease to ``until``; False when the run took it before. LeaseLost when ``owner`` no longer
    holds the run."""
    with write(engine) as conn:
        _held(conn, run_id, owner, until)
        if conn.execute(select(_taken.c.input_id).where(
                _taken.c.run_id == run_id, _taken.c.input_id == input_id)).first() is not None:
            return False
        conn.execute(insert(_taken).values(run_id=run_id, input_id=input_id, taken_at=now,
                                           previous=None if previous is None else dict(previous)))
        return True


def set_job(engine: Engine, run_id: int, input_id: int, job_id: int) -> None:
    """Record the job queued for an input the run took."""
    with write(engine) as conn:
        conn.execute(update(_taken).where(_taken.c.run_id == run_id, _taken.c.input_id == input_id)
                     .values(job_id=job_id))


def renew(engine: Engine, run_id: int, owner: str, until: float) -> None:
    """Extend the holder's lease; LeaseLost when ``owner`` no longer holds the run."""
    with write(engine) as conn:
        _held(conn, run_id, owner, until)


def finish(engine: Engine, run_id: int, owner: str, status: BatchRunStatus, error: str | None, now: float
           ) -> BatchRun:
    """End the run ``owner`` holds (done, failed, or interrupted when it stops before it is done)."""
    with write(engine) as conn:
        _held(conn, run_id, owner, None)
        ended = status is not BatchRunStatus.INTERRUPTED
        conn.execute(update(_runs).where(_runs.c.id == run_id).values(
            status=status.value, finished_at=now if ended else None, lease_until=None,
            error=None if error is None else error[:ERROR_TEXT_LIMIT],
        ))
        return _run_in(conn, run_id)


def _held(conn: Connection, run_id: int, owner: str, until: float | None) -> None:
    row = conn.execute(locked(select(_runs.c.status, _runs.c.owner)).where(_runs.c.id == run_id)).first()
    if row is None:
        raise StoreError(f"no batch run {run_id}")
    if row.status != BatchRunStatus.RUNNING.value or row.owner != owner:
        raise LeaseLost(f"batch run {run_id} is no longer {owner}'s: {row.status}, held by {row.owner}")
    if until is not None:
        conn.execute(update(_runs).where(_runs.c.id == run_id).values(lease_until=until))


def taken(engine: Engine, run_id: int) -> dict[int, int | None]:
    """The inputs the run took, each with the job it queued for it (None: none yet, or none at all)."""
    with read(engine) as conn:
        return {r.input_id: r.job_id for r in conn.execute(
            select(_taken.c.input_id, _taken.c.job_id).where(_taken.c.run_id == run_id))}


def latest(engine: Engine, batch: str) -> BatchRun | None:
    """The run of ``batch`` for its latest slot, whatever its status."""
    with read(engine) as conn:
        row = conn.execute(select(_runs).where(_runs.c.batch == batch).order_by(_runs.c.slot.desc()).limit(1)
                           ).mappings().first()
        return None if row is None else _from_row(row)


def get(engine: Engine, run_id: int) -> BatchRun:
    with read(engine) as conn:
        return _run_in(conn, run_id)


def newest(engine: Engine, limit: int = 50) -> list[BatchRunProgress]:
    """The latest runs, newest first, each with its inputs and jobs counted by status."""
    with read(engine) as conn:
        runs = [_from_row(r) for r in conn.execute(select(_runs).order_by(_runs.c.id.desc()).limit(limit)
                                                   ).mappings()]
        ids = [run.id for run in runs]
        inputs: dict[int, int] = {run_id: count for run_id, count in conn.execute(
            select(_taken.c.run_id, func.count()).where(_taken.c.run_id.in_(ids)).group_by(_taken.c.run_id))}
        jobs: dict[int, dict[JobStatus, int]] = {run_id: {} for run_id in ids}
        for run_id, status, count in conn.execute(
                select(_taken.c.run_id, _jobs.c.status, func.count())
                .join(_jobs, _jobs.c.id == _taken.c.job_id)
                .where(_taken.c.run_id.in_(ids))
                .group_by(_taken.c.run_id, _jobs.c.status)):
            jobs[run_id][JobStatus(status)] = count
        verdicts = batch_review.verdict_counts(conn, ids)
    return [BatchRunProgress(run, inputs.get(run.id, 0), jobs[run.id], None, verdicts=verdicts[run.id])
            for run in runs]


def progress(engine: Engine, run_id: int) -> BatchRunProgress:
    """One run with its inputs, its jobs by status, the mean duration of those finished, and its failures."""
    with read(engine) as conn:
        run = _run_in(conn, run_id)
        rows = conn.execute(
            select(_taken.c.input_id, _taken.c.job_id, _jobs.c.status, _jobs.c.started_at, _jobs.c.finished_at,
                   _jobs.c.last_error, schema.inputs.c.path)
            .join(schema.inputs, schema.inputs.c.id == _taken.c.input_id)
            .outerjoin(_jobs, _jobs.c.id == _taken.c.job_id)
            .where(_taken.c.run_id == run_id)
            .order_by(_taken.c.taken_at, _taken.c.input_id)
        ).all()
        verdicts = batch_review.verdict_counts(conn, [run_id])[run_id]
        discordant = tuple(batch_review.compared_in(conn, run_id, Verdict.DISCORDANT))
    jobs: dict[JobStatus, int] = {}
    durations: list[float] = []
    failures = []
    for row in rows:
        if row.job_id is None:
            continue
        status = JobStatus(row.status)
        jobs[status] = jobs.get(status, 0) + 1
        if status.finished and row.started_at is not None and row.finished_at is not None:
            durations.append(row.finished_at - row.started_at)
        if status is JobStatus.FAILED:
            failures.append(BatchRunFailure(row.job_id, row.input_id, Path(row.path), row.last_error))
    mean = sum(durations) / len(durations) if durations else None
    return BatchRunProgress(run, len(rows), jobs, mean, tuple(failures), verdicts, discordant)


def _run_for_slot(conn: Connection, batch: str, slot: float) -> BatchRun | None:
    row = conn.execute(locked(select(_runs)).where(_runs.c.batch == batch, _runs.c.slot == slot)).mappings().first()
    return None if row is None else _from_row(row)


def _run_in(conn: Connection, run_id: int) -> BatchRun:
    row = conn.execute(select(_runs).where(_runs.c.id == run_id)).mappings().first()
    if row is None:
        raise StoreError(f"no batch run {run_id}")
    return _from_row(row)


def _from_row(row: RowMapping) -> BatchRun:
    """The record of a row: the columns are the record's fields."""
    return BatchRun(**{**row, "status": BatchRunStatus(row["status"]), "reprocess": bool(row["reprocess"]),
                       "paths": tuple(Path(str(p)) for p in row["paths"] or ()), "options": row["options"] or {}})
