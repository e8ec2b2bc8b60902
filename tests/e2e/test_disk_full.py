"""The daemon's disk fills while a modality sends: new instances get 0xA700 (out of resources), nothing partial
remains, the daemon stays up, and receiving resumes once space is freed. With the database on the full disk
too, jobs and deliveries whose outcome cannot be recorded are retried and recorded once space is freed.

The disk is a small tmpfs mounted over the storage folder (or the whole data folder, database included) in
the private mount namespace tests/run-isolated.sh gives the suite. The SCP's free-space watermark is set to 0
so the disk really runs full (with the watermark, associations are refused before it does).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE
from pynetdicom.association import Association

from pipelines.synthetic.mri_series import MRSeriesSpec, synthetic_uid, write_mr_series
from tests.conftest import SCRIPTED_RULES
from tests.support.daemon import DaemonProcess
from tests.support.orthanc import Orthanc
from tests.support.tmpfs import fill, tmpfs
from tests.support.waiting import wait_for

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700

CONFIG: dict[str, Any] = {
    "routing": {"rules": [{"name": "series", "pipeline": "inspect", "match": {"kind": "dicom-series"}}]},
    "executor": {"workers": 1, "backoff_base_s": 0.2, "backoff_max_s": 1.0, "poll_interval_s": 0.1,
                 "shutdown_grace_s": 1.0},
    "ingest": {"settle_seconds": 0.2, "scan_interval_s": 0.2, "quiet_seconds": 1.0},
    "scp": {"min_free_disk_mb": 0},
}


def associate(daemon: DaemonProcess) -> Association:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    return ae.associate("127.0.0.1", daemon.scp_port, ae_title=daemon.scp_aet)


class Modality:
    """A pynetdicom sender on one association, reading every C-STORE status exactly."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.assoc = associate(daemon)
        assert self.assoc.is_established

    def send(self, ds: Dataset) -> int:
        status = self.assoc.send_c_store(ds)
        assert "Status" in status, "no C-STORE response"
        return int(status.Status)

    def release(self) -> None:
        self.assoc.release()


def digest(ds: Dataset) -> str:
    return hashlib.sha256(str(ds.SOPInstanceUID).encode() + b"|" + ds.PixelData).hexdigest()


def instances(tmp_path: Path, count: int, seed: int) -> list[Dataset]:
    series = write_mr_series(tmp_path / f"gen{seed}", MRSeriesSpec(slices=count, rows=64, columns=64, seed=seed))
    return [pydicom.dcmread(p) for p in series.files]


def large_instance(like: Dataset, side: int) -> Dataset:
    """An MR instance of ``side``² 16-bit pixels: above the SCP's streaming threshold for a large side."""
    ds = like.copy()
    ds.SOPInstanceUID = synthetic_uid("large", side, like.SOPInstanceUID)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows = ds.Columns = side
    ds.PixelData = bytes(range(256)) * (side * side * 2 // 256)
    return ds


def job_counts(daemon: DaemonProcess) -> dict[str, int]:
    return {status: n for status, n in daemon.status()["jobs"].items() if n}


def recorded(daemon: DaemonProcess) -> dict[str, str]:
    """SOP Instance UID -> path of every instance record."""
    with sqlite3.connect(f"file:{daemon.data_dir / 'oncoagent.db'}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT sop_instance_uid, path FROM instances").fetchall())


def stored(daemon: DaemonProcess) -> dict[str, Path]:
    return {p.stem: p for p in (daemon.data_dir / "storage").rglob("*.dcm")}


def assert_consistent(daemon: DaemonProcess, acknowledged: dict[str, str]) -> None:
    """Every acknowledged instance is recorded and on disk intact; nothing else is, nothing partial."""
    records, files = recorded(daemon), stored(daemon)
    assert set(records) == set(acknowledged), "records differ from the acknowledged instances"
    assert set(files) == set(acknowledged), "files differ from the acknowledged instances"
    assert {uid: str(path) for uid, path in files.items()} == records
    assert {uid: digest(pydicom.dcmread(path)) for uid, path in files.items()} == acknowledged
    assert not list(daemon.data_dir.rglob(".incoming-*")), "a partial file was left behind"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    (tmp_path / "daemon").mkdir()
    d = DaemonProcess(tmp_path / "daemon", CONFIG)
    yield d
    d.stop()


