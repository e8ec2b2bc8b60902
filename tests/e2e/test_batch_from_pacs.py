"""A nightly batch that reads a PACS (issue 11): the daemon's scheduler finds Orthanc's recent studies by C-FIND,
retrieves them by C-MOVE to its own SCP, processes them with the real pipelines, and sends the results back to
Orthanc once; the next run finds the same studies and sends nothing again."""

from __future__ import annotations

import shutil
import time
from datetime import date, timedelta
from pathlib import Path

import pydicom
import pytest

from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.conftest import shared
from tests.e2e.test_batch_run_daemons import runs
from tests.support.daemon import DaemonProcess, record_finished_run
from tests.support.net import free_port
from tests.support.orthanc import Orthanc
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MR = MRSeriesSpec(rows=96, columns=96, slices=12, pixel_spacing_mm=3.5, slice_thickness_mm=5.0, seed=9301)


def dated(files: list[Path], day: date, folder: Path) -> list[Path]:
    """Copies of ``files`` under ``folder`` whose study is dated ``day``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in files:
        ds = pydicom.dcmread(path)
        ds.StudyDate = ds.SeriesDate = day.strftime("%Y%m%d")
        ds.save_as(folder / path.name)
        out.append(folder / path.name)
    return out


def sop_uids(files: list[Path]) -> set[str]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}


def ran_before(daemon: DaemonProcess, batch: str) -> None:
    """Record a run of ``batch`` two minutes ago: the daemon, finding the latest slot missed since, runs it
    when it starts instead of at the next minute (how a daemon catches up after being down)."""
    daemon.data_dir.mkdir(parents=True, exist_ok=True)
    record_finished_run(f"sqlite:///{daemon.data_dir / 'oncoagent.db'}", batch, (time.time() // 60 - 2) * 60)


def counted(daemon: DaemonProcess, what: str) -> dict[str, int]:
    """``oncoagent status``'s counts of jobs or outbox entries by status, without the zeros."""
    return {status: n for status, n in daemon.status()[what].items() if n}


def polled(daemon: DaemonProcess, what: str) -> dict[str, int]:
    """The same counts read from the store in this process: for polling (a CLI per poll takes a core from the
    daemon's jobs)."""
    return {status: n for status, n in daemon.counts()[what].items() if n}


def test_a_pacs_batch_retrieves_recent_studies_and_sends_results_back_once(tmp_path: Path) -> None:
    today = date.today()
    recent = write_mr_series(tmp_path / "gen" / "mr", MR)
    old = write_mr_series(tmp_path / "gen" / "old", MRSeriesSpec(**{**MR.__dict__, "seed": 9302}))
    slide = sorted(shared("wsi/dicom-boxes").iterdir())
    scp_port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", modalities={"oncoagent": ("ONCOAGENT", "127.0.0.1", scp_port)})
    (tmp_path / "daemon").mkdir()
    daemon = DaemonProcess(tmp_path / "daemon", {
        "executor": {"workers": 2, "poll_interval_s": 0.1, "shutdown_grace_s": 1.0},
        "ingest": {"settle_seconds": 0.2, "scan_interval_s": 0.2, "quiet_seconds": 1.0},
        "outbox": {"backoff_base_s": 0.3, "backoff_max_s": 1.0, "scan_interval_s": 0.2, "timeout_s": 10},
        "scp": {"ae_title": "ONCOAGENT", "port": scp_port},
        "destinations": [{"name": "pacs", "ae_title": orthanc.ae_title, "host": "127.0.0.1",
                          "port": orthanc.dicom_port}],
        "scheduler": {"batches": [{
            "name": "pacs-nightly", "cron": "* * * * *", "send_results": "always",
            "pacs": {"destination": "pacs", "days": 2, "modalities": ["MR", "SM"], "timeout_s": 120},
        }]},
    })
    orthanc.start()
    try:
        for path in [*dated(recent.files, today, tmp_path / "up" / "mr"),
                     *dated(old.files, today - timedelta(days=30), tmp_path / "up" / "old"),
                     *dated(slide, today - timedelta(days=1), tmp_path / "up" / "sm")]:
            orthanc.upload(path)
        before = set(orthanc.sop_instance_uids())
        ran_before(daemon, "pacs-nightly")  # so that the daemon runs the slot it finds missed at once
        daemon.start()

        # the catch-up run at start and the cron's next minute may overlap: the run that queued the jobs is
        # the one with jobs, and any later run must queue nothing
        first = wait_for(lambda: next((r for r in daemon.batch_runs() if r["status"] == "done" and r["total"]),
                                      None), 240, interval=0.5, what="the first PACS run to end with its jobs")
        assert first["inputs"] == 2, first  # MR and SM: not the old study
        wait_for(lambda: polled(daemon, "jobs") == {"succeeded": 2}, 240, interval=0.2, what="both jobs to succeed")
        wait_for(lambda: set(polled(daemon, "outbox")) == {"sent"}, 60, interval=0.2,
                 what="the results delivered to Orthanc")
        sent = counted(daemon, "outbox")
        assert set(sent) == {"sent"} and sent["sent"] >= 3, sent  # the MR's SR and SEG, the slide's SR at least
        results = set(orthanc.sop_instance_uids()) - before
        assert len(results) == sent["sent"]
        stored = {p.stem for p in (daemon.data_dir / "storage").rglob("*.dcm")}
        assert stored - results == sop_uids(recent.files + slide)  # retrieved (and, later, our own results)
        assert not stored & sop_uids(old.files)  # the old study never

        last_with_jobs = max(r["id"] for r in runs(daemon) if r["total"])
        second = wait_for(lambda: next((r for r in daemon.batch_runs() if r["id"] > last_with_jobs
                                        and r["status"] in ("done", "failed")), None), 120, interval=0.5,
                          what="a later minute's run")
        assert second["status"] == "done" and second["inputs"] == 2 and second["total"] == 0, second  # nothing again
        assert counted(daemon, "outbox") == sent and counted(daemon, "jobs") == {"succeeded": 2}
        assert set(orthanc.sop_instance_uids()) - before == results  # sent once
        assert daemon.alive()
    finally:
        daemon.discard()
        orthanc.discard()
        shutil.rmtree(tmp_path / "up", ignore_errors=True)
