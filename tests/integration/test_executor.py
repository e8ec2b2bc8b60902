"""The executor with real worker processes: failures, retries, crashes, timeouts, shutdown."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import Priority, Settings
from agent.executors import executor_for
from agent.records import InputKind, Job, JobStatus
from agent.store import Store
from tests.support.waiting import wait_for


class Running:
    """The executor ``executor.backend`` names (local worker processes, or a Dask cluster: see
    tests/integration/test_dask_executor.py) on its own thread, as the daemon runs it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store.open(settings.database_url)
        self.finished: list[Job] = []
        self.executor: Any = executor_for(self.store, settings, on_finished=self.finished.append)
        self.executor.start()
        self.thread = threading.Thread(target=self.executor.run, daemon=True)
        self.thread.start()

    def submit(self, name: str, max_attempts: int = 3, priority: Priority = Priority.ROUTINE) -> int:
        path = self.settings.data_dir / "in" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
        inp, _ = self.store.upsert_file_input(InputKind.SLIDE, path, name, {})
        job, _ = self.store.enqueue(inp.id, "test-scripted", "1.0", max_attempts=max_attempts, priority=priority)
        self.executor.wake()
        return job.id

    def wait_done(self, job_id: int, timeout: float = 60) -> Job:
        return wait_for(
            lambda: (j := self.store.get_job(job_id)).status.finished and j, timeout, what=f"job {job_id} to finish"
        )

    def stop(self) -> None:
        if self.thread.is_alive():
            self.executor.stop()
            self.thread.join(timeout=30)
            assert not self.thread.is_alive()
        self.store.close()


@pytest.fixture
def running(make_settings: Callable[..., Settings], ledger: Path) -> Iterator[Running]:
    r = Running(make_settings())
    yield r
    if r.thread.is_alive():
        r.stop()


