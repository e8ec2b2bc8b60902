"""Who runs a job: claims, the leases that keep them, and putting jobs back in the queue.

A daemon claims a job under its name (``executor.node``) for ``lease_s`` seconds and renews the lease while the
job runs. Several daemons may share one store: a daemon that dies (SIGKILL, a lost host) stops renewing, and
once its leases expire its running jobs are claimable again by any daemon, as if queued; an outcome it
reports after that is refused (:class:`~agent.errors.LeaseLost`), so each job's result is recorded once. A
daemon that stops or restarts puts back only the jobs claimed under its own name (and those claimed by a
release that knew no names), never another daemon's.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

from sqlalchemy import Engine, and_, or_, select, update

from agent.config import Priority
from agent.records import Job, JobStatus
from agent.store import events, schema
from agent.store.engine import for_claim, greatest, write
from agent.store.jobs import job_in

_jobs = schema.jobs


def claim(engine: Engine, now: float | None = None, owner: str | None = None, lease_s: float = 60.0,
          max_priority: Priority = Priority.BATCH) -> Job | None:
    """Take the next runnable job (highest priority, then oldest) and mark it running, claimed by ``owner``
    until ``now + lease_s``. Runnable: queued and due, or running under a lease that expired (its daemon is
    gone: the run that was cut off does not count as an attempt); of priority ``max_priority`` or higher
    (``ROUTINE``: no batch job)."""
    now = time.time() if now is None else now
    with write(engine) as conn:
        row = conn.execute(
            for_claim(
                select(_jobs.c.id, _jobs.c.status, _jobs.c.claimed_by)
                .where(or_(
                    and_(_jobs.c.status == JobStatus.QUEUED.value, _jobs.c.not_before <= now),
                    and_(_jobs.c.status == JobStatus.RUNNING.value, _jobs.c.lease_until < now),
                ), _jobs.c.priority <= int(max_priority))
                .order_by(_jobs.c.priority, _jobs.c.id)
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        expired = row.status == JobStatus.RUNNING.value
        conn.execute(
            update(_jobs)
            .where(_jobs.c.id == row.id)
            .values(
                status=JobStatus.RUNNING.value,
                attempts=_jobs.c.attempts + (0 if expired else 1),
                started_at=now,
                updated_at=now,
                claimed_by=owner,
                lease_until=None if owner is None else now + lease_s,
                progress_done=None,  # a new attempt (or a daemon taking over) reports from the start
                progress_total=None,
                progress_stage=None,
                progress_at=None,
            )
        )
        detail = f"claimed by {owner}" if owner else None
        if expired:
            detail = f"claimed again by {owner}: the lease of {row.claimed_by} expired"
        events.record(conn, "started", job_id=row.id, detail=detail)
        return job_in(conn, row.id)


def renew(engine: Engine, owner: str, job_ids: Sequence[int], until: float) -> list[int]:
    """Extend ``owner``'s leases of ``job_ids`` to ``until``; return the ids it still held (the others were
    claimed again by another daemon after their lease expired, or are no longer running)."""
    if not job_ids:
        return []
    with write(engine) as conn:
        held = _jobs.c.id.in_(list(job_ids)) & (_jobs.c.status == JobStatus.RUNNING.value) & (
            _jobs.c.claimed_by == owner)
        ids = sorted(conn.execute(select(_jobs.c.id).where(held)).scalars())
        if ids:
            conn.execute(update(_jobs).where(_jobs.c.id.in_(ids)).values(lease_until=until))
        return ids


def requeue_running(engine: Engine, reason: str, owner: str | None = None, keep: Collection[int] = ()
                    ) -> list[int]:
    """Put jobs left ``running`` (by a crash or a stop) back in the queue; return their ids. With ``owner``:
    only the jobs claimed under that name, or under none (claimed before daemons had names). ``keep``: jobs that
    stay running (a Dask executor took their tasks back)."""
    now = time.time()
    with write(engine) as conn:
        running = _jobs.c.status == JobStatus.RUNNING.value
        if owner is not None:
            running = running & (_jobs.c.claimed_by.is_(None) | (_jobs.c.claimed_by == owner))
        if keep:
            running = running & _jobs.c.id.not_in(list(keep))
        ids = list(conn.execute(select(_jobs.c.id).where(running)).scalars())
        if ids:
            conn.execute(
                update(_jobs)
                .where(_jobs.c.id.in_(ids))
                .values(
                    status=JobStatus.QUEUED.value,
                    attempts=greatest(conn, _jobs.c.attempts - 1, 0),
                    not_before=0.0,
                    updated_at=now,
                    claimed_by=None,
                    lease_until=None,
                )
            )
            for job_id in ids:
                events.record(conn, "requeued", job_id=job_id, detail=reason)
        return ids
