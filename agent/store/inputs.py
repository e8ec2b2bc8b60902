"""Inputs: what a job runs on — a DICOM series (keyed by its Series Instance UID, grown one instance at a time)
or a file such as a slide (keyed by its resolved path) — with its content fingerprint and its state.

A series' fingerprint is the XOR of its instances' UID hashes, updated in place as instances arrive, so
recording an instance costs the same whatever the series size. All SQL on the ``inputs`` table is here.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, bindparam, insert, select, update

from agent.errors import StoreError
from agent.records import Input, InputKind, InputState, Instance
from agent.store import events, schema
from agent.store.driver import DriverConnection, DriverStatement
from agent.store.engine import ERROR_TEXT_LIMIT, grouped, insert_id, locked, read, write

EMPTY_FINGERPRINT = "0" * 32


def xor_fingerprint(fingerprint: str, uid: str) -> str:
    """Order-independent set hash: XOR of 128-bit UID hashes (adding a UID twice would cancel; we never do)."""
    value = int(fingerprint, 16) ^ int(hashlib.sha256(uid.encode()).hexdigest()[:32], 16)
    return f"{value:032x}"


# ------------------------------------------------------------------------------------------- file inputs


def upsert_file(
    engine: Engine, kind: InputKind, path: Path, fingerprint: str, attrs: Mapping[str, Any]
) -> tuple[Input, bool]:
    """Record a file input (a slide); return it and whether it is new or changed since last seen."""
    key = str(path.resolve())
    now = time.time()
    with write(engine) as conn:
        row = conn.execute(locked(select(schema.inputs)).where(schema.inputs.c.key == key)).mappings().first()
        if row is not None and row["fingerprint"] == fingerprint:
            return _input(row), False
        values = {
            "kind": kind.value,
            "path": key,
            "fingerprint": fingerprint,
            "attrs": dict(attrs),
            "instance_count": 1,
            "state": InputState.RECEIVING.value,
            "reason": None,
            "updated_at": now,
        }
        if row is None:
            conn.execute(insert(schema.inputs).values(key=key, created_at=now, **values))
        else:
            conn.execute(update(schema.inputs).where(schema.inputs.c.id == row["id"]).values(**values))
        fresh = conn.execute(select(schema.inputs).where(schema.inputs.c.key == key)).mappings().one()
        return _input(fresh), True


# ------------------------------------------------------------------------------------------- series (with instances)


# the receive path's statements, run on the driver's cursor (see agent.store.engine.DriverStatement)
_SERIES = DriverStatement(  # locked: the series' count and fingerprint are rewritten from what this reads
    locked(select(schema.inputs.c.id, schema.inputs.c.fingerprint, schema.inputs.c.instance_count)).where(
        schema.inputs.c.key == bindparam("key")
    )
)
_GROWN = DriverStatement(
    update(schema.inputs)
    .where(schema.inputs.c.id == bindparam("input_id"))
    .values(instance_count=bindparam("count"), fingerprint=bindparam("fp"), state=InputState.RECEIVING.value,
            reason=None, updated_at=bindparam("now"))
)


def find_series(conn: DriverConnection, series_uid: str) -> tuple[int, str, int] | None:
    """The series input of a series UID, locked for the rest of the transaction: its id, fingerprint and
    instance count; None when the series is new."""
    found = _SERIES.rows(conn, {"key": series_uid})
    return (int(found[0][0]), str(found[0][1]), int(found[0][2])) if found else None


def create_series(conn: Connection, inst: Instance, now: float) -> tuple[int, str, int]:
    """The series input of a series' first instance, made (receiving, empty): its id, fingerprint and
    instance count."""
    input_id = insert_id(
        conn,
        insert(schema.inputs).values(
            kind=InputKind.DICOM_SERIES.value,
            key=inst.series_uid,
            path=str(inst.path.parent),
            study_uid=inst.study_uid,
            series_uid=inst.series_uid,
            fingerprint=EMPTY_FINGERPRINT,
            attrs=inst.attrs,
            instance_count=0,
            state=InputState.RECEIVING.value,
            created_at=now,
            updated_at=now,
        ),
    )
    return input_id, EMPTY_FINGERPRINT, 0


def instances_added(
    conn: DriverConnection, input_id: int, fingerprint: str, count: int, sop_instance_uids: Sequence[str], now: float
) -> None:
    """Count new instances into their series (``fingerprint`` and ``count`` as before them): receiving again."""
    for uid in sop_instance_uids:
        fingerprint = xor_fingerprint(fingerprint, uid)
    _GROWN.rows(conn, {"input_id": input_id, "count": count + len(sop_instance_uids), "fp": fingerprint, "now": now})


def content_changed(conn: Connection, input_id: int, token: str, now: float) -> None:
    """A series' stored content changed without a new instance (one was replaced): its fingerprint takes
    ``token`` in, and it is receiving again, to be routed anew once quiet."""
    row = conn.execute(locked(select(schema.inputs.c.fingerprint)).where(schema.inputs.c.id == input_id)).first()
    if row is None:
        raise StoreError(f"no input {input_id}")
    conn.execute(update(schema.inputs).where(schema.inputs.c.id == input_id).values(
        fingerprint=xor_fingerprint(row.fingerprint, token), state=InputState.RECEIVING.value, reason=None,
        updated_at=now))


# ------------------------------------------------------------------------------------------- reading


def get(engine: Engine, input_id: int) -> Input:
    with read(engine) as conn:
        row = conn.execute(select(schema.inputs).where(schema.inputs.c.id == input_id)).mappings().first()
    if row is None:
        raise StoreError(f"no input {input_id}")
    return _input(row)


def find(engine: Engine, key: str) -> Input | None:
    with read(engine) as conn:
        row = conn.execute(select(schema.inputs).where(schema.inputs.c.key == key)).mappings().first()
    return None if row is None else _input(row)


def of_study(engine: Engine, study_uid: str) -> list[Input]:
    """The study's series that retention has not purged, in the order they were recorded."""
    with read(engine) as conn:
        rows = conn.execute(select(schema.inputs).where(
            schema.inputs.c.study_uid == study_uid, schema.inputs.c.purged_at.is_(None)
        ).order_by(schema.inputs.c.id)).mappings()
        return [_input(r) for r in rows]


