"""The daemon with slides routed to ``wsi-ctc``: a scanner folder, the inbox, a DICOM WSI series, bad input."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.synthetic.slides import SlideSpec, write_slide
from tests.conftest import shared
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_for

SLIDE_SUFFIXES = [".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vms"]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    scanner = tmp_path / "scanner"
    scanner.mkdir()
    config: dict[str, Any] = {
        "executor": {"workers": 1, "backoff_base_s": 0.2, "backoff_max_s": 1.0, "poll_interval_s": 0.1,
                     "shutdown_grace_s": 1.0},
        "ingest": {"settle_seconds": 0.3, "scan_interval_s": 0.2, "quiet_seconds": 0.5, "max_wait_s": 2.0,
                   "folders": [str(scanner)]},
        "routing": {"rules": [
            {"name": "slides", "pipeline": "wsi-ctc", "match": {"kind": "slide", "suffix": SLIDE_SUFFIXES}},
            {"name": "dicom-slides", "pipeline": "wsi-ctc",
             "match": {"kind": "dicom-series", "dicom": {"Modality": "SM"}}},
        ]},
        "pipelines": {"wsi-ctc": {"batch_size": 4}},
    }
    d = DaemonProcess(tmp_path, config)
    yield d
    d.discard()


def drop(source: Path, folder: Path) -> Path:
    """Copy under a hidden name, then rename: the daemon never sees a half-written file."""
    folder.mkdir(parents=True, exist_ok=True)
    hidden = folder / f".{source.name}.copying"
    shutil.copyfile(source, hidden)
    target = folder / source.name
    os.replace(hidden, target)
    return target


def finished(daemon: DaemonProcess, expected: int) -> list[dict[str, Any]] | None:
    proc = daemon.cli("jobs", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    jobs: list[dict[str, Any]] = json.loads(proc.stdout)
    done = [j for j in jobs if j["status"] in ("succeeded", "failed")]
    return jobs if len(done) >= expected and len(jobs) == len(done) else None


def ended(daemon: DaemonProcess, expected: int) -> bool:
    """What :func:`finished` waits for, read from the store (polling the CLI takes a core from the jobs)."""
    counts: dict[str, int] = daemon.counts()["jobs"]
    done = counts["succeeded"] + counts["failed"]
    return done >= expected and sum(counts.values()) == done


@pytest.mark.timeout(900)
def test_slides_from_a_scanner_folder_and_a_dicom_series_reach_wsi_ctc(daemon: DaemonProcess, tmp_path: Path) -> None:
    truth = write_slide(tmp_path / "gen" / "scan-001.tiff", SlideSpec(width=6144, height=6144, ctc=25, ctm=4,
                                                                     seed=7300))
    write_slide(tmp_path / "gen" / "bad.tiff", SlideSpec(width=2048, height=2048, ctc=1, ctm=0, seed=7301))
    data = (tmp_path / "gen" / "bad.tiff").read_bytes()
    (tmp_path / "gen" / "bad.tiff").write_bytes(data[: len(data) // 2])
    daemon.start()
    drop(tmp_path / "gen" / "scan-001.tiff", tmp_path / "scanner" / "run1")
    drop(tmp_path / "gen" / "bad.tiff", tmp_path / "scanner" / "run1")
    for dcm in sorted(shared("wsi/dicom-boxes").iterdir()):
        drop(dcm, daemon.data_dir / "inbox")
    wait_for(lambda: ended(daemon, 3), 720, interval=0.5, what="three wsi-ctc jobs")
    jobs = finished(daemon, 3)
    assert jobs is not None
    assert daemon.alive()
    by_status = {j["status"]: [] for j in jobs}
    for j in jobs:
        by_status[j["status"]].append(j)
    assert len(by_status["succeeded"]) == 2 and len(by_status["failed"]) == 1
    assert all(j["pipeline"] == "wsi-ctc" for j in jobs)
    (failed,) = by_status["failed"]
    assert failed["last_error"].startswith("bad.tiff: a TIFF that openslide cannot read as a slide")
    assert failed["attempts"] == 1  # bad input is not retried
    results = [json.loads((Path(j["result_path"]) / "result.json").read_text()) for j in by_status["succeeded"]]
    slide_doc = next(r for r in results if r["input"]["kind"] == "slide")
    expected = truth.counts()
    assert abs(slide_doc["summary"]["ctc_count"] - expected["CTC"]) <= 0.1 * expected["CTC"]
    assert slide_doc["models"][0]["name"] == "wsi-ctc-yolo11n"
    series_doc = next(r for r in results if r["input"]["kind"] == "dicom-series")
    assert series_doc["summary"]["slide"]["format"] == "dicom"
    # the scanner folder is read in place; the bad slide is moved aside with its reason, not deleted
    assert (tmp_path / "scanner" / "run1" / "scan-001.tiff").exists()
    quarantined = daemon.data_dir / "quarantine" / "bad.tiff"
    wait_for(quarantined.exists, 30, what="the bad slide in quarantine")
    reason = (daemon.data_dir / "quarantine" / "bad.tiff.reason.txt").read_text()
    assert "a TIFF that openslide cannot read as a slide" in reason
