"""The daemon's DICOM node end to end: dcmtk senders, SIGKILL while receiving, Orthanc as the PACS."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from agent.store import Store
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.conftest import SCRIPTED_RULES
from tests.support.daemon import DaemonProcess
from tests.support.orthanc import Orthanc
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (make test does)")

FAST: dict[str, Any] = {
    # the DICOM node is under test here, not the MRI models: series go to the model-free inspect pipeline
    "routing": {"rules": [{"name": "series", "pipeline": "inspect", "match": {"kind": "dicom-series"}}]},
    "executor": {"workers": 1, "backoff_base_s": 0.2, "backoff_max_s": 1.0, "poll_interval_s": 0.1,
                 "shutdown_grace_s": 1.0},
    "ingest": {"settle_seconds": 0.2, "scan_interval_s": 0.2, "quiet_seconds": 1.0},
    "outbox": {"backoff_base_s": 0.3, "backoff_max_s": 1.0, "scan_interval_s": 0.2, "timeout_s": 5},
}


def storescu(daemon: DaemonProcess, files: list[Path], *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["storescu", "-aet", "MODALITY", "-aec", daemon.scp_aet, *options, "127.0.0.1", str(daemon.scp_port),
         *map(str, files)],
        capture_output=True, text=True, timeout=300, check=False,
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path, FAST)
    yield d
    d.discard()


def test_series_sent_with_storescu_is_routed_and_processed(daemon: DaemonProcess, tmp_path: Path) -> None:
    series = write_mr_series(tmp_path / "gen", MRSeriesSpec(slices=10, rows=32, columns=32, seed=11))
    daemon.start()
    proc = storescu(daemon, series.files)
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: daemon.counts()["jobs"]["succeeded"] == 1, 60, what="the series job")
    status = daemon.status()
    assert status["instances"] == 10 and status["series"] == 1
    (job,) = json.loads(daemon.cli("jobs", "list", "--json").stdout)
    result = json.loads((Path(job["result_path"]) / "result.json").read_text())
    assert result["input"]["series_uid"] == series.series_uid and result["summary"]["instances"] == 10
    # sending the same series again changes nothing: no second job
    assert storescu(daemon, series.files).returncode == 0
    assert daemon.status()["jobs"]["succeeded"] == 1 and daemon.status()["instances"] == 10


def test_incomplete_series_waits_for_its_declared_count_then_reprocesses_late_instances(tmp_path: Path) -> None:
    series = write_mr_series(tmp_path / "gen", MRSeriesSpec(slices=8, rows=16, columns=16, seed=12))
    (tmp_path / "d").mkdir()
    daemon = DaemonProcess(tmp_path / "d", {**FAST, "ingest": {**FAST["ingest"], "max_wait_s": 4.0}})
    daemon.start()
    try:
        _reprocessing(daemon, series.files)
    finally:
        daemon.discard()


def _reprocessing(daemon: DaemonProcess, files: list[Path]) -> None:
    assert storescu(daemon, files[:5]).returncode == 0  # the series declares ImagesInAcquisition 8
    wait_for(lambda: "input 1 -> job" in daemon.log(), 30, what="routing after the maximum wait")
    assert daemon.status()["jobs"]["succeeded"] + daemon.status()["jobs"]["running"] <= 1
    wait_for(lambda: daemon.counts()["jobs"]["succeeded"] == 1, 60, what="the first job")
    assert storescu(daemon, files[5:]).returncode == 0
    wait_for(lambda: daemon.counts()["jobs"]["succeeded"] == 2, 60, what="the reprocessing job")
    jobs = sorted(json.loads(daemon.cli("jobs", "list", "--json").stdout), key=lambda j: j["id"])
    latest = json.loads((Path(jobs[1]["result_path"]) / "result.json").read_text())
    assert latest["summary"]["instances"] == 8
    assert latest["supersedes_job_id"] == jobs[0]["id"]


def test_sigkill_while_receiving_loses_no_acknowledged_instance(daemon: DaemonProcess, tmp_path: Path) -> None:
    series = write_mr_series(tmp_path / "gen", MRSeriesSpec(slices=300, rows=64, columns=64, seed=13))
    uid_of = {str(p): pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series.files}
    daemon.start()
    sender = subprocess.Popen(
        ["storescu", "-v", "-aet", "MODALITY", "-aec", daemon.scp_aet, "127.0.0.1", str(daemon.scp_port),
         *map(str, series.files)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    acknowledged: list[str] = []
    current: str | None = None
    assert sender.stdout is not None
    for line in sender.stdout:
        if m := re.search(r"Sending file: (\S+)", line):
            current = m.group(1)
        elif "Received Store Response (Success)" in line and current:
            acknowledged.append(uid_of[current])
            if len(acknowledged) == 40:
                daemon.signal(signal.SIGKILL)
                break
    daemon.wait()
    sender.stdout.read()
    sender.wait(timeout=60)
    daemon.start()
    store = Store.open(f"sqlite:///{daemon.data_dir / 'oncoagent.db'}")
    try:
        for uid in acknowledged:
            assert store.has_instance(uid), f"acknowledged instance {uid} was lost"
        on_disk = {p.stem for p in (daemon.data_dir / "storage").rglob("*.dcm")}
        assert set(acknowledged) <= on_disk
        assert not list((daemon.data_dir / "storage").rglob(".incoming-*"))  # no partial file survives
    finally:
        store.close()
    # the sender can finish the series after the restart
    assert storescu(daemon, series.files).returncode == 0
    assert daemon.status()["instances"] == 300


def test_refusals_keep_the_scp_alive(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, {**FAST, "scp": {"allowed_callers": [{"ae_title": "MODALITY"}]}})
    d.start()
    try:
        refused = subprocess.run(
            ["echoscu", "-aet", "STRANGER", "-aec", d.scp_aet, "127.0.0.1", str(d.scp_port)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert refused.returncode != 0
        wait_for(lambda: "is not in scp.allowed_callers" in d.log(), 10, what="the refusal in the log")
        ok = subprocess.run(
            ["echoscu", "-aet", "MODALITY", "-aec", d.scp_aet, "127.0.0.1", str(d.scp_port)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert ok.returncode == 0 and d.alive()
    finally:
        d.discard()


def test_results_reach_orthanc_once_it_is_back(tmp_path: Path) -> None:
    orthanc = Orthanc(tmp_path / "orthanc")
    config = {
        **FAST,
        "plugins": ["tests.support.scripted_pipelines"],
        "routing": {"rules": SCRIPTED_RULES},
        "destinations": [{"name": "pacs", "ae_title": orthanc.ae_title, "host": "127.0.0.1",
                          "port": orthanc.dicom_port}],
    }
    (tmp_path / "daemon").mkdir()
    d = DaemonProcess(tmp_path / "daemon", config)
    d.start()
    try:
        inbox = d.data_dir / "inbox"
        for name in ("a-dicomout.tiff", "b-dicomout.tiff"):
            (inbox / f".{name}").write_bytes(b"x")
            (inbox / f".{name}").rename(inbox / name)
        wait_for(lambda: d.counts()["outbox"].get("pending", 0) == 2, 60, what="results queued for the PACS")
        wait_for(lambda: "no association" in d.cli("outbox", "list").stdout, 30, what="a failed attempt")
        orthanc.start()
        wait_for(lambda: d.counts()["outbox"].get("sent", 0) == 2, 60, what="delivery once Orthanc is up")
        assert len(orthanc.sop_instance_uids()) == 2
        # a restart does not send anything twice
        d.stop()
        d.start()
        assert d.status()["outbox"] == {"sent": 2}
        assert len(orthanc.get("/instances")) == 2
    finally:
        d.discard()
        orthanc.discard()