def send_until_refused(modality: Modality, datasets: list[Dataset], acknowledged: dict[str, str]) -> list[Dataset]:
    """Send in order until one is refused; return the refused one and the rest (all sent: each is refused)."""
    refused: list[Dataset] = []
    for ds in datasets:
        status = modality.send(ds)
        if not refused and status == SUCCESS:
            acknowledged[str(ds.SOPInstanceUID)] = digest(ds)
            continue
        assert status == OUT_OF_RESOURCES, f"status 0x{status:04X} on a full disk"
        refused.append(ds)
    return refused


def resend(daemon: DaemonProcess, modality: Modality, refused: list[Dataset], acknowledged: dict[str, str]) -> None:
    """Once space is free again: the refused instances are stored, everything acknowledged before is intact,
    the series is processed and the daemon stopped cleanly (before its disk is unmounted)."""
    for ds in refused:
        assert modality.send(ds) == SUCCESS
        acknowledged[str(ds.SOPInstanceUID)] = digest(ds)
    modality.release()
    assert_consistent(daemon, acknowledged)
    wait_for(lambda: daemon.counts()["jobs"].get("succeeded", 0) >= 1, 120, what="the series job")
    assert daemon.alive()
    assert daemon.log().count("routing failed") <= 1, "routing logs a traceback once per outage, not per scan"
    daemon.stop()
    assert daemon.wait() == 0


