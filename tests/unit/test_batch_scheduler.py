"""Scheduled batch runs happen once (agent.scheduler, agent.batch): a slot missed while the daemon was down runs
once when it starts (the latest one, not one per missed slot), two daemons firing one slot run it once, and a run
cut off by a crash is resumed without queueing again what it had taken. The clock is the scheduler's own, so no
test waits for a cron."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from agent.batch import HeldRun, enqueue_paths, run_held
from agent.config import Settings
from agent.records import BatchRunStatus, JobStatus
from agent.scheduler import BatchScheduler
from agent.store import Store
from tests.conftest import SCRIPTED_RULES

LEASE_S = 30.0
SLOT = 1_900_000_000.0


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


def local(*fields: int) -> float:
    """Epoch seconds of a local wall-clock time (the crontab's timezone: the daemon's)."""
    return datetime(*fields).astimezone().timestamp()  # type: ignore[arg-type]


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    for name in ("part1/a.tiff", "part2/b.tiff", "part2/c.tiff"):
        path = tmp_path / "archive" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"slide bytes " + name.encode())  # the scripted pipeline never opens it
    return tmp_path / "archive"


@pytest.fixture
def settings(make_settings: Callable[..., Settings], archive: Path) -> Settings:
    return make_settings(routing={"rules": SCRIPTED_RULES}, executor={"node": "node-a", "lease_s": LEASE_S},
                         scheduler={"batches": [{"name": "nightly", "cron": "0 2 * * *", "paths": [str(archive)]}]})


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store.open(settings.database_url)
    yield s
    s.close()


def finish_queued(store: Store, tmp_path: Path) -> None:
    """What the executor would do: run every queued job to success."""
    while (job := store.claim()) is not None:
        store.succeed(job.id, tmp_path / f"result-{job.id}", {}, [])


def requeues(store: Store, job_id: int) -> int:
    return [e["event"] for e in store.events(job_id)].count("requeued")


def test_a_run_cut_off_by_a_crash_resumes_without_queueing_again_what_it_took(
        settings: Settings, store: Store, archive: Path, tmp_path: Path) -> None:
    enqueue_paths(store, settings, [archive])  # processed once before: reprocessing forces each again
    finish_queued(store, tmp_path)
    clock = Clock(time.time())  # after the earlier jobs ended
    run = store.batch_run_begin("nightly", SLOT, [archive], True, owner="node-a", lease_s=LEASE_S, now=clock())
    assert run is not None
    partial = enqueue_paths(store, settings, [archive / "part1"], reprocess=True,  # node-a took part1, then died
                            held=HeldRun(store, run, "node-a", LEASE_S, clock))
    [first] = partial.queued
    finish_queued(store, tmp_path)  # its job ran to the end meanwhile (another daemon's executor)

    clock.now += LEASE_S + 1  # node-a's lease expired
    taken_over = store.batch_run_take_over(run.id, "node-b", LEASE_S, clock())
    assert taken_over is not None
    report = run_held(store, settings, HeldRun(store, taken_over, "node-b", LEASE_S, clock))
    assert report.inputs == 3 and report.already_taken == 1 and first not in report.queued
    assert len(report.queued) == 2
    assert store.get_job(first).status is JobStatus.SUCCEEDED and requeues(store, first) == 1  # not run again
    assert all(requeues(store, job_id) == 1 for job_id in report.queued)
    progress = store.batch_run_progress(run.id)
    assert progress.run.status is BatchRunStatus.DONE and progress.run.resumed == 1
    assert progress.run.owner == "node-b" and (progress.inputs, progress.total, progress.done) == (3, 3, 1)


def test_an_input_taken_just_before_a_crash_is_routed_once(
        settings: Settings, store: Store, archive: Path, tmp_path: Path) -> None:
    """Cut off between recording that it takes an input and recording that input's job: the resumed run finds
    the job queued for it, or routes it when none was."""
    enqueue_paths(store, settings, [archive])
    finish_queued(store, tmp_path)
    clock = Clock(time.time())  # after the earlier jobs ended
    run = store.batch_run_begin("nightly", SLOT, [archive], True, owner="node-a", lease_s=LEASE_S, now=clock())
    assert run is not None
    routed, unrouted = (store.find_input(str((archive / name).resolve())) for name in ("part1/a.tiff", "part2/b.tiff"))
    assert routed is not None and unrouted is not None
    for inp in (routed, unrouted):
        assert store.batch_run_take(run.id, "node-a", inp.id, until=clock() + LEASE_S, now=clock())
    [job] = store.jobs_for_input(routed.id)
    store.enqueue(routed.id, job.pipeline, job.pipeline_version, force=True)  # routed, then the crash
    assert store.batch_runs_interrupt("node-a") == [run.id]  # node-a restarts

    again = store.batch_run_take_over(run.id, "node-a", LEASE_S, clock())
    assert again is not None
    report = run_held(store, settings, HeldRun(store, again, "node-a", LEASE_S, clock))
    assert requeues(store, job.id) == 1  # found, not forced again
    [unrouted_job] = store.jobs_for_input(unrouted.id)
    assert requeues(store, unrouted_job.id) == 1 and unrouted_job.status is JobStatus.QUEUED
    assert report.already_taken == 0 and len(report.queued) == 3
    taken = store.batch_run_taken(run.id)
    assert taken[routed.id] == job.id and taken[unrouted.id] == unrouted_job.id and None not in taken.values()


def test_a_slot_missed_while_down_runs_once_at_start_and_only_the_latest(
        settings: Settings, store: Store) -> None:
    clock = Clock(local(2030, 12, 1, 1, 0))
    queued: list[int] = []

    def daemon_start() -> BatchScheduler:  # a fresh scheduler, as a daemon (re)starting builds it
        return BatchScheduler(store, settings, on_queued=lambda: queued.append(1), clock=clock)

    daemon_start().catch_up()
    assert store.batch_runs() == []  # never ran: its schedule starts now, nothing was missed
    clock.now = local(2030, 12, 1, 2, 0, 3)
    daemon_start().fire("nightly")  # the cron fired, three seconds late
    [first] = store.batch_runs()
    assert first.run.slot == local(2030, 12, 1, 2, 0) and first.run.status is BatchRunStatus.DONE
    assert first.total == 3 and queued == [1]

    clock.now = local(2030, 12, 5, 10, 30)  # down from the 1st to the 5th: four slots missed
    daemon_start().catch_up()
    runs = store.batch_runs()
    assert [p.run.slot for p in runs] == [local(2030, 12, 5, 2, 0), first.run.slot]  # the latest one, once
    assert runs[0].run.status is BatchRunStatus.DONE and runs[0].run.owner == "node-a"
    daemon_start().catch_up()  # started again the same morning: nothing missed since
    clock.now = local(2030, 12, 5, 23, 59)
    daemon_start().catch_up()
    assert len(store.batch_runs()) == 2


def test_two_daemons_firing_one_slot_run_it_once(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    other = settings.model_copy(update={"executor": settings.executor.model_copy(update={"node": "node-b"})})
    a, b = Store.open(settings.database_url), Store.open(settings.database_url, migrate=False)
    clock = Clock(local(2030, 12, 2, 2, 0, 1))
    try:
        BatchScheduler(a, settings, on_queued=lambda: None, clock=clock).fire("nightly")
        caplog.set_level("INFO", logger="agent.scheduler")
        BatchScheduler(b, other, on_queued=lambda: None, clock=clock).fire("nightly")
        [run] = b.batch_runs()
        assert run.run.owner == "node-a" and run.run.slot == local(2030, 12, 2, 2, 0) and run.total == 3
        assert "is done or held by another daemon; skipped" in caplog.text
    finally:
        a.close()
        b.close()


def test_a_stop_interrupts_the_daemons_own_run_and_the_next_start_resumes_it(
        settings: Settings, store: Store, archive: Path) -> None:
    clock = Clock(local(2030, 12, 3, 2, 0, 2))
    run = store.batch_run_begin("nightly", local(2030, 12, 3, 2, 0), [archive], False, owner="node-a",
                                lease_s=LEASE_S, now=clock())
    theirs = store.batch_run_begin("nightly", local(2030, 12, 2, 2, 0), [archive], False, owner="node-b",
                                   lease_s=LEASE_S, now=clock())
    assert run is not None and theirs is not None
    BatchScheduler(store, settings, on_queued=lambda: None, clock=clock).stop()  # SIGTERM mid-run
    assert store.get_batch_run(run.id).status is BatchRunStatus.INTERRUPTED
    assert store.get_batch_run(theirs.id).status is BatchRunStatus.RUNNING  # another daemon's, still held
    BatchScheduler(store, settings, on_queued=lambda: None, clock=clock).catch_up()  # the next start
    resumed = store.batch_run_progress(run.id)
    assert resumed.run.status is BatchRunStatus.DONE and resumed.run.resumed == 1 and resumed.inputs == 3
    assert store.get_batch_run(theirs.id).status is BatchRunStatus.RUNNING
