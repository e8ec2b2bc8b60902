"""Figures (reports.figures) and the HTML document (reports.document) from findings and arrays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from reports import figures
from reports.context import StudyContext
from reports.document import RESEARCH_NOTICE, DicomObject, build_document, machine_readable, render_html
from reports.findings import Detection, Lesion

DETECTIONS = (
    Detection("CTC", 0.9, 100, 100, 120, 120),
    Detection("CTC", 0.8, 110, 300, 130, 320),
    Detection("CTM", 0.7, 300, 100, 340, 140, 3),
)


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _view() -> figures.SlideView:
    rgb = np.full((100, 100, 3), 235, np.uint8)
    rgb[20:80, 20:80] = (180, 140, 200)  # "tissue"
    tissue = np.zeros((100, 100), bool)
    tissue[20:80, 20:80] = True
    return figures.SlideView(rgb, (4.0, 4.0), tissue, (0.5, 0.5))


def _has_colour(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 40) -> bool:
    return bool((np.abs(pixels - np.array(rgb)).sum(axis=2) < tolerance).any())


class TestSlideFigures:
    def test_overview_draws_the_outline_and_the_detections(self, tmp_path: Path) -> None:
        fig = figures.slide_overview(tmp_path / "figures" / "o.png", tmp_path, _view(), DETECTIONS)
        assert (fig.file, fig.title) == ("figures/o.png", "Slide overview")
        pixels = _png(tmp_path / fig.file)
        assert _has_colour(pixels, (0xE6, 0x28, 0x28))  # CTC rings
        assert _has_colour(pixels, (0xFA, 0x96, 0x00))  # CTM ring
        assert _has_colour(pixels, (0x1F, 0x77, 0xFF))  # tissue outline

    def test_heatmap_and_crops_and_gauge(self, tmp_path: Path) -> None:
        heat = figures.density_heatmap(tmp_path / "h.png", tmp_path, _view(), DETECTIONS)
        crop = figures.Crop(np.full((64, 64, 3), 200, np.uint8), DETECTIONS[0], (20.0, 20.0, 40.0, 40.0))
        crops = figures.detection_crops(tmp_path / "c.png", tmp_path, [crop, crop])
        gauge = figures.probability_gauges(tmp_path / "g.png", tmp_path, [("Lesion 1", 0.8, "malignant")], "P", "c")
        for fig in (heat, crops, gauge):
            pixels = _png(tmp_path / fig.file)
            assert pixels.std() > 10  # drawn, not blank
        assert _has_colour(_png(tmp_path / crops.file), (0xE6, 0x28, 0x28))  # the box


class TestMriFigures:
    def test_key_slices_and_radiomics(self, tmp_path: Path) -> None:
        image = np.random.default_rng(0).normal(100, 10, (40, 40)).astype(np.float32)
        labels = np.zeros((40, 40), np.uint8)
        labels[10:20, 10:20] = 1
        key = figures.mri_key_slices(tmp_path / "k.png", tmp_path, [figures.KeySlice(image, labels, 1, 4)])
        assert _has_colour(_png(tmp_path / key.file), (0xFF, 0x3B, 0x30))  # lesion 1's outline
        lesions = [Lesion(1, 1.0, 5.0, None, 0.6, "malignant", {"original_glcm_Contrast": 3.0,
                                                                  "wavelet-LLH_firstorder_Mean": -20.0})]
        chart = figures.radiomics_chart(tmp_path / "r.png", tmp_path, lesions)
        assert _has_colour(_png(tmp_path / chart.file), (0xFF, 0x3B, 0x30))


def _doc(pipeline: str, summary: dict[str, Any], warnings: list[str] | None = None) -> dict[str, Any]:
    return {"pipeline": pipeline, "pipeline_version": "1.0.0",
            "input": {"kind": "dicom-series", "key": "1.2.3", "series_uid": "1.2.3", "files": 3},
            "summary": summary, "models": [{"name": "m", "version": "1", "sha256": "ab" * 32}],
            "warnings": warnings or [], "started_at": "2026-01-01T00:00:00Z", "seconds": 2.5, "job_id": 12,
            "supersedes_job_id": 9}


CONTEXT = StudyContext(study_uid="1.2", patient_id="P1", patient_name="Doe^Jane", patient_sex="F",
                       accession_number="A1", study_date="20260102")


class TestBuildDocument:
    def test_mri_with_lesions(self) -> None:
        summary = {"lesions": [
            {"index": 1, "volume_ml": 2.5, "longest_diameter_mm": 20.0, "centroid_lps_mm": [1, 2, 3],
             "malignancy_probability": 0.83, "label": "malignant", "features": {"original_glcm_Contrast": 1.5}},
            {"index": 2, "volume_ml": 0.5, "longest_diameter_mm": 9.0, "centroid_lps_mm": [0, 0, 0],
             "malignancy_probability": 0.1, "label": "benign"}],
            "series_summary": {"finding": "1 lesion(s) classified malignant"}, "stage_seconds": {"segmentation": 1.25}}
        report = build_document(_doc("mri-tumour", summary), CONTEXT, "1.2.3", [])
        assert report.title == "MRI lesion analysis"
        assert report.headline == "2 lesion(s), 1 classified malignant (highest probability of malignancy 0.83)."
        assert report.headline_level == "high"
        lesions = report.tables[0]
        assert [(r.label, r.cells[:4], r.emphasis) for r in lesions.rows] == [
            ("Lesion 1", ("2.50", "20.0", "0.83", "malignant"), True),
            ("Lesion 2", ("0.50", "9.0", "0.10", "benign"), False)]
        assert ("Patient", "Doe Jane") in report.case and ("Supersedes job", "9") in report.case
        assert report.timings == (("Total", "2.5 s"), ("segmentation", "1.25 s"))

    def test_an_implausible_lesion_is_shown_for_review_not_as_a_malignancy(self) -> None:
        reason = "sheet-like shape: longest diameter 200 mm where a compact lesion of 5.0 mL spans about 21 mm"
        summary = {"lesions": [
            {"index": 1, "volume_ml": 5.0, "longest_diameter_mm": 200.0, "centroid_lps_mm": [1, 2, 3],
             "malignancy_probability": None, "classifier_probability": 1.0, "label": "implausible — review",
             "plausibility": [reason]}],
            "series_summary": {"finding": "lesions found, none classified malignant; 1 implausible as a lesion "
                                          "(shape or fluid signal), for review"}}
        report = build_document(_doc("mri-tumour", summary), CONTEXT, "1.2.3", [])
        assert report.headline == "1 lesion(s), 0 classified malignant."
        assert report.headline_level == "medium"
        (row,) = report.tables[0].rows
        assert (row.cells[2:4], row.emphasis) == (("—", "implausible — review"), False)
        assert f"Lesion 1: {reason}; not classified, for review." in (report.tables[0].note or "")

    def test_empty_results_say_so(self) -> None:
        mri = build_document(_doc("mri-tumour", {"lesions": [], "series_summary": {}}), CONTEXT, "s", [])
        assert (mri.headline, mri.headline_level) == ("No lesion found.", "none")
        slide = build_document(_doc("wsi-ctc", {
            "ctc_count": 0, "ctm_count": 0, "tissue_area_mm2": 12.5, "density_per_mm2": {"CTC": 0.0, "CTM": 0.0},
            "priority_score": 0.0, "priority": "low", "detections": [], "processing": {"total_s": 3.0,
                                                                                       "tiles_per_s": 9.0}}),
            None, "s1.svs", [])
        assert slide.headline == "No circulating tumour cells (CTC) or clusters (CTM) detected on 12.50 mm² of tissue."
        assert ("Patient", "no patient/study context for this input") in slide.case
        assert slide.timings == (("Total", "2.5 s"), ("total", "3.00 s"))


class TestRenderHtml:
    def test_the_page_holds_everything_and_escapes_values(self, tmp_path: Path) -> None:
        report = build_document(
            _doc("mri-tumour", {"lesions": [], "series_summary": {}}, warnings=["<script>alert(1)</script>"]),
            CONTEXT, "s", [figures.Figure("figures/k.png", "Key slices", "caption")],
            [DicomObject("sr.dcm", "Comprehensive 3D SR Storage", "2.25.1", "findings")],
        )
        html = render_html(report)
        assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
        assert RESEARCH_NOTICE.replace("'", "&#39;") in html
        assert '<img src="figures/k.png" alt="Key slices">' in html
        assert "No lesion found." in html and "2.25.1" in html and "ab" * 32 in html
        assert 'font-family: "DejaVu Sans"' in html  # the style sheet is not escaped


class TestMachineReadable:
    def test_same_content_without_the_patient(self) -> None:
        report = build_document(_doc("mri-tumour", {"lesions": [], "series_summary": {}}), CONTEXT, "s", [],
                                [DicomObject("sr.dcm", "Comprehensive 3D SR Storage", "2.25.1", "findings")])
        content = machine_readable(report)
        assert content["headline"] == "No lesion found." and "case" not in content
        assert content["objects"] == [{"file": "sr.dcm", "sop_class": "Comprehensive 3D SR Storage",
                                       "sop_instance_uid": "2.25.1", "role": "findings"}]
        assert content["models"] == [{"name": "m", "version": "1", "sha256": "ab" * 32}]
        assert "Doe" not in json.dumps(content) and "P1" not in json.dumps(content)
