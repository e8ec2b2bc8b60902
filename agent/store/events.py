"""The event journal: one row per thing that happened to a job or an input (queued, started, retry, failed,
requeued, cancelled, succeeded, ignored, context).

Rows are written by the other concept modules through :func:`record`, on the connection of the transaction
that made the change, so a change and its journal row commit together.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from agent.store import schema
from agent.store.engine import ERROR_TEXT_LIMIT, read


def record(
    conn: Connection,
    name: str,
    *,
    job_id: int | None = None,
    input_id: int | None = None,
    detail: str | None = None,
) -> None:
    """Journal an event inside the caller's transaction."""
    conn.execute(
        insert(schema.events).values(
            at=time.time(),
            job_id=job_id,
            input_id=input_id,
            event=name,
            detail=None if detail is None else detail[:ERROR_TEXT_LIMIT],
        )
    )


def for_job(engine: Engine, job_id: int) -> list[dict[str, Any]]:
    """A job's events, oldest first, as plain rows."""
    with read(engine) as conn:
        rows = conn.execute(
            select(schema.events).where(schema.events.c.job_id == job_id).order_by(schema.events.c.id)
        ).mappings()
        return [dict(r) for r in rows]
