"""The Dask executor against a real cluster: a ``dask scheduler`` and ``dask worker`` processes (with nannies) on
loopback, running the scripted test pipeline (tests/support/scripted_pipelines.py) on the data folder they share
with the executor."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import Settings
from agent.records import Job, JobStatus
from agent.store import Store
from tests.integration.test_executor import Running
from tests.support.dask_cluster import DaskCluster
from tests.support.net import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # a cluster takes seconds to start


@pytest.fixture(scope="module")
def ledger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ledger")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, ledger_dir: Path) -> Iterator[DaskCluster]:
    c = DaskCluster(tmp_path_factory.mktemp("dask"), env={"OA_TEST_LEDGER": str(ledger_dir)})
    try:
        yield c.start(workers=2)
    finally:
        c.stop()


@pytest.fixture
def run_on(make_settings: Callable[..., Settings], ledger_dir: Path, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[Callable[..., Running]]:
    monkeypatch.setenv("OA_TEST_LEDGER", str(ledger_dir))  # the executor's side reads it too (placement)
    started: list[Running] = []

    def run(address: str, sections: dict[str, Any] | None = None, **dask: Any) -> Running:
        settings = make_settings(executor={"backend": "dask", "dask": {"scheduler": address, **dask},
                                           "shutdown_grace_s": 1.0}, **(sections or {}))
        started.append(Running(settings))
        return started[-1]

    yield run
    for r in started:
        r.stop()


def runs_of(ledger_dir: Path, key: Path) -> list[str]:
    """``start``/``done`` of one input, in order, from the ledger every worker appends to."""
    path = ledger_dir / "ledger.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.split()[0] for line in lines if line.split(maxsplit=1)[1] == str(key)]


def result_doc(job: Job) -> dict[str, Any]:
    assert job.result_path is not None
    doc: dict[str, Any] = json.loads((job.result_path / "result.json").read_text())
    return doc


def worker_addresses(cluster: DaskCluster) -> dict[str, str]:
    workers = cluster.client_info()["workers"]
    assert isinstance(workers, dict)
    return {w["name"]: address for address, w in workers.items()}


def test_jobs_run_on_both_workers_and_their_results_land_in_the_shared_results_folder(
        cluster: DaskCluster, run_on: Callable[..., Running]) -> None:
    running = run_on(cluster.address)
    # barrier2: each job waits until both have started, so they can only finish running side by side
    ids = [running.submit(f"pair-barrier2-{n}.tiff") for n in range(2)]
    jobs = [running.wait_done(i) for i in ids]
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 2
    placed = {result_doc(j)["dask_worker"] for j in jobs}
    assert placed == set(worker_addresses(cluster).values())  # one on each worker
    for n, job in enumerate(jobs):
        assert job.result_path == running.settings.paths.results / f"job-{job.id:06d}"
        assert (job.result_path / "output.txt").read_text() == f"processed pair-barrier2-{n}.tiff\n"
    assert list(running.settings.paths.shared_staging.iterdir()) == []  # no staging left
    assert sorted(j.id for j in running.finished) == sorted(ids)


def test_a_worker_killed_mid_job_the_job_runs_again_elsewhere_and_completes_once(
        cluster: DaskCluster, run_on: Callable[..., Running], ledger_dir: Path) -> None:
    running = run_on(cluster.address)
    job_id = running.submit("victim-sigkill1.tiff")  # SIGKILLs its worker process on the first attempt
    job = running.wait_done(job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert job.attempts == 1  # the store saw one attempt: Dask ran the task again on its own
    assert runs_of(ledger_dir, running.settings.data_dir / "in" / "victim-sigkill1.tiff") == ["start", "start", "done"]
    assert [e["event"] for e in running.store.events(job_id)].count("succeeded") == 1
    assert result_doc(job)["summary"]["attempt"] == 2
    cluster.wait_workers(2)  # the nanny restarted the killed worker


def test_failures_are_recorded_as_the_local_executor_records_them(
        cluster: DaskCluster, run_on: Callable[..., Running]) -> None:
    running = run_on(cluster.address)
    bad, error, transient = (running.submit(n) for n in ("d-fail-input.tiff", "d-error.tiff", "d-transient1.tiff"))
    failed_input = running.wait_done(bad)
    assert failed_input.status is JobStatus.FAILED and failed_input.attempts == 1
    assert failed_input.last_error == "d-fail-input.tiff is marked as bad input"
    wait_for((running.settings.paths.quarantine / "d-fail-input.tiff").exists, 30,
             what="the slide to be quarantined (after its failure is recorded)")
    crashed = running.wait_done(error)
    assert crashed.status is JobStatus.FAILED and "RuntimeError: unexpected condition in d-error.tiff" in (
        crashed.last_error or "")
    retried = running.wait_done(transient)
    assert retried.status is JobStatus.SUCCEEDED and retried.attempts == 2


def test_stop_cancels_running_tasks_requeues_their_jobs_and_leaves_the_cluster_clean(
        cluster: DaskCluster, run_on: Callable[..., Running], ledger_dir: Path) -> None:
    running = run_on(cluster.address)
    job_id = running.submit("long-sleep20.tiff")
    key = running.settings.data_dir / "in" / "long-sleep20.tiff"
    wait_for(lambda: runs_of(ledger_dir, key) == ["start"], 60, what="the job to start on a worker")
    assert cluster.client_info()["datasets"] != []  # published while it runs
    running.stop()
    job = Store.open(running.settings.database_url).get_job(job_id)
    assert job.status is JobStatus.QUEUED and job.attempts == 0
    info = cluster.client_info()
    assert info["datasets"] == [] and info["tasks"] == 0


def test_gpu_pipelines_ask_for_the_gpu_resource_and_run_only_where_a_worker_declares_it(
        tmp_path: Path, run_on: Callable[..., Running], ledger_dir: Path) -> None:
    (tmp_path / "dask").mkdir()
    gpu_cluster = DaskCluster(tmp_path / "dask", env={"OA_TEST_LEDGER": str(ledger_dir)})
    try:
        gpu_cluster.start(workers=1)  # w0: no GPU
        gpu_cluster.add_worker("gpu0", resources="GPU=1")
        gpu_cluster.wait_workers(2)
        running = run_on(gpu_cluster.address, gpu_pipelines=["test-scripted"])
        jobs = [running.wait_done(running.submit(f"g{n}-sleep0.2.tiff")) for n in range(4)]
        assert {result_doc(j)["dask_worker"] for j in jobs} == {worker_addresses(gpu_cluster)["gpu0"]}
    finally:
        gpu_cluster.stop()


def test_an_unreachable_scheduler_keeps_jobs_queued_until_it_is_there(
        tmp_path: Path, run_on: Callable[..., Running], ledger_dir: Path) -> None:
    port = free_port()
    running = run_on(f"tcp://127.0.0.1:{port}", connect_timeout_s=1.0)
    job_id = running.submit("patient-sleep0.tiff")
    wait_for(lambda: running.executor.unreachable is not None, 30, what="a failed connection attempt")
    assert running.store.get_job(job_id).status is JobStatus.QUEUED and running.thread.is_alive()
    (tmp_path / "late").mkdir()
    late = DaskCluster(tmp_path / "late", env={"OA_TEST_LEDGER": str(ledger_dir)}, port=port)
    try:
        late.start(workers=1)
        assert running.wait_done(job_id).status is JobStatus.SUCCEEDED
    finally:
        running.stop()
        late.stop()


def test_with_a_shared_root_results_are_written_there_and_nothing_under_the_data_directory(
        cluster: DaskCluster, run_on: Callable[..., Running], tmp_path: Path) -> None:
    shared = tmp_path / "nfs"
    running = run_on(cluster.address, {"storage": {"shared_root": str(shared)}})
    job = running.wait_done(running.submit("onshare.tiff"))
    assert job.status is JobStatus.SUCCEEDED
    assert job.result_path == shared / "results" / f"job-{job.id:06d}"
    assert (job.result_path / "output.txt").read_text() == "processed onshare.tiff\n"
    assert not (running.settings.data_dir / "results").exists()