def test_full_storage_refuses_with_out_of_resources_leaves_nothing_partial_and_recovers(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    datasets = instances(tmp_path, 60, seed=71)
    with tmpfs(daemon.data_dir / "storage", size_kb=8 * 1024) as storage:
        daemon.start()
        filler = fill(storage, leave_kb=240)  # room for about 20 instances of 9 KB (a 4 KiB page more each)
        acknowledged: dict[str, str] = {}
        modality = Modality(daemon)
        refused = send_until_refused(modality, datasets, acknowledged)
        assert acknowledged, "the disk was full before the first instance"
        assert len(refused) >= 10, "the disk did not fill"
        # a large instance (streamed through a temporary file) that cannot fit is refused as well
        large = large_instance(datasets[0], 1600)
        assert modality.send(large) == OUT_OF_RESOURCES
        assert daemon.alive()
        assert_consistent(daemon, acknowledged)

        filler.unlink()
        resend(daemon, modality, [*refused, large], acknowledged)


def test_full_data_disk_with_the_database_on_it_keeps_every_acknowledged_instance(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    datasets = instances(tmp_path, 80, seed=72)
    with tmpfs(daemon.data_dir, size_kb=24 * 1024) as data_dir:
        daemon.start()
        filler = fill(data_dir, leave_kb=120)
        acknowledged: dict[str, str] = {}
        modality = Modality(daemon)
        refused = send_until_refused(modality, datasets, acknowledged)
        assert len(refused) >= 10, "the disk did not fill"
        assert daemon.alive()
        assert_consistent(daemon, acknowledged)

        filler.unlink()
        resend(daemon, modality, refused, acknowledged)


def test_jobs_on_a_full_data_disk_are_retried_and_finish_once_space_is_freed(tmp_path: Path) -> None:
    config = {**CONFIG, "plugins": ["tests.support.scripted_pipelines"], "routing": {"rules": SCRIPTED_RULES},
              "executor": {**CONFIG["executor"], "max_attempts": 100}}  # retries outlast the full disk
    (tmp_path / "daemon").mkdir()
    daemon = DaemonProcess(tmp_path / "daemon", config)
    with tmpfs(daemon.data_dir, size_kb=16 * 1024) as data_dir:
        daemon.start()
        try:
            inbox = data_dir / "inbox"
            for name in ("a-sleep2.tiff", "b.tiff"):
                (inbox / f".{name}").write_bytes(b"x")
                (inbox / f".{name}").rename(inbox / name)
            # one worker: a's job runs, b's waits its turn
            wait_for(lambda: job_counts(daemon) == {"running": 1, "queued": 1}, 60, what="one job running, one queued")
            filler = fill(data_dir, leave_kb=0)  # a's result cannot be written, its outcome not recorded, b not claimed
            wait_for(lambda: "No space left on device" in daemon.log(), 60, what="the job failing on the full disk")
            assert daemon.alive()
            filler.unlink()
            wait_for(lambda: job_counts(daemon) == {"succeeded": 2}, 120, what="the jobs once space is free")
            outputs = {(Path(job["result_path"]) / "output.txt").read_text()
                       for job in json.loads(daemon.cli("jobs", "list", "--json").stdout)}
            assert outputs == {"processed a-sleep2.tiff\n", "processed b.tiff\n"}
            assert not list((data_dir / "tmp").glob("*.partial")), "a staging folder was left behind"
            assert daemon.alive()
            assert daemon.log().count("routing failed") <= 1, "routing logs a traceback once per outage"
        finally:
            daemon.stop()


def test_free_space_watermark_refuses_instances_then_associations_until_space_is_freed(tmp_path: Path) -> None:
    datasets = instances(tmp_path, 60, seed=73)
    (tmp_path / "daemon").mkdir()
    daemon = DaemonProcess(tmp_path / "daemon", {**CONFIG, "scp": {"min_free_disk_mb": 2}})
    with tmpfs(daemon.data_dir / "storage", size_kb=4 * 1024) as storage:
        daemon.start()
        try:
            filler = fill(storage, leave_kb=2 * 1024 + 200)  # about 20 instances above the watermark
            acknowledged: dict[str, str] = {}
            modality = Modality(daemon)
            refused = send_until_refused(modality, datasets, acknowledged)
            assert acknowledged and len(refused) >= 10, "the watermark was not reached"
            modality.release()
            assert associate(daemon).is_rejected  # under the watermark: no new association
            wait_for(lambda: "scp.min_free_disk_mb" in daemon.log(), 10, what="the refusal's reason in the log")
            assert_consistent(daemon, acknowledged)
            assert shutil.disk_usage(storage).free > 1024 * 1024, "the watermark let the disk run full"

            filler.unlink()
            resend(daemon, Modality(daemon), refused, acknowledged)
        finally:
            daemon.stop()


def test_results_sent_while_the_data_disk_is_full_are_recorded_once_space_is_freed(tmp_path: Path) -> None:
    orthanc = Orthanc(tmp_path / "orthanc")
    config = {**CONFIG, "plugins": ["tests.support.scripted_pipelines"], "routing": {"rules": SCRIPTED_RULES},
              "destinations": [{"name": "pacs", "ae_title": orthanc.ae_title, "host": "127.0.0.1",
                                "port": orthanc.dicom_port}],
              "outbox": {"backoff_base_s": 0.3, "backoff_max_s": 1.0, "scan_interval_s": 0.2, "timeout_s": 5}}
    (tmp_path / "daemon").mkdir()
    daemon = DaemonProcess(tmp_path / "daemon", config)
    with tmpfs(daemon.data_dir, size_kb=16 * 1024) as data_dir:
        daemon.start()
        try:
            for name in ("a-dicomout.tiff", "b-dicomout.tiff"):
                (data_dir / "inbox" / f".{name}").write_bytes(b"x")
                (data_dir / "inbox" / f".{name}").rename(data_dir / "inbox" / name)
            wait_for(lambda: "no association" in daemon.cli("outbox", "list").stdout, 60, what="a failed attempt")
            filler = fill(data_dir, leave_kb=0)
            orthanc.start()  # the objects go out, but that they did cannot be recorded
            wait_for(lambda: len(orthanc.sop_instance_uids()) == 2, 60, what="the results at the PACS")
            assert daemon.status()["outbox"] == {"pending": 2}
            assert daemon.alive()
            filler.unlink()
            wait_for(lambda: daemon.counts()["outbox"] == {"sent": 2}, 60, what="the deliveries recorded")
            assert len(orthanc.get("/instances")) == 2
            # each went out once: acknowledged deliveries wait to be recorded instead of being sent again
            assert daemon.log().count("but that cannot be recorded yet; it will not be sent again") == 2
            assert daemon.alive()
        finally:
            daemon.stop()
            orthanc.discard()
