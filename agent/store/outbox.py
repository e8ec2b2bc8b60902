"""The outbox: DICOM objects waiting for (or delivered to) a destination such as PACS, one entry per
(destination, SOP Instance UID), with attempts, the peer's last status and when to try next.

Entries are queued by :func:`add`, or by :func:`put` inside a job's success transaction (see
:func:`agent.store.jobs.succeed`), so that a job's success and its outbox entries commit together. An entry
stays until the destination acknowledges it. All SQL on the ``outbox`` table is here.

Several daemons may share one outbox: a sender takes due entries with :func:`claim`, under its daemon's name
and a lease, so that no other sender takes them while it delivers; recording an attempt (:func:`sent`,
:func:`failed`, :func:`substitute`) clears the claim. Entries a daemon claimed and never resolved (it died
mid-round) are due again for any sender once the lease lapses, and at once for the same daemon restarted
(:func:`release`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, RowMapping, func, insert, or_, select, update

from agent.errors import StoreError
from agent.records import Delivery, OutboxItem, OutboxStatus
from agent.store import schema
from agent.store.engine import ERROR_TEXT_LIMIT, for_claim, greatest, grouped, insert_id, locked, read, write

_outbox = schema.outbox
UNCLAIMED: dict[str, Any] = {"claimed_by": None, "lease_until": None}  # the values every recorded attempt sets


def add(
    engine: Engine, destination: str, path: Path, sop_class_uid: str, sop_instance_uid: str, job_id: int | None = None
) -> tuple[OutboxItem, bool]:
    """Queue an object for a destination; return (item, queued_now).

    One entry per (destination, SOP Instance UID): an object already sent or waiting is not queued twice;
    a failed or cancelled one, or a new file for the same UID (a superseding result), is queued again.
    """
    with write(engine) as conn:
        return put(conn, Delivery(destination, path, sop_class_uid, sop_instance_uid), job_id, time.time())


def put(conn: Connection, d: Delivery, job_id: int | None, now: float) -> tuple[OutboxItem, bool]:
    """:func:`add` inside the caller's transaction (a job's success queues its objects with it)."""
    row = (
        conn.execute(
            locked(select(schema.outbox)).where(
                schema.outbox.c.destination == d.destination, schema.outbox.c.sop_instance_uid == d.sop_instance_uid
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        item_id = insert_id(
            conn,
            insert(schema.outbox).values(
                job_id=job_id,
                destination=d.destination,
                path=str(d.path),
                sop_class_uid=d.sop_class_uid,
                sop_instance_uid=d.sop_instance_uid,
                status=OutboxStatus.PENDING.value,
                attempts=0,
                next_attempt_at=0.0,
                created_at=now,
                updated_at=now,
            ),
        )
        return _item(conn, item_id), True
    same_file = row["path"] == str(d.path)
    if row["status"] in (OutboxStatus.PENDING.value, OutboxStatus.SENT.value) and same_file:
        return _from_row(row), False
    conn.execute(
        update(schema.outbox)
        .where(schema.outbox.c.id == row["id"])
        .values(
            job_id=job_id,
            path=str(d.path),
            sop_class_uid=d.sop_class_uid,
            status=OutboxStatus.PENDING.value,
            attempts=0,
            last_status=None,
            last_error=None,
            next_attempt_at=0.0,
            updated_at=now,
            sent_at=None,
        )
    )
    return _item(conn, row["id"]), True


def due(engine: Engine, now: float | None = None, limit: int = 500, owner: str | None = None
        ) -> list[OutboxItem]:
    """Pending entries whose next attempt is due and that no sender holds (but ``owner``), by destination then
    age (read only: a sender takes them with :func:`claim`)."""
    now = time.time() if now is None else now
    with read(engine) as conn:
        rows = conn.execute(
            select(_outbox).where(_takeable(now, owner)).order_by(_outbox.c.destination, _outbox.c.id).limit(limit)
        ).mappings()
        return [_from_row(r) for r in rows]


def claim(engine: Engine, owner: str | None, lease_s: float, now: float | None = None, limit: int = 500
          ) -> list[OutboxItem]:
    """Take the due entries for ``owner``'s sender until ``now + lease_s``: those no sender holds, those whose
    claim lapsed, and ``owner``'s own unresolved ones; by destination then age. On PostgreSQL rows another
    claimer is taking at this moment are passed over (``SKIP LOCKED``)."""
    now = time.time() if now is None else now
    with write(engine) as conn:
        ids = list(conn.execute(
            for_claim(select(_outbox.c.id).where(_takeable(now, owner))
                      .order_by(_outbox.c.destination, _outbox.c.id).limit(limit))
        ).scalars())
        if not ids:
            return []
        conn.execute(update(_outbox).where(_outbox.c.id.in_(ids)).values(claimed_by=owner, lease_until=now + lease_s))
        rows = conn.execute(
            select(_outbox).where(_outbox.c.id.in_(ids)).order_by(_outbox.c.destination, _outbox.c.id)
        ).mappings()
        return [_from_row(r) for r in rows]


def release(engine: Engine, owner: str) -> int:
    """Give up ``owner``'s claims (its daemon starts again: what it held when it stopped is due at once)."""
    with write(engine) as conn:
        return conn.execute(update(_outbox).where(_outbox.c.claimed_by == owner).values(**UNCLAIMED)).rowcount


