"""Typed views of results (reports.findings), their codes (reports.codes) and their maker (reports.producer)."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.sr.codedict import codes

from reports import codes as rc
from reports.findings import Algorithm, Detection, MriFindings, ReportInputError, SlideFindings, algorithms
from reports.producer import Producer, sequence_identification, sr_identification
from reports.uids import OutputUids, device_uid

SLIDE_SUMMARY: dict[str, Any] = {
    "ctc_count": 2, "ctm_count": 1, "counts": {"CTC": 2, "CTM": 1}, "tissue_area_mm2": 4.0,
    "density_per_mm2": {"CTC": 0.5, "CTM": 0.25}, "priority_score": 0.7, "priority": "high",
    "detections": [
        {"class": "CTC", "confidence": 0.6, "l0_box": [10, 20, 30, 40]},
        {"class": "CTM", "confidence": 0.9, "l0_box": [100, 100, 160, 150], "members": 3, "source": "grouping"},
        {"class": "CTC", "confidence": 0.9, "l0_box": [50, 60, 70, 80]},
    ],
    "slide": {"width_px": 1000, "height_px": 800, "mpp_um": [0.25, 0.26]},
    "processing": {"total_s": 3.0},
}


class TestSlideFindings:
    def test_reads_the_wsi_ctc_summary(self) -> None:
        f = SlideFindings.from_summary(SLIDE_SUMMARY)
        assert (f.ctc_count, f.ctm_count, f.tissue_area_mm2) == (2, 1, 4.0)
        assert (f.ctc_density_per_mm2, f.ctm_density_per_mm2, f.priority_score, f.priority) == (0.5, 0.25, 0.7, "high")
        assert (f.width_px, f.height_px, f.mpp_um) == (1000, 800, (0.25, 0.26))
        assert f.detections[1] == Detection("CTM", 0.9, 100.0, 100.0, 160.0, 150.0, 3)
        assert f.detections[1].l0_centre == (130.0, 125.0)

    def test_top_detections_most_confident_first_clusters_before_cells(self) -> None:
        top = SlideFindings.from_summary(SLIDE_SUMMARY).top_detections(2)
        assert [(d.cls, d.confidence) for d in top] == [("CTM", 0.9), ("CTC", 0.9)]

    def test_no_tissue_gives_no_density(self) -> None:
        f = SlideFindings.from_summary({**SLIDE_SUMMARY, "density_per_mm2": {"CTC": None, "CTM": None},
                                        "detections": []})
        assert f.ctc_density_per_mm2 is None and f.detections == ()

    def test_a_summary_off_schema_is_refused_with_the_reason(self) -> None:
        with pytest.raises(ReportInputError, match="wsi-ctc summary: KeyError"):
            SlideFindings.from_summary({"ctm_count": 1})
        with pytest.raises(ReportInputError, match="detection without class"):
            SlideFindings.from_summary({**SLIDE_SUMMARY, "detections": [{"class": "CTC"}]})


class TestMriFindings:
    def test_reads_the_mri_tumour_summary(self) -> None:
        f = MriFindings.from_summary({
            "lesions": [
                {"index": 1, "volume_ml": 2.5, "longest_diameter_mm": 20.0, "centroid_lps_mm": [1, 2, 3],
                 "malignancy_probability": 0.8, "label": "malignant",
                 "features": {"original_glcm_Contrast": 1.5, "bad": float("nan")}, "radiomics_params_sha256": "ab"},
                {"index": 2, "volume_ml": 0.5, "longest_diameter_mm": 9.0, "centroid_lps_mm": [0, 0, 0],
                 "malignancy_probability": None, "label": "not classified"},
            ],
            "series_summary": {"finding": "1 lesion(s) classified malignant"},
            "label_map_file": "lesions.nii.gz",
            "stage_seconds": {"volume": 0.5},
        })
        first = f.lesions[0]
        assert (first.index, first.volume_ml, first.longest_diameter_mm, first.centroid_lps_mm) == (1, 2.5, 20.0,
                                                                                                     (1.0, 2.0, 3.0))
        assert (first.malignancy_probability, first.label, dict(first.features)) == (
            0.8, "malignant", {"original_glcm_Contrast": 1.5})
        assert (f.malignant, f.total_volume_ml, f.label_map_file, f.finding) == (
            1, 3.0, "lesions.nii.gz", "1 lesion(s) classified malignant")
        assert f.lesions[1].malignancy_probability is None and f.lesions[1].name == "Lesion 2"

    def test_no_lesions(self) -> None:
        f = MriFindings.from_summary({"lesions": [], "series_summary": {}, "label_map_file": "lesions.nii.gz"})
        assert (f.lesions, f.finding, f.malignant, f.total_volume_ml) == ((), "no lesion found", 0, 0.0)


class TestAlgorithm:
    def test_from_models(self) -> None:
        doc = {"models": [{"name": "a", "version": "1", "sha256": "f" * 64}, "junk"]}
        assert algorithms(doc) == (Algorithm("a", "1", "f" * 64),)
        assert Algorithm("a", "1", "x").label == "a 1"


class TestCodes:
    def test_ibsi_features_of_the_original_image_get_dicom_codes(self) -> None:
        assert rc.radiomics_feature("original_glcm_Contrast") == codes.DCM.ContrastOfGLCM
        assert rc.radiomics_feature("original_glszm_SmallAreaEmphasis") == codes.DCM.SmallZoneEmphasis
        assert rc.radiomics_feature("original_firstorder_Mean") == codes.SCT.Mean

    def test_other_features_get_private_codes_named_by_pyradiomics(self) -> None:
        code = rc.radiomics_feature("wavelet-LLH_glcm_Contrast")
        assert (code.value, code.scheme_designator, code.meaning) == (
            "RAD:wavelet-LLH_glcm_Contrast", "99ONCO", "wavelet-LLH_glcm_Contrast")
        assert rc.radiomics_feature("original_shape_Sphericity").scheme_designator == "99ONCO"

    def test_units(self) -> None:
        assert rc.radiomics_unit("original_shape_MeshVolume") == codes.UCUM.CubicMillimeter
        assert rc.radiomics_unit("original_shape_Maximum3DDiameter") == codes.UCUM.Millimeter
        assert rc.radiomics_unit("original_glcm_Contrast") == codes.UCUM.NoUnits

    def test_private_scheme_is_declared(self) -> None:
        (item,) = rc.coding_schemes()
        assert (item.CodingSchemeDesignator, item.CodingSchemeName, item.CodingSchemeResponsibleOrganization) == (
            "99ONCO", "OncoAgent local concepts", "OncoAgent")
        assert all(len(c.value) <= 16 for c in (rc.CTC, rc.CTM, rc.CTC_COUNT, rc.PRIORITY_SCORE, rc.REGIONS_LISTED))


class TestProducer:
    def test_names_the_pipeline_and_its_models(self) -> None:
        uids = OutputUids("basis")
        producer = Producer("mri-tumour", "1.0.0", (Algorithm("seg", "2", "a" * 64), Algorithm("clf", "3", "b" * 64)),
                            uids)
        assert producer.device_uid == device_uid("mri-tumour", "1.0.0", "a" * 64 + "+" + "b" * 64)
        assert (producer.device_name, producer.model_names, producer.serial_number) == (
            "OncoAgent mri-tumour", "seg 2; clf 3", "a" * 16)
        assert producer.algorithm(1) == Algorithm("clf", "3", "b" * 64)
        assert producer.algorithm(5) == Algorithm("clf", "3", "b" * 64)
        assert Producer("inspect", "1", (), uids).algorithm(0) is None

    def test_identifications(self) -> None:
        tid4019 = sr_identification(Algorithm("seg", "2", "a" * 64))
        assert [item.TextValue for item in tid4019] == ["seg", "2", "OncoAgent", "weights sha256 " + "a" * 64]
        (item,) = sequence_identification(Algorithm("seg", "2", "a" * 64), "mri-tumour", "1.0.0")
        assert (item.AlgorithmName, item.AlgorithmVersion, item.AlgorithmSource) == ("seg", "2", "OncoAgent")
        assert item.AlgorithmFamilyCodeSequence[0].CodeValue == codes.cid7162.ArtificialIntelligence.value
