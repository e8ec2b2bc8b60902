"""The audit trail of the DICOM port: one row per association (accepted, with the instances stored on it) and
per connection refused before one (with the reason), written in batches by :mod:`agent.ops.audit`.

AE titles are whatever bytes a peer sent: they are stored with every non-printable character escaped
(``\\x00``, ``\\u200b``) and cut to the column's width, so a hostile title can neither break the database
(PostgreSQL refuses NUL) nor a terminal that prints it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Engine, RowMapping, Select, Table, insert, select

from agent.store import schema
from agent.store.engine import ERROR_TEXT_LIMIT, read, write
from dicom_node.records import AssociationRecord, RefusalReason

AE_LIMIT = 64  # an AE title is 16 characters; an escaped hostile one may be four times that
ADDRESS_LIMIT = 64


def printable(text: str, limit: int) -> str:
    """``text`` with every non-printable character escaped (as Python writes it), at most ``limit`` long."""
    out = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return out[:limit]


def add(engine: Engine, records: Sequence[AssociationRecord]) -> int:
    """Record the associations in one transaction; return how many."""
    if not records:
        return 0
    rows = [
        {
            "started_at": r.started_at,
            "ended_at": r.ended_at,
            "calling_ae": printable(r.calling_ae, AE_LIMIT),
            "called_ae": printable(r.called_ae, AE_LIMIT),
            "address": printable(r.address, ADDRESS_LIMIT),
            "refusal": None if r.refusal is None else r.refusal.value,
            "detail": printable(r.detail, ERROR_TEXT_LIMIT) or None,
            "instances_stored": r.instances_stored,
        }
        for r in records
    ]
    with write(engine) as conn:
        conn.execute(insert(schema.associations), rows)
    return len(rows)


def newest(engine: Engine, since: float | None = None, limit: int = 100) -> list[AssociationRecord]:
    """The latest associations (by start), newest first; only those started at or after ``since`` if given."""
    table = schema.associations
    query = select(table).order_by(table.c.started_at.desc(), table.c.id.desc()).limit(limit)
    if since is not None:
        query = query.where(table.c.started_at >= since)
    with read(engine) as conn:
        return [_from_row(row) for row in conn.execute(query).mappings()]


def oldest_since(engine: Engine, since: float, limit: int | None = None) -> list[AssociationRecord]:
    """The associations started at or after ``since``, oldest first (the first ``limit`` when given): an export."""
    query = oldest_first(schema.associations, schema.associations.c.started_at, since, limit)
    with read(engine) as conn:
        return [_from_row(row) for row in conn.execute(query).mappings()]


def oldest_first(table: Table, at: Column[float], since: float, limit: int | None) -> Select[Any]:
    """The rows of an audit table whose time ``at`` is ``since`` or later, oldest first, at most ``limit``."""
    query = select(table).where(at >= since).order_by(at, table.c.id)
    return query if limit is None else query.limit(limit)


def _from_row(row: RowMapping) -> AssociationRecord:
    refusal = row["refusal"]
    return AssociationRecord(
        calling_ae=row["calling_ae"], called_ae=row["called_ae"], address=row["address"],
        started_at=row["started_at"], ended_at=row["ended_at"],
        refusal=None if refusal is None else RefusalReason(refusal), detail=row["detail"] or "",
        instances_stored=row["instances_stored"],
    )