def _takeable(now: float, owner: str | None) -> ColumnElement[bool]:
    """Pending, due, and held by no sender, or by ``owner``'s (its own claims of a round cut short)."""
    free = [_outbox.c.lease_until.is_(None), _outbox.c.lease_until < now]
    if owner is not None:
        free.append(_outbox.c.claimed_by == owner)
    return (_outbox.c.status == OutboxStatus.PENDING.value) & (_outbox.c.next_attempt_at <= now) & or_(*free)


def sent(engine: Engine, item_id: int, status: int) -> None:
    """Record the destination's acknowledgement (its DICOM ``status``)."""
    now = time.time()
    with write(engine) as conn:
        conn.execute(
            update(schema.outbox)
            .where(schema.outbox.c.id == item_id)
            .values(
                status=OutboxStatus.SENT.value,
                last_status=status,
                last_error=None,
                attempts=schema.outbox.c.attempts + 1,
                sent_at=now,
                updated_at=now,
                **UNCLAIMED,
            )
        )


def failed(
    engine: Engine, item_id: int, error: str, *, status: int | None = None, retry_at: float | None = None
) -> OutboxItem:
    """Record a failed attempt: pending again at ``retry_at``, or failed for good when it is None."""
    now = time.time()
    with write(engine) as conn:
        values: dict[str, Any] = {
            "last_error": error[:ERROR_TEXT_LIMIT],
            "last_status": status,
            "updated_at": now,
            "attempts": schema.outbox.c.attempts + 1,
            **UNCLAIMED,
        }
        if retry_at is None:
            values["status"] = OutboxStatus.FAILED.value
        else:
            values["next_attempt_at"] = retry_at
        conn.execute(update(schema.outbox).where(schema.outbox.c.id == item_id).values(**values))
        return _item(conn, item_id)


def substitute(
    engine: Engine, item_id: int, path: Path, sop_class_uid: str, sop_instance_uid: str, note: str
) -> OutboxItem:
    """Send another object in place of this entry's (a fallback the destination accepts), at once."""
    with write(engine) as conn:
        conn.execute(
            update(schema.outbox)
            .where(schema.outbox.c.id == item_id)
            .values(
                path=str(path), sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid,
                status=OutboxStatus.PENDING.value, next_attempt_at=0.0, note=note[:ERROR_TEXT_LIMIT],
                updated_at=time.time(), **UNCLAIMED,
            )
        )
        return _item(conn, item_id)


def retry(engine: Engine, item_id: int) -> OutboxItem:
    with write(engine) as conn:
        item = _item(conn, item_id, lock=True)
        if item.status not in (OutboxStatus.FAILED, OutboxStatus.CANCELLED, OutboxStatus.PENDING):
            raise StoreError(f"outbox item {item_id} is {item.status.value}; it was delivered already")
        conn.execute(
            update(schema.outbox)
            .where(schema.outbox.c.id == item_id)
            .values(status=OutboxStatus.PENDING.value, attempts=0, next_attempt_at=0.0, updated_at=time.time(),
                    **UNCLAIMED)
        )
        return _item(conn, item_id)


def cancel(engine: Engine, item_id: int) -> OutboxItem:
    with write(engine) as conn:
        item = _item(conn, item_id, lock=True)
        if item.status is not OutboxStatus.PENDING:
            raise StoreError(f"outbox item {item_id} is {item.status.value}; only pending items can be cancelled")
        conn.execute(
            update(schema.outbox)
            .where(schema.outbox.c.id == item_id)
            .values(status=OutboxStatus.CANCELLED.value, updated_at=time.time(), **UNCLAIMED)
        )
        return _item(conn, item_id)


def newest(engine: Engine, status: OutboxStatus | None = None, limit: int = 100) -> list[OutboxItem]:
    """The most recent entries (of one status, when given), newest first."""
    query = select(schema.outbox).order_by(schema.outbox.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(schema.outbox.c.status == status.value)
    with read(engine) as conn:
        return [_from_row(r) for r in conn.execute(query).mappings()]


def next_due(engine: Engine) -> float | None:
    """When the next pending entry is due for a sender: its next attempt, or when another's claim lapses."""
    with read(engine) as conn:
        when = greatest(conn, _outbox.c.next_attempt_at, func.coalesce(_outbox.c.lease_until, 0.0))
        value = conn.execute(
            select(func.min(when)).where(_outbox.c.status == OutboxStatus.PENDING.value)
        ).scalar()
        return None if value is None else float(value)


def count_by_status(conn: Connection) -> dict[str, int]:
    return grouped(conn, schema.outbox.c.status)


def _item(conn: Connection, item_id: int, *, lock: bool = False) -> OutboxItem:
    query = select(schema.outbox).where(schema.outbox.c.id == item_id)
    row = conn.execute(locked(query) if lock else query).mappings().first()
    if row is None:
        raise StoreError(f"no outbox item {item_id}")
    return _from_row(row)


def _from_row(row: RowMapping) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        job_id=row["job_id"],
        destination=row["destination"],
        path=Path(row["path"]),
        sop_class_uid=row["sop_class_uid"],
        sop_instance_uid=row["sop_instance_uid"],
        status=OutboxStatus(row["status"]),
        attempts=row["attempts"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sent_at=row["sent_at"],
        note=row["note"],
        claimed_by=row["claimed_by"],
        lease_until=row["lease_until"],
    )
