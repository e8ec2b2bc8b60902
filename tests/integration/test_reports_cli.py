"""``oncoagent process`` with the trained models, as a user runs it: the result folder holds the reports and
DICOM objects that validate. Skipped until the models are trained (pipelines/models/*/manifest.json)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import SegmentationStorage

from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from pipelines.synthetic.slides import SlideSpec, write_slide
from tests.conftest import REPO, shared

MODELS = REPO / "pipelines" / "models"


def oncoagent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=False,
        timeout=300,
    )


def needs_models(family: str) -> None:
    if not (MODELS / family / "manifest.json").is_file():
        pytest.skip(f"the {family} models are not trained yet (pipelines/models/{family}/manifest.json)")


def dciodvfy(path: Path) -> str:
    """Validate ``path`` against its IOD with dciodvfy (Debian's dicom3tools); return the IOD it was checked
    against. Fails the test on any error, and where dciodvfy is missing: it is the check here."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.fail("dciodvfy is not installed: `make system-deps` installs Debian's dicom3tools")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120, check=False)
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in lines if line.startswith(("Error", "Abort"))]
    assert proc.returncode == 0 and not errors, f"{path.name}: " + "\n".join(errors or lines)
    iods = [line for line in lines if re.fullmatch(r"[A-Za-z0-9]+", line)]  # the IOD it checked against
    assert len(iods) == 1, f"{path.name}: dciodvfy named no single IOD: {lines}"
    return iods[0]


def validate_all(folder: Path) -> dict[str, str]:
    """Every DICOM object under ``folder`` (relative path → IOD), each valid."""
    return {str(path.relative_to(folder)): dciodvfy(path) for path in sorted(folder.rglob("*.dcm"))}


def says_no_patient_context(doc: dict[str, Any]) -> bool:
    """Whether a result says its findings stayed local for want of patient context (a warning, or the reason
    it was not sent)."""
    reasons = [*doc["warnings"], doc.get("unsent_reason") or ""]
    return any(str(reason).startswith("no patient") for reason in reasons)


def test_mri_tumour_result_has_reports_and_valid_objects(tmp_path: Path) -> None:
    needs_models("mri")
    series = write_mr_series(tmp_path / "mr", MRSeriesSpec(lesions=2, seed=8801, labels=("malignant", "benign")))
    out = tmp_path / "out"
    proc = oncoagent("--data-dir", str(tmp_path / "d"), "process", str(series.folder), "--pipeline", "mri-tumour",
                     "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = out / f"series-{series.series_uid}"
    doc = json.loads((result / "result.json").read_text())
    assert {"report.html", "report.pdf", "sr.dcm", "seg.dcm", "fallback/sr-comprehensive.dcm",
            "fallback/report-pdf.dcm"} <= set(doc["reports"])
    # the series has lesions: the SEG it calls for holds one segment per lesion found
    lesions = doc["summary"]["lesions"]
    assert lesions
    seg = pydicom.dcmread(result / "seg.dcm")
    assert seg.SOPClassUID == SegmentationStorage and len(seg.SegmentSequence) == len(lesions)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    assert validate_all(result) == {"sr.dcm": "Comprehensive3DSR", "seg.dcm": "Segmentation",
                                    "fallback/sr-comprehensive.dcm": "ComprehensiveSR",
                                    "fallback/report-pdf.dcm": "EncapsulatedPDF"}


def test_wsi_ctc_results_have_reports_and_valid_objects(tmp_path: Path) -> None:
    needs_models("wsi")
    write_slide(tmp_path / "case-3.tiff", SlideSpec(width=4096, height=4096, ctc=12, ctm=2, seed=8802))
    out = tmp_path / "out"
    proc = oncoagent("--data-dir", str(tmp_path / "d"), "process", str(tmp_path / "case-3.tiff"),
                     str(shared("wsi/highdicom_sm_image.dcm")), "--pipeline", "wsi-ctc", "--out", str(out),
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    local = json.loads((out / "case-3" / "result.json").read_text())
    assert {"report.html", "report.pdf", "figures/slide-overview.png"} <= set(local["reports"])
    assert not list((out / "case-3").rglob("*.dcm"))  # no accession mapping: reports only, and the job says why
    assert says_no_patient_context(local)
    (dicom,) = [d for d in out.iterdir() if d.name.startswith("series-")]
    doc = json.loads((dicom / "result.json").read_text())
    assert {"sr.dcm", "report.pdf", "fallback/report-pdf.dcm"} <= set(doc["reports"])
    # bulk annotations where, and only where, there are detections to hold
    assert ("annotations.dcm" in doc["reports"]) == bool(doc["summary"]["detections"])
    found = validate_all(dicom)
    assert found["sr.dcm"] == "Comprehensive3DSR" and found["fallback/report-pdf.dcm"] == "EncapsulatedPDF"
    assert set(found) == {name for name in doc["reports"] if name.endswith(".dcm")}


def test_a_slide_processed_one_shot_gets_its_context_from_the_filename_regex_and_sidecar(tmp_path: Path) -> None:
    """As in a watched folder: the accession from the configured filename regex, the patient from the sidecar;
    with both the slide's results leave as DICOM objects in the patient's study."""
    needs_models("wsi")
    slide = tmp_path / "ACC4711_slide.tiff"
    write_slide(slide, SlideSpec(width=4096, height=4096, ctc=8, ctm=1, seed=8803))
    (tmp_path / "ACC4711_slide.tiff.json").write_text(json.dumps({"patient_id": "PAT-0815", "note": "x"}))
    config = tmp_path / "oncoagent.yaml"
    config.write_text("ingest:\n  filename_regex: '(?P<accession_number>ACC\\d+)_'\n")
    out = tmp_path / "out"
    proc = oncoagent("--config", str(config), "--data-dir", str(tmp_path / "d"), "process", str(slide),
                     "--pipeline", "wsi-ctc", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((out / "ACC4711_slide" / "result.json").read_text())
    assert not says_no_patient_context(doc)
    assert "sr.dcm" in doc["reports"]
    found = validate_all(out / "ACC4711_slide")
    assert found["sr.dcm"] == "Comprehensive3DSR"
    assert set(found) == {name for name in doc["reports"] if name.endswith(".dcm")}
    sr = pydicom.dcmread(out / "ACC4711_slide" / "sr.dcm")
    assert (sr.AccessionNumber, sr.PatientID) == ("ACC4711", "PAT-0815")
    assert "PAT-0815" not in proc.stdout + proc.stderr  # context is used, never logged


def test_a_wrong_filename_regex_stops_at_start(tmp_path: Path) -> None:
    config = tmp_path / "oncoagent.yaml"
    config.write_text("ingest:\n  filename_regex: '(?P<acc>ACC'\n")
    proc = oncoagent("--config", str(config), "config", "check", cwd=tmp_path)
    assert proc.returncode == 2
    assert "ingest.filename_regex" in proc.stderr and "not a valid regular expression" in proc.stderr
