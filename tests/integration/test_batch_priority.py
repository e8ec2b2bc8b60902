"""Batch jobs yield to new work (issue 11): they run after stat/urgent/routine jobs, on at most
``executor.batch_workers`` workers, and start only inside ``executor.batch_window``. Real worker processes run
the scripted pipeline; the ledger (tests/support/scripted_pipelines.py) says what started when."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from agent.config import Priority, Settings
from agent.records import JobStatus
from tests.integration.test_executor import Running, ledger_lines
from tests.support.waiting import wait_for


def starts(ledger: Path) -> list[str]:
    return [Path(line.split(maxsplit=1)[1]).name for line in ledger_lines(ledger) if line.startswith("start ")]


def test_an_urgent_job_starts_as_soon_as_the_running_batch_job_ends(
        make_settings: Callable[..., Settings], ledger: Path) -> None:
    running = Running(make_settings(executor={"workers": 1}))
    try:
        batch = [running.submit(f"night-sleep1-{n}.tiff", priority=Priority.BATCH) for n in range(5)]
        wait_for(lambda: len(starts(ledger)) == 1, 60, what="the first batch job to start")
        urgent = running.submit("urgent-series.tiff", priority=Priority.URGENT)
        assert running.wait_done(urgent).status is JobStatus.SUCCEEDED
        assert starts(ledger)[:2] == ["night-sleep1-0.tiff", "urgent-series.tiff"]  # within one job's time
        assert all(running.wait_done(j).status is JobStatus.SUCCEEDED for j in batch)
    finally:
        running.stop()


def test_batch_work_holds_at_most_batch_workers_and_new_work_takes_the_others_at_once(
        make_settings: Callable[..., Settings], ledger: Path) -> None:
    running = Running(make_settings(executor={"workers": 2, "batch_workers": 1}))
    try:
        batch = [running.submit(f"night-sleep2-{n}.tiff", priority=Priority.BATCH) for n in range(3)]
        wait_for(lambda: len(starts(ledger)) == 1, 60, what="the first batch job to start")
        routine = running.submit("routine-series.tiff")
        assert running.wait_done(routine).status is JobStatus.SUCCEEDED
        assert starts(ledger) == ["night-sleep2-0.tiff", "routine-series.tiff"]  # the second worker was free
        assert all(running.wait_done(j).status is JobStatus.SUCCEEDED for j in batch)
        lines = [line.split()[0] for line in ledger_lines(ledger) if "night-" in line]
        assert lines == ["start", "done"] * 3  # one batch job at a time, on two workers
    finally:
        running.stop()


def test_outside_the_batch_window_batch_jobs_wait_and_new_work_runs(
        make_settings: Callable[..., Settings], ledger: Path) -> None:
    local = time.localtime(time.time() + 2 * 3600)  # a window that opens in two hours: closed now
    opens = f"{local.tm_hour:02d}:00"
    closes = f"{(local.tm_hour + 1) % 24:02d}:00"
    running = Running(make_settings(executor={"workers": 2, "batch_window": f"{opens}-{closes}"}))
    try:
        night = running.submit("night.tiff", priority=Priority.BATCH)
        routine = running.submit("routine.tiff")
        assert running.wait_done(routine).status is JobStatus.SUCCEEDED
        assert running.store.get_job(night).status is JobStatus.QUEUED
        assert starts(ledger) == ["routine.tiff"]
    finally:
        running.stop()
