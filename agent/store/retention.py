"""Retention: which inputs and result folders may be deleted because everything made from them was delivered,
and recording that they were. All SQL of retention is here; deleting the files is :mod:`agent.purge`'s.

A job's results are *delivered* when the job succeeded, its findings were made for PACS (no ``unsent_reason``:
results kept for lack of patient context are never delivered) and every outbox entry of the job is ``sent``. A
succeeded job without outbox entries (no destination takes results) is delivered when it finished; otherwise
when its last entry was acknowledged.

An input is eligible when it is not receiving, every job it ever had is delivered (one queued, running, failed
or cancelled job, or one with an entry pending, failed or cancelled, keeps it), and it had a job or was
ignored (no rule wanted it: nothing to deliver, e.g. the presentation states of a whole-study push). Its age
runs from the later of its last change and its jobs' deliveries. A job's result folder is eligible when the job
is delivered; its age runs from the delivery.

There is no review (sign-off) concept yet: when the worklist adds one, delivery must also require the
sign-off of every job, here, in :func:`_delivered`.

Purging an input deletes its instance rows (so that the same instances sent again are new, stored and
processed again), renames its key to ``purged:<id>`` (so that the same series or slide arriving again is a new
input with jobs of its own, the purged one keeping its history) and sets ``purged_at``; a series leaves an
empty successor under its key (see :func:`_successor`), ignored until instances arrive, never purged while
empty. Purging results sets the job's ``purged_at``. Each journals a ``purged`` event in the same
transaction, and checks eligibility again inside it, so a series that receives an instance or an input queued
again meanwhile is left alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    delete,
    exists,
    func,
    insert,
    not_,
    or_,
    select,
    update,
)

from agent.records import InputKind, InputState, JobStatus, OutboxStatus
from agent.store import events, schema
from agent.store.engine import greatest, locked, read, write
from agent.store.inputs import EMPTY_FINGERPRINT

PURGED_KEY_PREFIX = "purged:"


@dataclass(frozen=True)
class InputPurge:
    """An input whose files may be deleted: a DICOM series (its instances' files) or a slide (its file)."""

    input_id: int
    kind: InputKind
    path: Path  # the series folder, or the slide file
    series_uid: str | None
    done_at: float  # when its last job's results were delivered (or its last change, if later)
    files: tuple[Path, ...]  # the instances' files, or the slide file


@dataclass(frozen=True)
class ResultPurge:
    """A job whose result folder may be deleted."""

    job_id: int
    input_id: int
    result_path: Path
    done_at: float  # when its results were delivered


# ------------------------------------------------------------------------------------------- the predicates

_j, _o, _i = schema.jobs, schema.outbox, schema.inputs


def _delivered(job: Any) -> ColumnElement[bool]:
    """The job's results were delivered (see the module's docstring)."""
    return and_(
        job.c.status == JobStatus.SUCCEEDED.value,
        job.c.unsent_reason.is_(None),
        not_(exists().where(_o.c.job_id == job.c.id, _o.c.status != OutboxStatus.SENT.value)),
    )


def _delivered_at(job: Any) -> ColumnElement[Any]:
    last_sent = select(func.max(_o.c.sent_at)).where(_o.c.job_id == job.c.id).scalar_subquery()
    return func.coalesce(last_sent, job.c.finished_at, job.c.updated_at)


def _eligible_inputs(conn: Connection, older_than: float, input_id: int | None = None) -> list[Any]:
    jobs = _j.alias("j")
    undelivered = exists().where(jobs.c.input_id == _i.c.id, not_(_delivered(jobs)))
    any_job = exists().where(_j.c.input_id == _i.c.id)
    last_delivery = (
        select(_j.c.input_id, func.max(_delivered_at(_j)).label("at")).group_by(_j.c.input_id).subquery("d")
    )
    done_at = greatest(conn, _i.c.updated_at, func.coalesce(last_delivery.c.at, 0.0)).label("done_at")
    query = (
        select(_i.c.id, _i.c.kind, _i.c.path, _i.c.series_uid, done_at)
        .select_from(_i.outerjoin(last_delivery, last_delivery.c.input_id == _i.c.id))
        .where(
            _i.c.purged_at.is_(None),
            _i.c.state != InputState.RECEIVING.value,
            not_(undelivered),
            or_(_i.c.state == InputState.IGNORED.value, any_job),
            or_(_i.c.kind != InputKind.DICOM_SERIES.value, exists().where(schema.instances.c.input_id == _i.c.id)),
        )
    )
    if input_id is not None:
        query = query.where(_i.c.id == input_id)
    return [r for r in conn.execute(query).all() if r.done_at <= older_than]


def _eligible_results(conn: Connection, older_than: float, job_id: int | None = None) -> list[Any]:
    done_at = _delivered_at(_j).label("done_at")
    query = select(_j.c.id, _j.c.input_id, _j.c.result_path, done_at).where(
        _j.c.purged_at.is_(None), _j.c.result_path.is_not(None), _delivered(_j)
    )
    if job_id is not None:
        query = query.where(_j.c.id == job_id)
    return [r for r in conn.execute(query).all() if r.done_at <= older_than]


def _files(conn: Connection, row: Any) -> tuple[Path, ...]:
    if row.kind != InputKind.DICOM_SERIES.value:
        return (Path(row.path),)
    paths = conn.execute(
        select(schema.instances.c.path).where(schema.instances.c.input_id == row.id).order_by(schema.instances.c.id)
    ).scalars()
    return tuple(Path(p) for p in paths)


# ------------------------------------------------------------------------------------------- reading


def inputs(engine: Engine, older_than: float) -> list[InputPurge]:
    """Eligible inputs whose results were delivered at or before ``older_than``, oldest first."""
    with read(engine) as conn:
        rows = sorted(_eligible_inputs(conn, older_than), key=lambda r: (r.done_at, r.id))
        return [
            InputPurge(r.id, InputKind(r.kind), Path(r.path), r.series_uid, float(r.done_at), _files(conn, r))
            for r in rows
        ]


def results(engine: Engine, older_than: float) -> list[ResultPurge]:
    """Result folders of delivered jobs, delivered at or before ``older_than``, oldest first."""
    with read(engine) as conn:
        rows = sorted(_eligible_results(conn, older_than), key=lambda r: (r.done_at, r.id))
        return [ResultPurge(r.id, r.input_id, Path(r.result_path), float(r.done_at)) for r in rows]


# ------------------------------------------------------------------------------------------- recording


def purge_input(engine: Engine, input_id: int, older_than: float, detail: str) -> tuple[Path, ...] | None:
    """Record an input as purged if it is still eligible; return the files to delete (None: not eligible now)."""
    now = time.time()
    with write(engine) as conn:
        conn.execute(locked(select(_i.c.id).where(_i.c.id == input_id)))  # a series growing meanwhile waits
        (row, *_) = _eligible_inputs(conn, older_than, input_id) or (None,)
        if row is None:
            return None
        files = _files(conn, row)
        conn.execute(delete(schema.instances).where(schema.instances.c.input_id == input_id))
        conn.execute(
            update(_i).where(_i.c.id == input_id).values(key=f"{PURGED_KEY_PREFIX}{input_id}", purged_at=now)
        )
        if row.kind == InputKind.DICOM_SERIES.value:
            _successor(conn, input_id, now)
        events.record(conn, "purged", input_id=input_id, detail=detail)
        return files


def _successor(conn: Connection, purged_id: int, now: float) -> None:
    """An empty series input under the purged one's key, with its routing attributes: instances of the series
    sent again grow it like a new series (a job of its own), and are routed by the attributes even where the
    sender of the first instance records none for a series it has seen (the SCP sends them once per series)."""
    old = conn.execute(select(_i).where(_i.c.id == purged_id)).mappings().one()
    conn.execute(
        insert(_i).values(
            kind=old["kind"], key=old["series_uid"], path=old["path"], study_uid=old["study_uid"],
            series_uid=old["series_uid"], fingerprint=EMPTY_FINGERPRINT, attrs=old["attrs"], instance_count=0,
            state=InputState.IGNORED.value, created_at=now, updated_at=now,
            reason=f"its instances were purged by retention (input {purged_id}); sent again, they are processed "
                   "as a new series",
        )
    )


def purge_results(engine: Engine, job_id: int, older_than: float, detail: str) -> Path | None:
    """Record a job's result folder as purged if it is still eligible; return it (None: not eligible now)."""
    now = time.time()
    with write(engine) as conn:
        conn.execute(locked(select(_j.c.id).where(_j.c.id == job_id)))  # a job queued again meanwhile waits
        (row, *_) = _eligible_results(conn, older_than, job_id) or (None,)
        if row is None:
            return None
        conn.execute(update(_j).where(_j.c.id == job_id).values(purged_at=now))
        events.record(conn, "purged", job_id=job_id, input_id=row.input_id, detail=detail)
        return Path(row.result_path)
