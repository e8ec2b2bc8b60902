"""``oncoagent run`` with ``executor.backend: dask`` as a subprocess, against a real cluster (a ``dask scheduler``
and two ``dask worker`` processes): a daemon killed while its job runs on the cluster takes the task back when
it restarts (the job runs once, to one recorded result), and a daemon stopped with SIGTERM leaves nothing of its
own on the cluster."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.records import JobStatus
from agent.store import Store
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from pipelines.synthetic.slides import SlideSpec, write_slide
from tests.e2e.test_daemon import BASE_CONFIG, drop, ledger
from tests.support.daemon import DaemonProcess
from tests.support.dask_cluster import DaskCluster
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster_and_daemon(tmp_path: Path) -> Iterator[tuple[DaskCluster, DaemonProcess]]:
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    (tmp_path / "dask").mkdir()
    env = {"OA_TEST_LEDGER": str(ledger_dir)}
    cluster = DaskCluster(tmp_path / "dask", env=env)
    config: dict[str, Any] = {**BASE_CONFIG, "executor": {
        **BASE_CONFIG["executor"], "backend": "dask", "dask": {"scheduler": cluster.address}}}
    daemon = DaemonProcess(tmp_path, config, env=env)
    try:
        cluster.start(workers=2)
        yield cluster, daemon
    finally:
        daemon.discard()
        cluster.stop()


def start_one_job(daemon: DaemonProcess, name: str) -> None:
    daemon.start()
    drop(daemon, name)
    wait_for(lambda: len(ledger(daemon)) == 1, 60, what="the job to start on a Dask worker")


def test_a_daemon_killed_mid_job_takes_its_task_back_after_restart(
        cluster_and_daemon: tuple[DaskCluster, DaemonProcess]) -> None:
    cluster, daemon = cluster_and_daemon
    start_one_job(daemon, "slow-sleep4.tiff")
    daemon.signal(signal.SIGKILL)
    daemon.wait(10)
    assert len(cluster.client_info()["datasets"]) == 1  # the task runs on without the daemon

    daemon.start()
    wait_for(lambda: daemon.counts()["jobs"]["succeeded"] == 1, 60, what="the job to succeed after the restart")
    restarted = daemon.log().split("---- start 2 ----")[-1]
    assert "reattached to its Dask task" in restarted and "re-queued" not in restarted
    assert [line.split()[0] for line in ledger(daemon)] == ["start", "done"]  # ran once, to its end
    store = Store.open(f"sqlite:///{daemon.data_dir / 'oncoagent.db'}")
    try:
        [job] = store.list_jobs()
        assert job.status is JobStatus.SUCCEEDED and job.attempts == 1
        assert [e["event"] for e in store.events(job.id)].count("succeeded") == 1
    finally:
        store.close()
    wait_for(lambda: cluster.client_info()["datasets"] == [], 30, what="the finished task to be unpublished")


def test_sigterm_leaves_nothing_of_the_daemon_on_the_cluster(
        cluster_and_daemon: tuple[DaskCluster, DaemonProcess]) -> None:
    cluster, daemon = cluster_and_daemon
    start_one_job(daemon, "long-sleep30.tiff")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    info = cluster.client_info()
    assert info["datasets"] == [] and info["tasks"] == 0
    assert daemon.status()["jobs"]["queued"] == 1  # re-queued, to run at the next start
    assert "re-queued 1 running job(s)" in daemon.log()


def test_generated_slide_and_mr_series_are_analysed_on_the_cluster(tmp_path: Path) -> None:
    """The real pipelines on Dask workers: a generated slide (wsi-ctc) and MR series (mri-tumour) dropped into
    the daemon's inbox are analysed on the workers, into the results folder the daemon reads."""
    (tmp_path / "dask").mkdir()
    cluster = DaskCluster(tmp_path / "dask")
    config: dict[str, Any] = {
        "routing": {"rules": [
            {"name": "slides", "pipeline": "wsi-ctc", "match": {"kind": "slide"}},
            {"name": "mri", "pipeline": "mri-tumour",
             "match": {"kind": "dicom-series", "dicom": {"Modality": "MR"}, "min_slices": 3}},
        ]},
        "pipelines": {"mri-tumour": {"min_lesion_ml": 0.5, "torch_threads": 1}, "wsi-ctc": {"batch_size": 4}},
        "executor": {"backend": "dask", "dask": {"scheduler": cluster.address}, "poll_interval_s": 0.1},
        "ingest": {"settle_seconds": 0.2, "scan_interval_s": 0.2, "quiet_seconds": 1.0, "max_wait_s": 2.0},
    }
    daemon = DaemonProcess(tmp_path, config)
    series = write_mr_series(tmp_path / "mr", MRSeriesSpec(rows=128, columns=128, slices=24, pixel_spacing_mm=2.8,
                                                           slice_thickness_mm=4.0, lesions=1, seed=900_311))
    truth = write_slide(tmp_path / "gen" / "scan-9.tiff", SlideSpec(width=2048, height=2048, ctc=4, ctm=1, seed=7319))
    try:
        cluster.start(workers=2)
        daemon.start()
        inbox = daemon.data_dir / "inbox"
        for path in [*series.files, tmp_path / "gen" / "scan-9.tiff"]:
            (inbox / f".{path.name}").write_bytes(path.read_bytes())
            (inbox / f".{path.name}").rename(inbox / path.name)
        wait_for(lambda: daemon.counts()["jobs"]["succeeded"] == 2, 300, interval=0.5, what="both jobs to succeed")
        workers = cluster.client_info()["workers"]
        assert isinstance(workers, dict)
        docs = {}
        for result in (daemon.data_dir / "results").glob("job-*/result.json"):
            doc = json.loads(result.read_text())
            docs[doc["pipeline"]] = doc
            assert doc["dask_worker"] in workers
        assert docs["mri-tumour"]["input"]["series_uid"] == series.series_uid
        assert docs["mri-tumour"]["summary"]["lesion_count"] >= 1
        assert abs(docs["wsi-ctc"]["summary"]["ctc_count"] - truth.counts()["CTC"]) <= 1
    finally:
        daemon.discard()
        cluster.stop()
