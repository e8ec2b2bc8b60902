"""``oncoagent process DIR --pipeline mri-tumour`` as a subprocess: a generated series, vendor files, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import SimpleITK as sitk

from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from pipelines.synthetic.vendor_series import GE_BRAIN_T1, PHILIPS_T2_ABDOMEN, SIEMENS_T2_HASTE_ABDOMEN
from tests.conftest import REPO, shared


def oncoagent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=False,
        timeout=300,
    )


def test_process_writes_result_json_for_a_generated_series(tmp_path: Path) -> None:
    series = write_mr_series(tmp_path / "in" / "series", MRSeriesSpec(
        rows=160, columns=160, slices=30, pixel_spacing_mm=2.3, slice_thickness_mm=4.0, lesions=1,
        labels=("malignant",), seed=900_201))
    out = tmp_path / "out"
    proc = oncoagent("--data-dir", str(tmp_path / "d"), "process", str(tmp_path / "in"), "--pipeline", "mri-tumour",
                     "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 succeeded, 0 failed" in proc.stdout
    doc = json.loads((out / f"series-{series.series_uid}" / "result.json").read_text())
    assert doc["pipeline"] == "mri-tumour" and doc["pipeline_version"] == "1.0.0"
    assert doc["input"]["files"] == 30 and doc["input"]["series_uid"] == series.series_uid
    assert [m["name"] for m in doc["models"]] == ["mri-lesion-unet", "mri-lesion-svm"]
    assert all(len(m["sha256"]) == 64 for m in doc["models"])
    summary = doc["summary"]
    # the generated lesion is found (the shipped model's false-positive rate is measured in test_mri_models)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"series-{series.series_uid}" / "lesions.nii.gz")))
    assert labels.shape == series.lesion_mask.shape and summary["lesion_count"] == int(labels.max()) >= 1
    truth = series.lesion_mask > 0
    found = max(range(1, int(labels.max()) + 1), key=lambda k: int((truth & (labels == k)).sum()))
    assert 2 * (truth & (labels == found)).sum() / (truth.sum() + (labels == found).sum()) > 0.75
    lesion = next(item for item in summary["lesions"] if item["index"] == found)
    assert lesion["volume_ml"] > 1 and lesion["label"] in {"benign", "malignant"}
    for name in doc["files"]:
        assert (out / f"series-{series.series_uid}" / name).is_file()
    logs = proc.stdout + proc.stderr
    assert "SYNTHETIC^MR900201" not in logs and "SYN-MR-900201" not in logs  # no patient name or ID in logs
    assert series.series_uid in logs


def test_vendor_files_and_broken_input_fail_with_reasons_not_tracebacks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = oncoagent(
        "--data-dir", str(tmp_path / "d"), "process",
        str(shared("mri/ge_dwi_series")), str(shared("mri/philips_mr700_series")),
        str(shared("mri/pydicom_emri_small.dcm")), str(shared("mri/MR_small.dcm")),
        "--pipeline", "mri-tumour", "--out", str(out), cwd=tmp_path,
    )
    assert proc.returncode == 1
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 4, proc.stdout
    text = "\n".join(failed)
    assert "repeated slice positions: 14 images at 2 position(s)" in text
    assert "projection images (ImageType DERIVED\\SECONDARY\\PROJECTION IMAGE" in text
    assert "multi-frame object with 10 frame(s) but 0 per-frame functional group item(s)" in text
    assert "single-slice series (1 image)" in text
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "0 succeeded, 4 failed" in proc.stdout


def test_default_routing_takes_vendor_t2_abdomen_series_and_leaves_a_ge_brain_t1(tmp_path: Path) -> None:
    folders = {style.name: style.write(tmp_path / "in" / style.name).folder
               for style in (PHILIPS_T2_ABDOMEN, SIEMENS_T2_HASTE_ABDOMEN, GE_BRAIN_T1)}
    out = tmp_path / "out"
    proc = oncoagent("--config", str(REPO / "config" / "oncoagent.yaml"), "--data-dir", str(tmp_path / "d"),
                     "process", *map(str, folders.values()), "--out", str(out), cwd=tmp_path)
    assert "2 succeeded, 1 failed" in proc.stdout, proc.stdout + proc.stderr
    (failed,) = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert "not processed: no rule matched" in failed and "BodyPartExamined 'BRAIN'" in failed
    results = [json.loads(path.read_text()) for path in sorted(out.glob("series-*/result.json"))]
    assert len(results) == 2 and {doc["pipeline"] for doc in results} == {"mri-tumour"}


def test_an_out_of_domain_series_forced_to_mri_tumour_fails_with_the_reason(tmp_path: Path) -> None:
    series = GE_BRAIN_T1.write(tmp_path / "in" / "ge")
    out = tmp_path / "out"
    proc = oncoagent("--data-dir", str(tmp_path / "d"), "process", str(series.folder), "--pipeline", "mri-tumour",
                     "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 1 and "0 succeeded, 1 failed" in proc.stdout, proc.stdout + proc.stderr
    (failed,) = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert "not an input mri-lesion-unet 1.0.0 is for: BodyPartExamined BRAIN; this model is for ABDOMEN" in failed
    assert "not T2-weighted" in failed and "sagittal slices" in failed
    assert not list(out.glob("series-*/result.json"))  # no findings
