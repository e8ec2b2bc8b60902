"""Batch runs in the store (agent.store.batch_runs): one run per (batch, slot) however many daemons fire it, held
under a lease like a job claim, taken over once its holder is gone, and the inputs it took with the job of each.
Each test uses store handles on one database, one per daemon; tests/integration/test_store_postgres.py runs them
again on a real PostgreSQL server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.errors import LeaseLost
from agent.records import BatchRun, BatchRunStatus, BatchVerdict, JobStatus, Verdict
from agent.store import Store
from tests.unit.test_store import slide_input

LEASE_S = 30.0
SLOT = 1_796_000_400.0  # a whole minute, as cron slots are
PATHS = [Path("/archive/2026-11")]


def begin(store: Store, owner: str, now: float, slot: float = SLOT) -> BatchRun | None:
    return store.batch_run_begin("nightly", slot, PATHS, True, owner=owner, lease_s=LEASE_S, now=now)


def test_a_slot_runs_once_and_its_record_says_what_and_who(daemons: tuple[Store, Store]) -> None:
    a, b = daemons
    now = time.time()
    run = begin(a, "node-a", now)
    assert run is not None
    assert (run.batch, run.slot, run.status, run.paths, run.reprocess) == (
        "nightly", SLOT, BatchRunStatus.RUNNING, tuple(PATHS), True)
    assert run.owner == "node-a" and run.lease_until == pytest.approx(now + LEASE_S) and run.resumed == 0
    assert begin(b, "node-b", now + 1) is None  # held by a live holder: skipped
    a.batch_run_finish(run.id, "node-a", BatchRunStatus.DONE, None, now + 2)
    assert begin(b, "node-b", now + LEASE_S * 10) is None  # done: never again, whatever the time
    assert begin(a, "node-a", now + 3, slot=SLOT + 60) is not None  # the next slot is a run of its own
    assert b.batch_run_latest("nightly").slot == SLOT + 60  # type: ignore[union-attr]
    assert [p.run.id for p in b.batch_runs()] == [run.id + 1, run.id]  # newest first


def test_concurrent_daemons_firing_one_slot_record_one_run(database_url: Callable[[str], str]) -> None:
    url = database_url("fire")
    Store.open(url).close()
    stores = [Store.open(url, migrate=False) for _ in range(6)]  # one per daemon
    start = threading.Barrier(len(stores))

    def fire(index: int) -> int | None:
        start.wait(timeout=60)
        run = begin(stores[index], f"node-{index}", time.time())
        return None if run is None else run.id

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            outcomes = list(pool.map(fire, range(len(stores))))
        winners = [o for o in outcomes if o is not None]
        assert len(winners) == 1  # one daemon holds the run, every other skipped it
        [progress] = stores[0].batch_runs()
        assert progress.run.id == winners[0] and progress.run.owner == f"node-{outcomes.index(winners[0])}"
    finally:
        for store in stores:
            store.close()


def test_a_run_whose_holder_is_gone_is_taken_over_and_the_old_holder_is_refused(
        daemons: tuple[Store, Store]) -> None:
    a, b = daemons
    now = time.time()
    run = begin(a, "node-a", now)
    assert run is not None
    first = slide_input(a, "one.svs")
    assert a.batch_run_take(run.id, "node-a", first, until=now + LEASE_S, now=now)
    assert b.batch_runs_resumable(now + LEASE_S - 1) == []  # still held
    assert b.batch_run_take_over(run.id, "node-b", LEASE_S, now + LEASE_S - 1) is None
    later = now + LEASE_S + 1  # node-a died without renewing
    assert [r.id for r in b.batch_runs_resumable(later)] == [run.id]
    resumed = begin(b, "node-b", later)  # the slot fires on node-b: it takes the run over
    assert resumed is not None and resumed.id == run.id and resumed.owner == "node-b" and resumed.resumed == 1
    assert resumed.started_at == run.started_at  # the same run, resumed
    assert b.batch_run_take_over(run.id, "node-c", LEASE_S, later) is None  # one holder at a time
    with pytest.raises(LeaseLost, match="no longer node-a's"):
        a.batch_run_take(run.id, "node-a", slide_input(a, "two.svs"), until=later + LEASE_S, now=later)
    with pytest.raises(LeaseLost):
        a.batch_run_finish(run.id, "node-a", BatchRunStatus.DONE, None, later)
    assert b.batch_run_taken(run.id) == {first: None}


def test_a_daemon_that_restarts_interrupts_only_its_own_runs(daemons: tuple[Store, Store]) -> None:
    a, b = daemons
    now = time.time()
    mine, theirs = begin(a, "node-a", now), begin(b, "node-b", now, slot=SLOT + 60)
    assert mine is not None and theirs is not None
    assert a.batch_runs_interrupt("node-a") == [mine.id]
    assert a.get_batch_run(mine.id).status is BatchRunStatus.INTERRUPTED
    assert a.get_batch_run(theirs.id).status is BatchRunStatus.RUNNING
    assert [r.id for r in a.batch_runs_resumable(now)] == [mine.id]  # at once: no lease to wait for
    again = a.batch_run_take_over(mine.id, "node-a", LEASE_S, now + 1)
    assert again is not None and again.status is BatchRunStatus.RUNNING and again.resumed == 1


def test_an_input_is_taken_once_per_run_and_progress_comes_from_its_jobs(daemons: tuple[Store, Store],
                                                                           tmp_path: Path) -> None:
    a, b = daemons
    now = time.time()
    run = begin(a, "node-a", now)
    assert run is not None
    inputs = [slide_input(a, f"{n}.svs", f"f{n}") for n in range(4)]
    for input_id in inputs:
        assert a.batch_run_take(run.id, "node-a", input_id, until=now + LEASE_S, now=now)
    assert not a.batch_run_take(run.id, "node-a", inputs[0], until=now + LEASE_S, now=now)  # taken before
    jobs = [a.enqueue(input_id, "p", "1")[0].id for input_id in inputs[:3]]  # the fourth was ignored: no job
    for input_id, job_id in zip(inputs, jobs, strict=False):
        a.batch_run_set_job(run.id, input_id, job_id)
    assert a.batch_run_taken(run.id) == {**dict(zip(inputs, jobs, strict=False)), inputs[3]: None}
    assert a.get_batch_run(run.id).lease_until == pytest.approx(now + LEASE_S)

    t0 = time.time()
    for _ in range(2):
        a.claim(now=t0, owner="node-a")
    a.succeed(jobs[0], tmp_path / "r0", {}, [])
    a.fail(jobs[1], "the slide is not a slide", retry_at=None)
    progress = b.batch_run_progress(run.id)
    assert progress.inputs == 4 and progress.total == 3 and progress.done == 2 and progress.failed == 1
    assert progress.jobs == {JobStatus.SUCCEEDED: 1, JobStatus.FAILED: 1, JobStatus.QUEUED: 1}
    [failure] = progress.failures
    assert (failure.job_id, failure.input_id, failure.input_path.name) == (jobs[1], inputs[1], "1.svs")
    assert failure.error is not None and "not a slide" in failure.error
    assert progress.mean_job_s is not None and progress.mean_job_s >= 0
    assert progress.eta_s(workers=2) == pytest.approx(progress.mean_job_s / 2)
    assert not progress.finished
    [listed] = b.batch_runs()
    assert (listed.inputs, listed.total, listed.done, listed.failed) == (4, 3, 2, 1)

    a.batch_run_finish(run.id, "node-a", BatchRunStatus.DONE, None, time.time())
    assert not b.batch_run_progress(run.id).finished  # every input taken, one job still queued
    a.cancel(jobs[2])
    assert b.batch_run_progress(run.id).finished
    done = b.get_batch_run(run.id)
    assert done.status is BatchRunStatus.DONE and done.finished_at is not None and done.lease_until is None


def test_a_batch_jobs_verdict_goes_to_the_newest_run_that_queued_it_once(daemons: tuple[Store, Store],
                                                                        tmp_path: Path) -> None:
    a, b = daemons
    now = time.time()
    first = begin(a, "node-a", now)
    assert first is not None
    input_id = slide_input(a)
    job_id = a.enqueue(input_id, "p", "1")[0].id
    a.batch_run_take(first.id, "node-a", input_id, until=now + LEASE_S, now=now)  # no previous result
    a.batch_run_set_job(first.id, input_id, job_id)
    a.batch_run_finish(first.id, "node-a", BatchRunStatus.DONE, None, now)
    second = begin(a, "node-a", now, slot=SLOT + 60)
    assert second is not None
    previous = {"job_id": job_id, "ctc_count": 3}
    b.batch_run_take(second.id, "node-a", input_id, until=now + LEASE_S, now=now, previous=previous)
    b.batch_run_set_job(second.id, input_id, job_id)  # the same job row, queued again by the next night's run

    pending = b.batch_review_pending(job_id)
    assert pending is not None
    assert (pending.run_id, pending.input_id, pending.batch, pending.previous) == (
        second.id, input_id, "nightly", previous)
    assert b.batch_run_of_job(job_id) == second.id
    a.claim(owner="node-a")
    a.succeed(job_id, tmp_path / "r", {"ctc_count": 9}, [], owner="node-a",
              review=BatchVerdict(pending, Verdict.DISCORDANT, ("CTC count 3 → 9 (+6)",)))
    assert b.batch_review_pending(job_id) is not None  # the first run never compared it: older, still open
    assert b.batch_review_pending(job_id).run_id == first.id  # type: ignore[union-attr]
    [compared] = b.batch_run_compared(second.id)
    assert (compared.job_id, compared.verdict, compared.reasons, compared.sent) == (
        job_id, Verdict.DISCORDANT, ("CTC count 3 → 9 (+6)",), False)
    progress = b.batch_run_progress(second.id)
    assert progress.verdicts == {Verdict.DISCORDANT: 1} and progress.changed == 1
    assert [d.input_id for d in progress.discordant] == [input_id]
    assert b.batch_runs()[0].verdicts == {Verdict.DISCORDANT: 1}


def test_latest_results_per_input_within_a_window(daemons: tuple[Store, Store], tmp_path: Path) -> None:
    a, b = daemons
    inputs = [slide_input(a, f"{n}.svs", f"f{n}") for n in range(3)]
    jobs = {}
    for input_id, pipeline in zip(inputs, ["p", "p", "q"], strict=True):
        jobs[input_id] = a.enqueue(input_id, pipeline, "1")[0].id
        a.claim(owner="node-a")
        a.succeed(jobs[input_id], tmp_path / str(input_id), {}, [{"name": "m", "version": "1"}], owner="node-a")
    newer = a.enqueue(inputs[0], "p", "2")[0].id  # a later version's result for the first input
    a.claim(owner="node-a")
    a.succeed(newer, tmp_path / "newer", {}, [], owner="node-a")
    assert [j.id for j in b.latest_results()] == [newer, jobs[inputs[1]], jobs[inputs[2]]]
    assert [j.id for j in b.latest_results(pipelines=["q"])] == [jobs[inputs[2]]]
    assert b.latest_results(since=time.time() + 60) == []
