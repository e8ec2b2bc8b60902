"""Received DICOM instances: one row per SOP Instance UID, pointing at its file on disk and at its series input.

Recording an instance also creates or grows its series (through :mod:`agent.store.inputs`) in the same
transaction. All SQL on the ``instances`` table is here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Connection, Engine, func, insert, select

from agent.records import Instance
from agent.store import inputs, schema
from agent.store.engine import read, write


def add(engine: Engine, insts: Sequence[Instance]) -> list[bool]:
    """Record several instances in one transaction (one commit); for each, whether it was new."""
    now = time.time()
    with write(engine) as conn:
        return [_record(conn, inst, now) for inst in insts]


def _record(conn: Connection, inst: Instance, now: float) -> bool:
    known = conn.execute(
        select(schema.instances.c.id).where(schema.instances.c.sop_instance_uid == inst.sop_instance_uid)
    ).first()
    if known is not None:
        return False
    input_id, fingerprint, count = inputs.series_for_instance(conn, inst, now)
    conn.execute(
        insert(schema.instances).values(
            sop_instance_uid=inst.sop_instance_uid,
            sop_class_uid=inst.sop_class_uid,
            study_uid=inst.study_uid,
            series_uid=inst.series_uid,
            input_id=input_id,
            path=str(inst.path),
            size=inst.size,
            source=inst.source,
            received_at=now,
        )
    )
    inputs.instance_added(conn, input_id, fingerprint, count, inst.sop_instance_uid, now)
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
