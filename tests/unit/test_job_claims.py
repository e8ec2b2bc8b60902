"""Job claims with an owner and a lease (agent.store.claims): several daemons on one store. Each test uses two
store handles on one database, one per daemon; tests/integration/test_store_postgres.py runs them again on a
real PostgreSQL server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.errors import LeaseLost
from agent.records import JobStatus
from agent.store import Store
from tests.unit.test_store import slide_input

LEASE_S = 30.0


def test_a_claim_names_its_daemon_and_holds_for_the_lease(daemons: tuple[Store, Store]) -> None:
    a, b = daemons
    job, _ = a.enqueue(slide_input(a), "p", "1")
    now = time.time()
    claimed = a.claim(now=now, owner="host-a", lease_s=LEASE_S)
    assert claimed is not None and claimed.id == job.id
    assert claimed.claimed_by == "host-a" and claimed.lease_until == pytest.approx(now + LEASE_S)
    assert b.claim(now=now + LEASE_S - 1, owner="host-b", lease_s=LEASE_S) is None  # still held


def test_a_job_whose_lease_expired_is_claimed_again_and_only_its_new_owner_records_it(
        daemons: tuple[Store, Store], tmp_path: Path) -> None:
    a, b = daemons
    job, _ = a.enqueue(slide_input(a), "p", "1")
    now = time.time()
    a.claim(now=now, owner="host-a", lease_s=LEASE_S)  # host-a dies without renewing
    taken = b.claim(now=now + LEASE_S + 1, owner="host-b", lease_s=LEASE_S)
    assert taken is not None and taken.id == job.id and taken.claimed_by == "host-b"
    assert taken.attempts == 1  # the run that was cut off does not count
    with pytest.raises(LeaseLost, match="claimed again by host-b"):
        a.succeed(job.id, tmp_path / "a", {"from": "a"}, [], owner="host-a")  # host-a comes back, too late
    with pytest.raises(LeaseLost):
        a.fail(job.id, "late", owner="host-a")
    done = b.succeed(job.id, tmp_path / "b", {"from": "b"}, [], owner="host-b")
    assert done.status is JobStatus.SUCCEEDED and done.result_path == tmp_path / "b"
    details = [(e["event"], e["detail"]) for e in b.events(job.id)]
    assert ("started", "claimed again by host-b: the lease of host-a expired") in details


def test_renewing_keeps_a_daemons_own_running_jobs_and_reports_the_lost_ones(daemons: tuple[Store, Store]) -> None:
    a, b = daemons
    first, _ = a.enqueue(slide_input(a, "1.svs"), "p", "1")
    second, _ = a.enqueue(slide_input(a, "2.svs"), "p", "1")
    now = time.time()
    a.claim(now=now, owner="host-a", lease_s=LEASE_S)
    a.claim(now=now, owner="host-a", lease_s=LEASE_S)
    assert b.claim(now=now + LEASE_S + 1, owner="host-b", lease_s=LEASE_S).id == first.id  # a's lease of it lapsed
    assert a.renew_leases("host-a", [first.id, second.id], now + 2 * LEASE_S) == [second.id]
    assert a.get_job(second.id).lease_until == pytest.approx(now + 2 * LEASE_S)
    assert a.get_job(first.id).claimed_by == "host-b"  # renewing does not take it back
    assert b.claim(now=now + LEASE_S + 2, owner="host-b", lease_s=LEASE_S) is None  # the renewed one is held


def test_a_daemon_puts_back_only_its_own_running_jobs(daemons: tuple[Store, Store]) -> None:
    a, b = daemons
    mine, _ = a.enqueue(slide_input(a, "1.svs"), "p", "1")
    theirs, _ = a.enqueue(slide_input(a, "2.svs"), "p", "1")
    unnamed, _ = a.enqueue(slide_input(a, "3.svs"), "p", "1")
    a.claim(owner="host-a", lease_s=LEASE_S)
    b.claim(owner="host-b", lease_s=LEASE_S)
    a.claim()  # claimed by a release that knew no daemon names
    assert sorted(a.requeue_running("restart", owner="host-a")) == [mine.id, unnamed.id]
    assert b.get_job(theirs.id).status is JobStatus.RUNNING and b.get_job(theirs.id).claimed_by == "host-b"
    requeued = a.get_job(mine.id)
    assert requeued.status is JobStatus.QUEUED and requeued.claimed_by is None and requeued.lease_until is None
