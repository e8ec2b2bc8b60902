"""A finding that should reach PACS is never lost to a crash: the job's success and its outbox entries commit
together, so killing a worker after it wrote the outputs, or the daemon right after the commit, leaves every
object in the outbox exactly once after a restart, and the PACS receives each once.

The daemon is frozen at the exact moment by a failpoint (``agent.failpoints``: the process stops itself with
SIGSTOP) and then killed with SIGKILL.
"""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from pynetdicom import AE, StoragePresentationContexts, evt

from agent.failpoints import ENV_POINTS, ENV_STATE
from agent.records import OutboxStatus
from agent.store import Store
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.e2e.test_mri_daemon import drop
from tests.support.daemon import DaemonProcess, stopped
from tests.support.net import free_port
from tests.support.waiting import wait_for

SERIES = MRSeriesSpec(rows=128, columns=128, slices=24, pixel_spacing_mm=2.8, slice_thickness_mm=4.0, lesions=1,
                      seed=900_301)


class Pacs:
    """A pynetdicom storage SCP on loopback that counts what it receives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: Counter[str] = Counter()
        self._lock = threading.Lock()
        ae = AE(ae_title="PACS")
        ae.supported_contexts = StoragePresentationContexts
        self._server = ae.start_server(("127.0.0.1", self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event: evt.Event) -> int:
        with self._lock:
            self.received[str(event.request.AffectedSOPInstanceUID)] += 1
        return 0

    def stop(self) -> None:
        self._server.shutdown()


@pytest.fixture
def pacs() -> Iterator[Pacs]:
    p = Pacs()
    yield p
    p.stop()


def _daemon(tmp_path: Path, pacs: Pacs, failpoint: str) -> DaemonProcess:
    config: dict[str, Any] = {
        "routing": {"rules": [{"name": "mri", "pipeline": "mri-tumour",
                               "match": {"kind": "dicom-series", "dicom": {"Modality": "MR"}, "min_slices": 3}}]},
        "pipelines": {"mri-tumour": {"torch_threads": 1}},
        "executor": {"workers": 1, "backoff_base_s": 0.2, "backoff_max_s": 1.0, "poll_interval_s": 0.1,
                     "shutdown_grace_s": 1.0},
        "ingest": {"settle_seconds": 0.2, "scan_interval_s": 0.2, "quiet_seconds": 1.0, "max_wait_s": 2.0},
        "destinations": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}],
        "outbox": {"backoff_base_s": 0.2, "backoff_max_s": 1.0, "scan_interval_s": 0.2},
    }
    state = tmp_path / "failpoints"
    state.mkdir()
    return DaemonProcess(tmp_path, config, env={ENV_POINTS: failpoint, ENV_STATE: str(state)})


def _store(daemon: DaemonProcess) -> Store:
    return Store.open(f"sqlite:///{daemon.data_dir / 'oncoagent.db'}", migrate=False)


def _delivered_once(daemon: DaemonProcess, pacs: Pacs) -> dict[str, Any]:
    """Wait until the job succeeded and its outbox is sent; check each object is queued and received once."""

    def sent() -> bool:
        counts = daemon.counts()
        return counts["jobs"]["succeeded"] == 1 and set(counts["outbox"]) == {OutboxStatus.SENT.value}

    wait_for(sent, 300, interval=0.3, what="the job's success and its objects sent")
    store = _store(daemon)
    try:
        (job,) = store.list_jobs()
        items = store.outbox_list()
    finally:
        store.close()
    assert job.result_path is not None
    result = json.loads((job.result_path / "result.json").read_text())
    expected = {o["sop_instance_uid"] for o in result["dicom_outputs"]}
    assert {"sr.dcm"} <= {o["file"] for o in result["dicom_outputs"]}
    assert Counter(i.sop_instance_uid for i in items) == Counter(dict.fromkeys(expected, 1))
    assert {i.destination for i in items} == {"pacs"} and {i.job_id for i in items} == {job.id}
    assert dict(pacs.received) == dict.fromkeys(expected, 1)
    return {"job": job, "result": result}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_worker_killed_after_writing_outputs_before_the_commit(tmp_path: Path, pacs: Pacs) -> None:
    daemon = _daemon(tmp_path, pacs, "worker.after-result")
    series = write_mr_series(tmp_path / "series", SERIES)
    try:
        daemon.start()
        drop(daemon, series.files, "mr")
        assert daemon.proc is not None
        parent = psutil.Process(daemon.proc.pid)
        worker = wait_for(lambda: next((c.pid for c in parent.children() if stopped(c.pid)), None), 300,
                          interval=0.2, what="the worker frozen after writing its result")
        # the outputs are on disk, the success is not recorded, nothing is in the outbox yet
        assert list((daemon.data_dir / "results").glob("job-*/sr.dcm"))
        store = _store(daemon)
        try:
            assert [j.status.value for j in store.list_jobs()] == ["running"]
            assert store.outbox_list() == []
        finally:
            store.close()
        psutil.Process(worker).kill()
        outcome = _delivered_once(daemon, pacs)
        assert outcome["job"].attempts == 2  # the killed attempt and the one that committed
        assert "worker process died (killed by SIGKILL)" in daemon.log()
    finally:
        daemon.discard()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_daemon_killed_right_after_the_commit(tmp_path: Path, pacs: Pacs) -> None:
    daemon = _daemon(tmp_path, pacs, "executor.after-success")
    series = write_mr_series(tmp_path / "series", SERIES)
    try:
        daemon.start()
        drop(daemon, series.files, "mr")
        assert daemon.proc is not None
        pid = daemon.proc.pid
        wait_for(lambda: stopped(pid), 300, interval=0.2, what="the daemon frozen after the success commit")
        daemon.signal(signal.SIGKILL)
        assert daemon.wait(30) == -signal.SIGKILL
        assert pacs.received == Counter()  # frozen before the sender could look
        daemon.start()
        outcome = _delivered_once(daemon, pacs)
        assert outcome["job"].attempts == 1  # committed once; the restart re-ran nothing
    finally:
        daemon.discard()