def receiving(engine: Engine, quiet_before: float) -> list[Input]:
    """Inputs still receiving whose last change is older than ``quiet_before``."""
    with read(engine) as conn:
        rows = conn.execute(
            select(schema.inputs)
            .where(schema.inputs.c.state == InputState.RECEIVING.value)
            .where(schema.inputs.c.updated_at <= quiet_before)
            .order_by(schema.inputs.c.id)
        ).mappings()
        return [_input(r) for r in rows]


def newest(engine: Engine, limit: int = 100) -> list[Input]:
    """The most recently created inputs, newest first."""
    with read(engine) as conn:
        rows = conn.execute(select(schema.inputs).order_by(schema.inputs.c.id.desc()).limit(limit)).mappings()
        return [_input(r) for r in rows]


def count_by_kind(conn: Connection) -> dict[str, int]:
    return grouped(conn, schema.inputs.c.kind)


def count_by_state(conn: Connection) -> dict[str, int]:
    return grouped(conn, schema.inputs.c.state)


# ------------------------------------------------------------------------------------------- changing


def set_context(engine: Engine, input_id: int, context: Mapping[str, Any], source: str | None) -> Input:
    """Replace a slide's patient/study context (``attrs["context"]``), e.g. from a sidecar added later."""
    with write(engine) as conn:
        row = conn.execute(locked(select(schema.inputs)).where(schema.inputs.c.id == input_id)).mappings().first()
        if row is None:
            raise StoreError(f"no input {input_id}")
        attrs = {k: v for k, v in dict(row["attrs"] or {}).items() if k not in ("context", "context_source")}
        if context:
            attrs |= {"context": dict(context), "context_source": source}
        conn.execute(update(schema.inputs).where(schema.inputs.c.id == input_id).values(attrs=attrs))
        events.record(conn, "context", input_id=input_id, detail=f"context from {source or 'nothing'}")
        fresh = conn.execute(select(schema.inputs).where(schema.inputs.c.id == input_id)).mappings().one()
        return _input(fresh)


def mark_ignored(engine: Engine, input_id: int, reason: str) -> None:
    with write(engine) as conn:
        conn.execute(
            update(schema.inputs)
            .where(schema.inputs.c.id == input_id)
            .values(state=InputState.IGNORED.value, reason=reason[:ERROR_TEXT_LIMIT], updated_at=time.time())
        )
        events.record(conn, "ignored", input_id=input_id, detail=reason)


def route(conn: Connection, input_id: int) -> str:
    """Mark an input routed (a job is being queued for it, inside the caller's transaction); return its
    fingerprint. Its ``updated_at`` is kept: routing is not a change of content."""
    inp = conn.execute(locked(select(schema.inputs)).where(schema.inputs.c.id == input_id)).mappings().first()
    if inp is None:
        raise StoreError(f"no input {input_id}")
    conn.execute(
        update(schema.inputs)
        .where(schema.inputs.c.id == input_id)
        .values(state=InputState.ROUTED.value, reason=None, updated_at=inp["updated_at"])
    )
    return str(inp["fingerprint"])


def _input(row: RowMapping) -> Input:
    return Input(
        id=row["id"],
        kind=InputKind(row["kind"]),
        key=row["key"],
        path=Path(row["path"]),
        fingerprint=row["fingerprint"],
        attrs=dict(row["attrs"] or {}),
        instance_count=row["instance_count"],
        state=InputState(row["state"]),
        reason=row["reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        study_uid=row["study_uid"],
        series_uid=row["series_uid"],
    )
