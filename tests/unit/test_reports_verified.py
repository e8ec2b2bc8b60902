"""reports.verified: the corrections applied to a result, and the verified SR of a DICOM whole-slide image
(the AI's SR has per-detection regions there: the verified one lists the confirmed and added cells)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from pipelines.base import PipelineInput
from reports.context import read_headers
from reports.errors import ReportInputError
from reports.producer import Producer
from reports.render import write_reports
from reports.verified import Review, Sources, corrected_doc, verified_srs
from tests.conftest import shared

DETECTIONS = [
    {"class": "CTC", "confidence": 0.91, "l0_box": [5, 5, 12, 12]},
    {"class": "CTM", "confidence": 0.88, "l0_box": [20, 20, 40, 35], "members": 4},
    {"class": "CTC", "confidence": 0.52, "l0_box": [30, 2, 38, 9]},
]
REVIEW = Review("Path^Paula", "pathologist", "ONCOAGENT", 1_796_000_000.0, 1, None)


def _slide_doc(inp: PipelineInput) -> dict[str, Any]:
    summary = {"ctc_count": 2, "ctm_count": 1, "tissue_area_mm2": 0.0006,
               "density_per_mm2": {"CTC": 3333.3, "CTM": 1666.7}, "priority_score": 0.93, "priority": "high",
               "detections": DETECTIONS, "slide": {"width_px": 50, "height_px": 50, "mpp_um": [0.499, 0.499]}}
    return {"pipeline": "wsi-ctc", "pipeline_version": "1.0.0",
            "input": {"kind": inp.kind, "key": inp.key, "study_uid": inp.study_uid, "series_uid": inp.series_uid,
                      "files": 1},
            "summary": summary, "models": [{"name": "wsi-ctc-yolo11n", "version": "1.0", "sha256": "c" * 64}],
            "warnings": [], "job_id": 1}


def _groups(sr: Dataset) -> list[Dataset]:
    return [item for container in sr.ContentSequence if container.ValueType == "CONTAINER"
            for item in container.get("ContentSequence", []) if item.ValueType == "CONTAINER"]


def _meanings(group: Dataset) -> list[str]:
    return [item.ConceptNameCodeSequence[0].CodeMeaning for item in group.get("ContentSequence", [])]


def test_a_dicom_slide_lists_the_confirmed_and_added_cells_as_regions(tmp_path: Path) -> None:
    wsi = shared("wsi/highdicom_sm_image.dcm")
    header = pydicom.dcmread(wsi, stop_before_pixels=True)
    inp = PipelineInput(kind="dicom-series", key=header.SeriesInstanceUID, paths=(wsi,),
                        study_uid=header.StudyInstanceUID, series_uid=header.SeriesInstanceUID, job_id=1,
                        fingerprint="sm-1")
    doc = _slide_doc(inp)
    outcome = write_reports(doc, inp, tmp_path)
    assert not outcome.missing
    ai = pydicom.dcmread(tmp_path / "sr.dcm")
    added = {"class": "CTC", "confidence": None, "l0_box": [40, 40, 46, 46], "source": "added"}
    corrected = {"counts": {"CTC": 2, "CTM": 1}, "detections": [DETECTIONS[1], DETECTIONS[2], added]}
    fixed = corrected_doc(doc, corrected)
    headers, _ = read_headers([wsi])
    producer = Producer.of_result(doc, inp.key, inp.study_uid, inp.series_uid, inp.fingerprint)
    assert producer.uids.instance("sr") == ai.SOPInstanceUID  # the AI result's maker, rebuilt from result.json
    sr, fallback = verified_srs(fixed, producer, Sources(ai, ai, headers), REVIEW)

    assert len(_groups(ai)) == 1 + 3 and len(_groups(sr)) == 1 + 3  # the slide, then one group per cell
    confidences = [("Detection confidence" in _meanings(g)) for g in _groups(sr)[1:]]
    assert confidences == [True, True, False]  # the added cell has no model confidence
    assert "Triage priority score" in str(_groups(ai)[0]) and "Triage priority score" not in str(_groups(sr)[0])
    assert sr.VerificationFlag == "VERIFIED" and fallback.VerificationFlag == "VERIFIED"
    assert fallback.SOPInstanceUID != sr.SOPInstanceUID and fallback.SeriesInstanceUID == sr.SeriesInstanceUID
    # the same sign-off gives the same UIDs
    again, _ = verified_srs(fixed, producer, Sources(ai, ai, headers), REVIEW)
    assert again.SOPInstanceUID == sr.SOPInstanceUID
    if shutil.which("dciodvfy") is not None:
        for name, dataset in (("sr.dcm", sr), ("fallback.dcm", fallback)):
            path = tmp_path / "verified" / name
            path.parent.mkdir(exist_ok=True)
            dataset.save_as(path, enforce_file_format=True)
            proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120, check=False)
            assert [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")] == []


def test_mr_corrections_keep_the_accepted_lesions_with_their_labels() -> None:
    lesions = [{"index": 1, "volume_ml": 1.0, "longest_diameter_mm": 9.0, "label": "malignant"},
               {"index": 2, "volume_ml": 2.0, "longest_diameter_mm": 12.0, "label": "benign"}]
    doc = {"pipeline": "mri-tumour", "summary": {"lesions": lesions, "series_summary": {"malignant": 1}}}
    fixed = corrected_doc(doc, {"lesions": [{**lesions[0], "accepted": False},
                                            {**lesions[1], "accepted": True, "label": "malignant"}]})
    assert fixed["summary"]["lesions"] == [{**lesions[1], "label": "malignant"}]
    assert fixed["summary"]["series_summary"] == {"malignant": 1, "lesions": 1,
                                                  "finding": "1 lesion(s) classified malignant"}
    assert doc["summary"]["lesions"] == lesions  # the AI's result is not changed


def test_slide_corrections_recompute_the_densities_and_bad_corrections_are_refused() -> None:
    doc = {"pipeline": "wsi-ctc", "summary": {"ctc_count": 5, "ctm_count": 1, "tissue_area_mm2": 2.0,
                                              "detections": DETECTIONS}}
    fixed = corrected_doc(doc, {"counts": {"CTC": 3, "CTM": 0}, "detections": []})
    assert fixed["summary"]["density_per_mm2"] == {"CTC": 1.5, "CTM": 0.0}
    assert fixed["summary"]["ctc_count"] == 3 and fixed["summary"]["detections"] == []
    with pytest.raises(ReportInputError, match="corrected findings"):
        corrected_doc(doc, {"lesions": []})
    with pytest.raises(ReportInputError, match="no sign-off for pipeline"):
        corrected_doc({"pipeline": "inspect", "summary": {}}, {})


def test_the_signed_lines_name_the_reviewer_role_time_and_note() -> None:
    assert Review("Path^Paula", "pathologist", "X", 1_796_000_000.0, 2, "two cells doubtful").signed_lines() == (
        "Reviewed and signed by Path^Paula (pathologist) on 2026-11-30 00:53 UTC (version 2).",
        "Note: two cells doubtful",
    )
