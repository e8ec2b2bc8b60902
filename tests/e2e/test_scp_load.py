"""Load on the daemon's DICOM port while its workers run jobs: 8 dcmtk senders × 250 MR instances at once.

Every instance must be acknowledged, recorded once and stored once with the content that was sent; the jobs
that were running when the senders started, and the jobs of the received series, must finish.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest

from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.conftest import SCRIPTED_RULES
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (make test does)"),
    pytest.mark.slow,
]

SENDERS = 8
INSTANCES_PER_SENDER = 250
WORKERS = 2
SLOW_JOBS = 4  # each sleeps SLOW_JOB_S in a worker: the workers are busy when the senders start
SLOW_JOB_S = 6

CONFIG: dict[str, Any] = {
    "plugins": ["tests.support.scripted_pipelines"],
    "routing": {"rules": [*SCRIPTED_RULES,
                          {"name": "series", "pipeline": "inspect", "match": {"kind": "dicom-series"}}]},
    "executor": {"workers": WORKERS, "backoff_base_s": 0.2, "backoff_max_s": 1.0, "poll_interval_s": 0.1,
                 "shutdown_grace_s": 1.0},
    "ingest": {"settle_seconds": 0.2, "scan_interval_s": 0.2, "quiet_seconds": 1.0},
    # the machines the suite runs on may have little free disk; the watermark is not under test here
    "scp": {"min_free_disk_mb": 0},
}


def pixel_digest(path: Path) -> str:
    ds = pydicom.dcmread(path)
    return hashlib.sha256(ds.SOPInstanceUID.encode() + b"|" + ds.PixelData).hexdigest()


def test_eight_senders_while_jobs_run_store_every_instance_exactly_once(tmp_path: Path) -> None:
    sent: dict[str, str] = {}  # SOP Instance UID -> digest of what was sent
    batches: list[list[Path]] = []
    for n in range(SENDERS):
        series = write_mr_series(tmp_path / f"gen{n}",
                                 MRSeriesSpec(slices=INSTANCES_PER_SENDER, rows=64, columns=64, seed=500 + n))
        batches.append(series.files)
        for path in series.files:
            sent[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = pixel_digest(path)
    assert len(sent) == SENDERS * INSTANCES_PER_SENDER  # distinct series, distinct instances

    (tmp_path / "daemon").mkdir()
    daemon = DaemonProcess(tmp_path / "daemon", CONFIG)
    daemon.start()
    try:
        _load(daemon, batches, sent)
    finally:
        daemon.discard()


def _load(daemon: DaemonProcess, batches: list[list[Path]], sent: dict[str, str]) -> None:
    inbox = daemon.data_dir / "inbox"
    for n in range(SLOW_JOBS):
        name = f"busy{n}-sleep{SLOW_JOB_S}.tiff"
        (inbox / f".{name}").write_bytes(b"x")
        (inbox / f".{name}").rename(inbox / name)
    wait_for(lambda: daemon.counts()["jobs"].get("running", 0) == WORKERS, 60, what="every worker running a job")

    started = time.time()
    senders = [
        subprocess.Popen(
            ["storescu", "-v", "-aet", f"MODALITY{n}", "-aec", daemon.scp_aet, "127.0.0.1", str(daemon.scp_port),
             *map(str, files)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**daemon.env, "TCP_NODELAY": "1"},
        )
        for n, files in enumerate(batches)
    ]
    running_during_load = daemon.status()["jobs"].get("running", 0)
    outputs = [sender.communicate(timeout=600)[0] for sender in senders]
    load_s = time.time() - started

    for sender, output in zip(senders, outputs, strict=True):
        responses = re.findall(r"Received Store Response \(([^)]*)\)", output)
        assert sender.returncode == 0, output[-2000:]
        assert responses == ["Success"] * INSTANCES_PER_SENDER, output[-2000:]
    assert running_during_load >= 1, "no job was running while the senders sent"
    print(f"\n{len(sent)} instances from {SENDERS} senders in {load_s:.1f} s ({len(sent) / load_s:.0f}/s)")

    # every job finishes: the slow ones and one per received series
    expected_jobs = SLOW_JOBS + SENDERS
    wait_for(lambda: daemon.counts()["jobs"].get("succeeded", 0) == expected_jobs, 300, what="every job done")
    assert {k: v for k, v in daemon.status()["jobs"].items() if v} == {"succeeded": expected_jobs}
    assert _jobs_overlapping(daemon, started), "the slow jobs did not run while the senders sent"

    with sqlite3.connect(f"file:{daemon.data_dir / 'oncoagent.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT sop_instance_uid, path FROM instances").fetchall()
    assert len(rows) == len(sent)
    assert {uid for uid, _ in rows} == set(sent)

    storage = daemon.data_dir / "storage"
    files = list(storage.rglob("*.dcm"))
    assert sorted(p.stem for p in files) == sorted(sent)  # one file per UID, none twice
    assert {str(p) for p in files} == {path for _, path in rows}
    assert {p.stem: pixel_digest(p) for p in files} == sent
    assert not list(storage.rglob(".incoming-*"))
    assert daemon.alive()


def _jobs_overlapping(daemon: DaemonProcess, senders_started: float) -> bool:
    """Whether a slow job was still running after the senders had started (from the store's timestamps)."""
    with sqlite3.connect(f"file:{daemon.data_dir / 'oncoagent.db'}?mode=ro", uri=True) as db:
        finished = [row[0] for row in db.execute("SELECT finished_at FROM jobs WHERE pipeline = 'test-scripted'")]
    return len(finished) == SLOW_JOBS and max(finished) > senders_started
