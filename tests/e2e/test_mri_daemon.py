"""A running daemon routes MR series to mri-tumour: a good series succeeds, a broken one fails with its reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from pipelines.synthetic.vendor_series import GE_BRAIN_T1
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_for

CONFIG: dict[str, Any] = {
    "routing": {"rules": [
        {"name": "mri", "pipeline": "mri-tumour", "priority": "routine",
         "match": {"kind": "dicom-series", "dicom": {"Modality": "MR"}, "min_slices": 3}},
    ]},
    "pipelines": {"mri-tumour": {"min_lesion_ml": 0.5, "torch_threads": 1}},
    "executor": {"workers": 1, "backoff_base_s": 0.2, "backoff_max_s": 1.0, "poll_interval_s": 0.1,
                 "shutdown_grace_s": 1.0},
    "ingest": {"settle_seconds": 0.2, "scan_interval_s": 0.2, "quiet_seconds": 1.0, "max_wait_s": 2.0},
}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path, CONFIG)
    yield d
    d.discard()


def drop(daemon: DaemonProcess, files: list[Path], prefix: str) -> None:
    """Write each file into the inbox under a hidden name, then rename it: never seen half-written."""
    inbox = daemon.data_dir / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for path in files:
        hidden = inbox / f".{prefix}-{path.name}"
        hidden.write_bytes(path.read_bytes())
        hidden.rename(inbox / f"{prefix}-{path.name}")


def jobs(daemon: DaemonProcess) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = daemon.cli_json("jobs", "list", "--json")
    return listed


def finished(daemon: DaemonProcess, count: int) -> bool:
    counts = daemon.counts()["jobs"]
    return counts["succeeded"] + counts["failed"] == count and counts["queued"] + counts["running"] == 0


def test_series_in_the_inbox_is_analysed_and_a_broken_one_fails_with_its_reason(daemon: DaemonProcess,
                                                                                tmp_path: Path) -> None:
    good = write_mr_series(tmp_path / "good", MRSeriesSpec(rows=128, columns=128, slices=24, pixel_spacing_mm=2.8,
                                                          slice_thickness_mm=4.0, lesions=1, seed=900_301))
    gappy = write_mr_series(tmp_path / "gappy", MRSeriesSpec(rows=64, columns=64, slices=8, pixel_spacing_mm=5.0,
                                                            slice_thickness_mm=5.0, lesions=0, seed=900_302))
    daemon.start()
    drop(daemon, good.files, "good")
    drop(daemon, [f for i, f in enumerate(gappy.files) if i != 4], "gappy")
    wait_for(lambda: finished(daemon, 2), 240, interval=0.5, what="both series jobs")
    assert daemon.alive()
    by_status = {job["status"]: job for job in jobs(daemon)}
    assert set(by_status) == {"succeeded", "failed"}
    failed = by_status["failed"]
    assert failed["pipeline"] == "mri-tumour" and failed["attempts"] == 1  # bad input: no retry
    assert "missing slice(s): a gap of 10.00 mm" in failed["last_error"]
    done = by_status["succeeded"]
    result = json.loads((Path(done["result_path"]) / "result.json").read_text())
    assert result["pipeline"] == "mri-tumour" and result["input"]["series_uid"] == good.series_uid
    assert result["summary"]["lesion_count"] >= 1
    assert [m["name"] for m in result["models"]] == ["mri-lesion-unet", "mri-lesion-svm"]
    assert (Path(done["result_path"]) / "lesions.nii.gz").is_file()
    assert [m["name"] for m in done["models"]] == ["mri-lesion-unet", "mri-lesion-svm"]


def test_a_series_outside_the_models_intended_input_fails_its_job_with_the_reason(daemon: DaemonProcess,
                                                                                  tmp_path: Path) -> None:
    brain = GE_BRAIN_T1.write(tmp_path / "ge")  # this test's rule sends every MR series to mri-tumour
    daemon.start()
    drop(daemon, brain.files, "ge")
    wait_for(lambda: finished(daemon, 1), 240, interval=0.5, what="the GE brain series' job")
    (job,) = jobs(daemon)
    assert job["status"] == "failed" and job["pipeline"] == "mri-tumour" and job["attempts"] == 1
    assert "BodyPartExamined BRAIN; this model is for ABDOMEN" in job["last_error"]
    assert not job.get("result_path")
