"""A job's progress: the throttle in front of it, its record in the store, the estimate of the time left and
how ``oncoagent jobs show`` prints it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import Priority
from agent.progress import duration_text, eta_s, job_progress
from agent.records import InputKind, Job, JobStatus
from agent.store import Store
from pipelines.progress import Throttled


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throttle_passes_the_first_the_last_and_stage_changes_and_else_once_per_interval() -> None:
    clock = Clock()
    seen: list[tuple[int, int, str]] = []
    progress = Throttled(lambda d, t, s: seen.append((d, t, s)), interval_s=1.0, clock=clock)
    progress(0, 10, "tiles")  # the first
    for done in range(1, 5):  # within the second: dropped
        clock.now += 0.2
        progress(done, 10, "tiles")
    clock.now += 0.2  # 1.0 s after the first
    progress(5, 10, "tiles")
    clock.now += 0.1
    progress(6, 10, "tiles")  # dropped
    progress(7, 10, "other")  # a new stage: passes at once
    progress(8, 10, "other")  # dropped
    progress(10, 10, "other")  # the last: passes at once
    assert seen == [(0, 10, "tiles"), (5, 10, "tiles"), (7, 10, "other"), (10, 10, "other")]


def test_estimate_is_linear_from_the_start_to_the_last_report() -> None:
    assert eta_s(started_at=1000.0, at=1060.0, done=450, total=1000, now=1060.0) == pytest.approx(60 * 550 / 450)
    assert eta_s(1000.0, 1060.0, 450, 1000, now=1070.0) == pytest.approx(60 * 550 / 450 - 10)  # time since
    assert eta_s(1000.0, 1060.0, 450, 1000, now=5000.0) == 0.0  # overdue: never negative
    assert eta_s(1000.0, 1060.0, 0, 1000, now=1060.0) is None  # nothing done yet: no rate
    assert eta_s(None, 1060.0, 10, 1000, now=1060.0) is None
    assert eta_s(1000.0, 1060.0, 1000, 1000, now=1060.0) == 0.0


def job_with(status: JobStatus, done: int | None, total: int | None, stage: str | None, at: float | None) -> Job:
    return Job(id=1, input_id=1, pipeline="wsi-ctc", pipeline_version="1.0.0", input_fingerprint="f",
               status=status, priority=Priority.ROUTINE, attempts=1, max_attempts=3, last_error=None,
               created_at=900.0, updated_at=1000.0, started_at=1000.0, progress_done=done, progress_total=total,
               progress_stage=stage, progress_at=at)


def test_a_running_job_reads_as_a_share_with_the_time_left_and_an_ended_one_without() -> None:
    running = job_progress(job_with(JobStatus.RUNNING, 450, 1000, "tiles", 1060.0), now=1060.0)
    assert running is not None
    assert running.percent == 45 and running.eta_s == pytest.approx(73.3, abs=0.1)
    assert running.text() == f"45 % (tiles 450/1000), about {duration_text(60 * 550 / 450)} left"
    assert running.text() == "45 % (tiles 450/1000), about 1 min 13 s left"
    ended = job_progress(job_with(JobStatus.SUCCEEDED, 1000, 1000, "tiles", 1130.0), now=2000.0)
    assert ended is not None and ended.eta_s is None and ended.text() == "100 % (tiles 1000/1000)"
    almost = job_progress(job_with(JobStatus.RUNNING, 999, 1000, "tiles", 1130.0), now=1130.0)
    assert almost is not None and almost.percent == 99  # 100 % only once done
    assert job_progress(job_with(JobStatus.RUNNING, None, None, None, None), now=1060.0) is None


def running_job(store: Store, tmp_path: Path, name: str = "a.tiff") -> Job:
    path = tmp_path / name
    path.write_bytes(b"x")
    inp, _ = store.upsert_file_input(InputKind.SLIDE, path, name, {})
    store.enqueue(inp.id, "wsi-ctc", "1.0.0")
    job = store.claim(owner="node-a")
    assert job is not None
    return job


def test_the_store_records_progress_of_running_jobs_only_keeps_it_at_the_end_and_a_claim_clears_it(
        store: Store, tmp_path: Path) -> None:
    job = running_job(store, tmp_path)
    assert job.progress_done is None and job.progress_total is None
    assert store.report_progress(job.id, 3, 8, "tiles", 1234.5)
    got = store.get_job(job.id)
    assert (got.progress_done, got.progress_total, got.progress_stage, got.progress_at) == (3, 8, "tiles", 1234.5)
    assert store.report_progress(job.id, 8, 8, "x" * 100, 1240.0)
    assert store.get_job(job.id).progress_stage == "x" * 64  # the column's width
    store.fail(job.id, "try again", retry_at=0.0, owner="node-a")
    assert not store.report_progress(job.id, 1, 8, "tiles", 1250.0)  # queued: a late report is dropped
    assert store.get_job(job.id).progress_done == 8  # kept once the attempt ended
    again = store.claim(owner="node-a")
    assert again is not None and again.id == job.id
    assert (again.progress_done, again.progress_total, again.progress_stage, again.progress_at) == (
        None, None, None, None)  # a new attempt reports from the start


def test_jobs_show_prints_a_running_jobs_progress_and_json_carries_its_fields(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = Store.open(f"sqlite:///{data / 'oncoagent.db'}")
    try:
        job = running_job(store, tmp_path)
        assert job.started_at is not None
        store.report_progress(job.id, 450, 1000, "tiles", job.started_at + 60)
    finally:
        store.close()
    config = tmp_path / "oncoagent.yaml"
    config.write_text("ingest: {inbox: false}\n")
    cli = ["--config", str(config), "--data-dir", str(data), "jobs"]
    capsys.readouterr()
    assert main([*cli, "show", str(job.id)]) == 0
    shown = capsys.readouterr().out
    line = next(line for line in shown.splitlines() if line.startswith("progress:"))
    assert line.startswith("progress: 45 % (tiles 450/1000)"), shown
    assert main([*cli, "show", str(job.id), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "running"
    progress = doc["progress"]
    assert (progress["done"], progress["total"], progress["stage"], progress["percent"]) == (450, 1000, "tiles", 45)
    assert progress["eta_s"] is not None and progress["eta_s"] >= 0
    assert main([*cli, "list"]) == 0
    assert "45 % (tiles 450/1000)" in capsys.readouterr().out
