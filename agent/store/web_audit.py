"""The audit trail of the web worklist (``web_audit``, revision 0006): every view of a case and every decision
or sign-off made on the web, with when, who (None: not signed in, as a refused sign-in), from which address, what
and on which job.

Whatever came from outside (a user name typed at sign-in, an address, a detail) is stored with every
non-printable character escaped and cut to its column's width, as the DICOM port's trail stores AE titles
(:func:`agent.store.audit.printable`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, RowMapping, insert

from agent.review_records import WebAuditEvent
from agent.store import schema
from agent.store.audit import oldest_first, printable
from agent.store.engine import ERROR_TEXT_LIMIT, read, write

USER_NAME_LIMIT = 128
ADDRESS_LIMIT = 64
ACTION_LIMIT = 32


def record(engine: Engine, events: Sequence[WebAuditEvent]) -> int:
    """Record the events in one transaction; return how many."""
    if not events:
        return 0
    rows = [
        {
            "at": e.at,
            "user_name": None if e.user_name is None else printable(e.user_name, USER_NAME_LIMIT),
            "address": printable(e.address, ADDRESS_LIMIT),
            "action": printable(e.action, ACTION_LIMIT),
            "job_id": e.job_id,
            "detail": None if e.detail is None else printable(e.detail, ERROR_TEXT_LIMIT),
        }
        for e in events
    ]
    with write(engine) as conn:
        conn.execute(insert(schema.web_audit), rows)
    return len(rows)


def since(engine: Engine, since: float, limit: int | None = None) -> list[WebAuditEvent]:
    """The events at or after ``since``, oldest first (the first ``limit`` of them when given)."""
    query = oldest_first(schema.web_audit, schema.web_audit.c.at, since, limit)
    with read(engine) as conn:
        return [_from_row(row) for row in conn.execute(query).mappings()]


def _from_row(row: RowMapping) -> WebAuditEvent:
    return WebAuditEvent(at=row["at"], user_name=row["user_name"], address=row["address"], action=row["action"],
                         job_id=row["job_id"], detail=row["detail"])
