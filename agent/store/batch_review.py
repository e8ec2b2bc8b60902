"""Batch results against the previous ones: what a batch job's success is compared with, and the verdicts.

When a run takes an input it records the figures of the input's previous result (``batch_run_inputs.previous``).
When the job it queued succeeds, the executor reads :func:`pending` (the newest run that queued the job and has
not compared it yet: a job row is re-queued by every night's run), compares, and records the verdict with the
job's success, in its transaction (:func:`record`, called by :func:`agent.store.jobs.succeed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Connection, Engine, func, select, update

from agent.records import BatchComparison, BatchReview, Verdict
from agent.store import schema
from agent.store.engine import read

_runs = schema.batch_runs
_taken = schema.batch_run_inputs


def pending(engine: Engine, job_id: int) -> BatchReview | None:
    """The run that queued ``job_id`` and awaits its result, with the previous result's figures; None when no
    run does (the job is not a batch's, or its result was compared before)."""
    with read(engine) as conn:
        row = conn.execute(
            select(_taken.c.run_id, _taken.c.input_id, _taken.c.previous, _runs.c.batch, _runs.c.options)
            .join(_runs, _runs.c.id == _taken.c.run_id)
            .where(_taken.c.job_id == job_id, _taken.c.compared_at.is_(None))
            .order_by(_taken.c.run_id.desc()).limit(1)
        ).first()
    if row is None:
        return None
    return BatchReview(row.run_id, row.input_id, row.batch, row.options or {}, row.previous)


def run_of_job(engine: Engine, job_id: int) -> int | None:
    """The newest run that queued ``job_id`` (a job row is queued again by each night's run)."""
    with read(engine) as conn:
        found: int | None = conn.execute(select(func.max(_taken.c.run_id)).where(_taken.c.job_id == job_id)
                                         ).scalar()
        return found


def record(conn: Connection, review: BatchReview, verdict: Verdict, reasons: Sequence[str], sent: bool,
           now: float) -> None:
    conn.execute(update(_taken).where(_taken.c.run_id == review.run_id, _taken.c.input_id == review.input_id)
                 .values(verdict=verdict.value, reasons=list(reasons), sent=sent, compared_at=now))


def verdict_counts(conn: Connection, run_ids: Sequence[int]) -> dict[int, dict[Verdict, int]]:
    counts: dict[int, dict[Verdict, int]] = {run_id: {} for run_id in run_ids}
    for run_id, verdict, count in conn.execute(
            select(_taken.c.run_id, _taken.c.verdict, func.count())
            .where(_taken.c.run_id.in_(run_ids), _taken.c.verdict.is_not(None))
            .group_by(_taken.c.run_id, _taken.c.verdict)):
        counts[run_id][Verdict(verdict)] = count
    return counts


def compared(engine: Engine, run_id: int, verdict: Verdict | None = None) -> list[BatchComparison]:
    """The results the run compared (only those with ``verdict``, when given), in the order it took them."""
    with read(engine) as conn:
        return compared_in(conn, run_id, verdict)


def compared_in(conn: Connection, run_id: int, verdict: Verdict | None = None) -> list[BatchComparison]:
    query = (select(_taken.c.input_id, _taken.c.job_id, _taken.c.verdict, _taken.c.reasons, _taken.c.sent,
                    schema.inputs.c.path)
             .join(schema.inputs, schema.inputs.c.id == _taken.c.input_id)
             .where(_taken.c.run_id == run_id, _taken.c.verdict.is_not(None))
             .order_by(_taken.c.taken_at, _taken.c.input_id))
    if verdict is not None:
        query = query.where(_taken.c.verdict == verdict.value)
    return [BatchComparison(r.input_id, r.job_id, Path(r.path), Verdict(r.verdict), tuple(r.reasons or ()),
                            bool(r.sent)) for r in conn.execute(query)]