def ledger_lines(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []


def test_success_writes_a_whole_result_folder(running: Running) -> None:
    job = running.wait_done(running.submit("plain.tiff"))
    assert job.status is JobStatus.SUCCEEDED
    assert job.result_path == running.settings.paths.results / f"job-{job.id:06d}"
    assert (job.result_path / "output.txt").read_text() == "processed plain.tiff\n"
    import json

    doc: dict[str, Any] = json.loads((job.result_path / "result.json").read_text())
    assert doc["pipeline"] == "test-scripted" and doc["job_id"] == job.id
    assert doc["summary"] == {"name": "plain.tiff", "attempt": 1}
    assert running.finished[-1].id == job.id
    assert list(running.settings.paths.tmp.iterdir()) == []  # no staging left behind


def test_bad_input_fails_at_once_with_its_reason_and_goes_to_quarantine(running: Running, ledger: Path) -> None:
    job = running.wait_done(running.submit("x-fail-input.tiff"))
    assert job.status is JobStatus.FAILED
    assert job.attempts == 1
    assert job.last_error == "x-fail-input.tiff is marked as bad input"
    quarantine = running.settings.paths.quarantine
    wait_for((quarantine / "x-fail-input.tiff").exists, 10, what="the slide in quarantine")
    assert "bad input" in (quarantine / "x-fail-input.tiff.reason.txt").read_text()
    assert not (running.settings.data_dir / "in" / "x-fail-input.tiff").exists()


def test_dicom_a_pipeline_writes_is_delivered_and_an_unreadable_one_fails_the_job(running: Running) -> None:
    good = running.wait_done(running.submit("a-dicomout.tiff"))
    assert good.status is JobStatus.SUCCEEDED and good.result_path is not None
    import json

    (output,) = json.loads((good.result_path / "result.json").read_text())["dicom_outputs"]
    assert output["file"] == "result.dcm" and output["sop_instance_uid"].startswith("2.25.")
    bad = running.wait_done(running.submit("b-baddicom.tiff"))
    assert bad.status is JobStatus.FAILED and bad.attempts == 1  # not transient: no retry
    assert bad.last_error is not None and "result.dcm not produced: the pipeline wrote it but it is not readable" \
        in bad.last_error
    assert not (running.settings.paths.results / f"job-{bad.id:06d}").exists()  # no half result
    assert (running.settings.data_dir / "in" / "b-baddicom.tiff").exists()  # the input is fine: not quarantined


def test_unexpected_exception_fails_with_type_and_message(running: Running) -> None:
    job = running.wait_done(running.submit("x-error.tiff"))
    assert job.status is JobStatus.FAILED
    assert job.last_error == "RuntimeError: unexpected condition in x-error.tiff"


def test_transient_failures_retry_with_backoff_then_succeed(running: Running, ledger: Path) -> None:
    job = running.wait_done(running.submit("x-transient2.tiff"))
    assert job.status is JobStatus.SUCCEEDED
    assert job.attempts == 3
    events = [e["event"] for e in running.store.events(job.id)]
    assert events == ["queued", "started", "retry", "started", "retry", "started", "succeeded"]


def test_transient_failures_give_up_after_max_attempts(running: Running) -> None:
    job = running.wait_done(running.submit("x-transient9.tiff", max_attempts=2))
    assert job.status is JobStatus.FAILED
    assert job.attempts == 2
    assert job.last_error == "peer busy (attempt 2)"


@pytest.mark.parametrize("name", ["x-sigkill1.tiff", "x-segfault1.tiff"])
def test_worker_death_is_retried_and_the_executor_survives(running: Running, ledger: Path, name: str) -> None:
    job = running.wait_done(running.submit(name))
    assert job.status is JobStatus.SUCCEEDED, job.last_error
    assert job.attempts == 2
    retry_event = [e for e in running.store.events(job.id) if e["event"] == "retry"]
    signal_name = "SIGKILL" if "sigkill" in name else "SIGSEGV"
    assert f"worker process died (killed by {signal_name})" in retry_event[0]["detail"]
    # the replacement worker takes new work
    assert running.wait_done(running.submit("after.tiff")).status is JobStatus.SUCCEEDED


def test_job_over_the_timeout_is_killed_and_retried(
    make_settings: Callable[..., Settings], ledger: Path
) -> None:
    r = Running(make_settings(executor={"job_timeout_s": 2.0, "max_attempts": 2}))
    try:
        job = r.wait_done(r.submit("x-sleep30.tiff", max_attempts=2))
        assert job.status is JobStatus.FAILED
        assert job.attempts == 2
        assert job.last_error == "timed out after 2 s"
        assert not ledger.exists() or "done" not in ledger.read_text()
    finally:
        r.stop()


def test_many_jobs_run_in_parallel_each_once(running: Running, ledger: Path) -> None:
    ids = [running.submit(f"p{i}-sleep0.3.tiff") for i in range(6)]
    jobs = [running.wait_done(i) for i in ids]
    assert all(j.status is JobStatus.SUCCEEDED for j in jobs)
    done = [line for line in ledger_lines(ledger) if line.startswith("done")]
    assert len(done) == 6 and len(set(done)) == 6


def test_stop_requeues_a_job_that_outlives_the_grace_period(
    make_settings: Callable[..., Settings], ledger: Path
) -> None:
    r = Running(make_settings(executor={"shutdown_grace_s": 0.3}))
    job_id = r.submit("long-sleep30.tiff")
    wait_for(lambda: "start" in (ledger.read_text() if ledger.exists() else ""), 120, what="the job to start")
    r.stop()
    store = Store.open(r.settings.database_url)
    try:
        job = store.get_job(job_id)
        assert job.status is JobStatus.QUEUED
        assert job.attempts == 0  # the interrupted attempt is not held against the job
        assert store.events(job_id)[-1]["detail"] == "daemon stopped while the job ran"
    finally:
        store.close()


def test_stop_waits_for_a_job_that_ends_within_the_grace_period(
    make_settings: Callable[..., Settings], ledger: Path
) -> None:
    r = Running(make_settings(executor={"shutdown_grace_s": 5}))
    job_id = r.submit("short-sleep1.tiff")
    wait_for(lambda: "start" in (ledger.read_text() if ledger.exists() else ""), 120, what="the job to start")
    r.stop()
    store = Store.open(r.settings.database_url)
    try:
        assert store.get_job(job_id).status is JobStatus.SUCCEEDED
    finally:
        store.close()



def placements(ledger: Path) -> list[dict[str, Any]]:
    """Every run's input name, worker, pid, CUDA_VISIBLE_DEVICES and whether torch was loaded early."""
    import json

    runs = map(json.loads, ledger_lines(ledger.with_name("placement.jsonl")))
    return [{**run, "name": Path(run["key"]).name} for run in runs]


def run_on_every_worker(r: Running, ledger: Path, group: str, workers: int) -> list[dict[str, Any]]:
    """One job per worker at once (each waits for all to start); in worker order, each run's placement with
    the ``worker_gpu`` its result.json records."""
    import json

    ids = [r.submit(f"{group}-{i}-barrier{workers}.tiff") for i in range(workers)]
    jobs = [r.wait_done(i) for i in ids]
    gpu = {}
    for job in jobs:
        assert job.status is JobStatus.SUCCEEDED and job.result_path is not None, job.last_error
        gpu[job.result_path.name] = json.loads((job.result_path / "result.json").read_text()).get("worker_gpu")
    runs = [p for p in placements(ledger) if p["name"].startswith(f"{group}-")]
    assert len(runs) == workers  # each ran once, all at the same time: one on each worker
    names = {f"{group}-{i}-barrier{workers}.tiff": f"job-{job.id:06d}" for i, job in enumerate(jobs)}
    return sorted(({**p, "worker_gpu": gpu[names[p["name"]]]} for p in runs), key=lambda p: str(p["worker"]))


def test_workers_are_pinned_round_robin_to_the_configured_gpus_and_a_replacement_keeps_its_gpu(
    make_settings: Callable[..., Settings], ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")  # the daemon's own value: each pinned worker replaces it
    r = Running(make_settings(executor={"workers": 3, "gpus": [0, 1]}))
    try:
        first = run_on_every_worker(r, ledger, "first", 3)
        assert [(p["worker"], p["cuda_visible_devices"], p["worker_gpu"]) for p in first] == [
            ("oncoagent-worker-0", "0", 0), ("oncoagent-worker-1", "1", 1), ("oncoagent-worker-2", "0", 0)]
        assert not any(p["torch_before_plugin"] for p in first)  # pinned before anything could load CUDA

        killed = r.wait_done(r.submit("x-sigkill1.tiff"))
        assert killed.status is JobStatus.SUCCEEDED and killed.attempts == 2
        dead = next(p for p in placements(ledger) if p["name"] == "x-sigkill1.tiff")  # the first attempt

        second = run_on_every_worker(r, ledger, "second", 3)
        assert [(p["worker"], p["cuda_visible_devices"], p["worker_gpu"]) for p in second] == [
            (p["worker"], p["cuda_visible_devices"], p["worker_gpu"]) for p in first]
        replaced = next(p for p in second if p["worker"] == dead["worker"])
        assert replaced["pid"] != dead["pid"]  # a new process in the dead worker's place, on the same GPU
        assert replaced["cuda_visible_devices"] == dead["cuda_visible_devices"]
        assert not replaced["torch_before_plugin"]
    finally:
        r.stop()


def test_without_gpus_workers_keep_the_daemons_cuda_environment(
    make_settings: Callable[..., Settings], ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    r = Running(make_settings())
    try:
        job = r.wait_done(r.submit("plain.tiff"))
        assert job.status is JobStatus.SUCCEEDED and job.result_path is not None
        assert [p["cuda_visible_devices"] for p in placements(ledger)] == [None]  # not set by the executor
        assert "worker_gpu" not in json.loads((job.result_path / "result.json").read_text())
    finally:
        r.stop()


def test_with_a_shared_root_results_are_staged_and_renamed_there(
        make_settings: Callable[..., Settings], ledger: Path, tmp_path: Path) -> None:
    running = Running(make_settings(storage={"shared_root": str(tmp_path / "nfs")}))
    try:
        job = running.wait_done(running.submit("onshare.tiff"))
        assert job.status is JobStatus.SUCCEEDED
        assert job.result_path == tmp_path / "nfs" / "results" / f"job-{job.id:06d}"
        assert list((tmp_path / "nfs" / "results" / ".staging").iterdir()) == []  # built there, then renamed
        assert list(running.settings.paths.tmp.iterdir()) == []
    finally:
        running.stop()
