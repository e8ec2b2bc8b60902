"""A slide without patient context keeps its results locally, visibly: ``status`` counts it, ``jobs list
--unsent`` says what to do, and once a sidecar gives the context, ``jobs retry`` makes its DICOM objects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.synthetic.slides import SlideSpec, write_slide
from tests.e2e.test_wsi_daemon import drop
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_for

CONFIG: dict[str, Any] = {
    "executor": {"workers": 1, "backoff_base_s": 0.2, "backoff_max_s": 1.0, "poll_interval_s": 0.1,
                 "shutdown_grace_s": 1.0},
    "ingest": {"settle_seconds": 0.3, "scan_interval_s": 0.2, "quiet_seconds": 0.5, "max_wait_s": 2.0},
    "routing": {"rules": [{"name": "slides", "pipeline": "wsi-ctc", "match": {"kind": "slide"}}]},
    "pipelines": {"wsi-ctc": {"batch_size": 4}},
}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path, CONFIG)
    yield d
    d.discard()


def _job(daemon: DaemonProcess) -> dict[str, Any] | None:
    proc = daemon.cli("jobs", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    (job,) = json.loads(proc.stdout) or [None]
    return job if job and job["status"] in ("succeeded", "failed") else None


def _ended(daemon: DaemonProcess) -> bool:
    """Whether the store holds one job and it has ended (read in-process: polling the CLI takes a core from
    the job); :func:`_job` then reads it as ``oncoagent jobs list`` shows it."""
    counts: dict[str, int] = daemon.counts()["jobs"]
    return sum(counts.values()) == 1 and counts["succeeded"] + counts["failed"] == 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_slide_without_patient_context_is_listed_and_sent_after_a_sidecar_and_retry(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    slide = tmp_path / "gen" / "scan-7.tiff"
    write_slide(slide, SlideSpec(width=2048, height=2048, ctc=4, ctm=1, seed=7310))
    # a sidecar that names the accession but not the patient: not enough for DICOM objects
    (tmp_path / "gen" / "scan-7.tiff.json").write_text(json.dumps({"accession_number": "ACC-7"}))
    daemon.start()
    drop(tmp_path / "gen" / "scan-7.tiff.json", daemon.data_dir / "inbox")
    drop(slide, daemon.data_dir / "inbox")
    wait_for(lambda: _ended(daemon), 300, interval=0.3, what="the slide's job")
    job = _job(daemon)
    assert job is not None
    assert job["status"] == "succeeded"
    assert job["unsent_reason"].startswith("no patient context: no patient/study context (patient ID missing")
    result = Path(job["result_path"])
    assert (result / "report.pdf").is_file() and not list(result.glob("*.dcm"))
    assert json.loads((result / "result.json").read_text())["dicom_outputs"] == []

    assert daemon.status()["results_unsent"] == 1
    text = daemon.cli("status")
    assert "results not sent: no patient context  1" in text.stdout
    listed = daemon.cli("jobs", "list", "--unsent")
    assert listed.returncode == 0, listed.stderr
    stored = daemon.data_dir / "storage" / "slides"
    (slide_path,) = [p for p in stored.rglob("scan-7.tiff")]
    assert f"job {job['id']} (wsi-ctc) {slide_path}" in listed.stdout
    assert f"write {slide_path}.json with patient_id and accession_number" in listed.stdout
    assert f"oncoagent jobs retry {job['id']}" in listed.stdout

    slide_path.with_name("scan-7.tiff.json").write_text(json.dumps({"accession_number": "ACC-7",
                                                                     "patient_id": "P-7"}))
    retried = daemon.cli("jobs", "retry", str(job["id"]))
    assert retried.returncode == 0, retried.stderr
    wait_for(lambda: _ended(daemon) and not daemon.counts()["results_unsent"], 300, interval=0.3,
             what="the retried job without an unsent reason")
    again = _job(daemon)
    assert again is not None and again["unsent_reason"] is None
    assert again["id"] == job["id"] and again["status"] == "succeeded" and again["attempts"] == 1
    doc = json.loads((Path(again["result_path"]) / "result.json").read_text())
    assert sorted(o["file"] for o in doc["dicom_outputs"]) == ["overview.dcm", "sr.dcm"]
    assert daemon.status()["results_unsent"] == 0
    assert "every succeeded job's results were made for PACS" in daemon.cli("jobs", "list", "--unsent").stdout
