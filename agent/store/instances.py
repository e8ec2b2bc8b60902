"""Received DICOM instances: one row per SOP Instance UID, pointing at its file on disk and at its series input.

Recording an instance also creates or grows its series (through :mod:`agent.store.inputs`) in the same
transaction. All SQL on the ``instances`` table is here.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update

from agent.records import Instance
from agent.store import events, inputs, schema
from agent.store.driver import DriverConnection, DriverStatement, HeldConnection
from agent.store.engine import read, write

_ROW_KEYS = ("sop_instance_uid", "sop_class_uid", "study_uid", "series_uid", "input_id", "path", "size", "source",
             "received_at")


@functools.cache
def _known(count: int) -> DriverStatement:
    """Which of ``count`` SOP Instance UIDs (bound as u0, u1, …) are recorded: one statement for a batch."""
    column = schema.instances.c.sop_instance_uid
    return DriverStatement(select(column).where(column.in_([bindparam(f"u{i}") for i in range(count)])))


@functools.cache
def _insert(count: int) -> DriverStatement:
    """``count`` rows in one multi-row INSERT (values bound as <column>_<row>)."""
    rows: list[dict[str, Any]] = [{key: bindparam(f"{key}_{i}") for key in _ROW_KEYS} for i in range(count)]
    return DriverStatement(insert(schema.instances).values(rows))


def add(held: HeldConnection, insts: Sequence[Instance]) -> list[bool]:
    """Record several instances in one transaction (one commit); for each, whether it was new.

    The receive path's hot spot (see :mod:`agent.store.driver`): per batch, one lookup of all its instances,
    one lookup and one update per series, one multi-row insert, each statement compiled once per batch size,
    all on the driver in a transaction begun and committed on the driver. Only the first instance of a series
    needs more (the series' row, made through SQLAlchemy): such a batch runs again in a SQLAlchemy
    transaction."""
    now = time.time()
    try:
        with held.raw_write() as tx:
            return _add(tx, insts, now)
    except _NewSeries:
        with held.write() as conn:
            return _add(conn, insts, now)


class _NewSeries(Exception):
    """A batch holds the first instance of a series: it needs a SQLAlchemy transaction."""


def _add(conn: DriverConnection, insts: Sequence[Instance], now: float) -> list[bool]:
    uids = list(dict.fromkeys(inst.sop_instance_uid for inst in insts))  # the same instance twice: once
    known = {str(row[0]) for row in _known(len(uids)).rows(conn, {f"u{i}": u for i, u in enumerate(uids)})}
    new: list[bool] = []
    by_series: dict[str, list[Instance]] = {}
    for inst in insts:
        uid = inst.sop_instance_uid
        is_new = uid not in known
        new.append(is_new)
        if is_new:
            known.add(uid)  # the same instance twice in one batch is recorded once
            by_series.setdefault(inst.series_uid, []).append(inst)
    rows = []
    for series in by_series.values():
        found = inputs.find_series(conn, series[0].series_uid)
        if found is None and not isinstance(conn, Connection):
            raise _NewSeries
        input_id, fingerprint, count = found or inputs.create_series(cast(Connection, conn), series[0], now)
        rows += [_row(inst, input_id, now) for inst in series]
        inputs.instances_added(conn, input_id, fingerprint, count, [i.sop_instance_uid for i in series], now)
    if rows:
        _insert(len(rows)).rows(conn, {f"{key}_{i}": row[key] for i, row in enumerate(rows) for key in _ROW_KEYS})
    return new


def _row(inst: Instance, input_id: int, now: float) -> dict[str, object]:
    return {"sop_instance_uid": inst.sop_instance_uid, "sop_class_uid": inst.sop_class_uid,
            "study_uid": inst.study_uid, "series_uid": inst.series_uid, "input_id": input_id,
            "path": str(inst.path), "size": inst.size, "source": inst.source, "received_at": now}


def changed(engine: Engine, inst: Instance, content: str) -> bool:
    """Record that a known instance was stored again with another dataset (``content``: a digest of it): its
    series' fingerprint changes, so its content counts as new (receiving again, then routed anew), and the
    change is journalled. False when the instance is not recorded."""
    now = time.time()
    with write(engine) as conn:
        row = conn.execute(select(schema.instances.c.id, schema.instances.c.input_id).where(
            schema.instances.c.sop_instance_uid == inst.sop_instance_uid)).first()
        if row is None:
            return False
        conn.execute(update(schema.instances).where(schema.instances.c.id == row.id).values(
            size=inst.size, source=inst.source, received_at=now))
        inputs.content_changed(conn, row.input_id, f"{inst.sop_instance_uid}:{content}", now)
        events.record(conn, "instance-changed", input_id=row.input_id,
                      detail=f"{inst.sop_instance_uid} stored again with another dataset")
        return True


def has(engine: Engine, sop_instance_uid: str) -> bool:
    with read(engine) as conn:
        return (
            conn.execute(
                select(schema.instances.c.id).where(schema.instances.c.sop_instance_uid == sop_instance_uid)
            ).first()
            is not None
        )


def paths(engine: Engine, input_id: int) -> list[Path]:
    """The files of an input's instances, in the order they were received."""
    with read(engine) as conn:
        rows = conn.execute(
            select(schema.instances.c.path)
            .where(schema.instances.c.input_id == input_id)
            .order_by(schema.instances.c.id)
        ).scalars()
        return [Path(p) for p in rows]


def count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(schema.instances)).scalar_one())
