"""TID 1500 measurement reports as Comprehensive 3D SR and Comprehensive SR (reports.sr).

Built on a generated MR series (with a SEG of its ground-truth lesions) and on a real DICOM whole-slide image;
every test writes the object, reads it back with pydicom and highdicom and checks the values it carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage, ComprehensiveSRStorage

from pipelines.synthetic.mri_series import MRSeries, MRSeriesSpec, volume_geometry, write_mr_series
from reports import codes as rc
from reports.annotations import level0_image
from reports.context import read_headers
from reports.findings import Algorithm, Detection, Lesion, MriFindings, SlideFindings
from reports.producer import Producer
from reports.seg import LabelVolume, LesionSegmentation, lesion_segmentation
from reports.sr import comprehensive_3d_sr, comprehensive_sr, mri_report, slide_report
from reports.uids import OutputUids
from tests.conftest import shared

SPEC = MRSeriesSpec(rows=48, columns=48, slices=10, lesions=2, seed=11)
MODELS = (Algorithm("mri-lesion-unet", "2.0", "a" * 64), Algorithm("mri-lesion-svm", "1.1", "b" * 64))


def _producer(pipeline: str, study: str, series: str, models: tuple[Algorithm, ...], fingerprint: str = "f"
              ) -> Producer:
    uids = OutputUids.for_result(pipeline=pipeline, pipeline_version="1.0.0", input_key=series, study_uid=study,
                                 series_uid=series, fingerprint=fingerprint)
    return Producer(pipeline, "1.0.0", models, uids)


def _roundtrip(ds: Dataset, path: Path) -> hd.sr.Comprehensive3DSR:
    ds.save_as(path, enforce_file_format=True)
    return hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path))


def _values(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> dict[str, tuple[float, str]]:
    return {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}


@dataclass(frozen=True)
class MriCase:
    series: MRSeries
    headers: list[Dataset]
    producer: Producer
    seg: LesionSegmentation


@pytest.fixture(scope="module")
def mri(tmp_path_factory: pytest.TempPathFactory) -> MriCase:
    series = write_mr_series(tmp_path_factory.mktemp("mr"), SPEC)
    headers, _ = read_headers(series.files)
    producer = _producer("mri-tumour", series.study_uid, series.series_uid, MODELS)
    origin, direction = volume_geometry(SPEC)
    volume = LabelVolume.from_geometry(series.lesion_mask, origin, series.spacing_mm, direction)
    seg = lesion_segmentation(volume, LESIONS, headers, producer)
    return MriCase(series, headers, producer, seg)


LESIONS = (
    Lesion(1, 2.5, 21.5, (1.0, 2.0, 3.0), 0.83, "malignant",
           {"original_glcm_Contrast": 12.5, "wavelet-LLH_firstorder_Mean": -3.25}),
    Lesion(2, 0.75, 9.0, (4.0, 5.0, 6.0), 0.12, "benign"),
)


class TestMriReport:
    def test_series_group_and_one_volumetric_group_per_lesion(self, mri: MriCase, tmp_path: Path) -> None:
        headers, producer, seg = mri.headers, mri.producer, mri.seg
        report = mri_report(MriFindings(LESIONS, "1 malignant", "lesions.nii.gz"), producer, seg.dataset,
                            seg.segment_numbers)
        back = _roundtrip(comprehensive_3d_sr(report, [*headers, seg.dataset], producer), tmp_path / "sr.dcm")
        content = back.content
        (series_group,) = content.get_image_measurement_groups(tracking_uid=producer.uids.item("series", 0))
        assert _values(series_group) == {
            "Number of lesions (observable entity)": (2, "1"),
            "Number of lesions classified malignant": (1, "1"),
            "Total lesion volume": (3.25, "cm3"),
        }
        (presence,) = series_group.get_qualitative_evaluations()
        assert presence.value == codes.SCT.Present
        groups = content.get_volumetric_roi_measurement_groups()
        assert [g.tracking_identifier for g in groups] == ["Lesion 1", "Lesion 2"]
        first = groups[0]
        assert first.tracking_uid == producer.uids.item("lesion", 1)  # the SEG segment's tracking UID too
        assert first.finding_type == codes.SCT.Lesion
        assert _values(first) == {
            "Volume": (2.5, "cm3"),
            "Diameter": (21.5, "mm"),
            "Probability of cancer": (0.83, "1"),
            "Contrast of GLCM": (12.5, "1"),
            "wavelet-LLH_firstorder_Mean": (-3.25, "1"),
        }
        (diameter,) = first.get_measurements(name=codes.SCT.Diameter)
        assert diameter.derivation == codes.SCT.Maximum
        (label,) = first.get_qualitative_evaluations(name=codes.SCT.Classification)
        assert label.value == codes.SCT.Malignant
        (segment_item,) = [i for i in first[0].ContentSequence if i.name == codes.DCM.ReferencedSegment]
        sop = segment_item.ReferencedSOPSequence[0]
        assert (sop.ReferencedSOPInstanceUID, sop.ReferencedSegmentNumber) == (seg.dataset.SOPInstanceUID, 1)

    def test_the_algorithm_is_the_observer_device(self, mri: MriCase, tmp_path: Path) -> None:
        headers, producer, seg = mri.headers, mri.producer, mri.seg
        report = mri_report(MriFindings(LESIONS, "", None), producer, seg.dataset, seg.segment_numbers)
        back = _roundtrip(comprehensive_3d_sr(report, [*headers, seg.dataset], producer), tmp_path / "sr.dcm")
        (observer,) = back.content.get_observer_contexts(observer_type=codes.DCM.Device)
        device = observer.observer_identifying_attributes
        assert (device.uid, device.name, device.manufacturer_name, device.model_name) == (
            producer.device_uid, "OncoAgent mri-tumour", "OncoAgent", "mri-lesion-unet 2.0; mri-lesion-svm 1.1")
        lesion = back.content.get_volumetric_roi_measurement_groups()[0]
        by_model = {}
        for name in (codes.SCT.Volume, codes.DCM.ProbabilityOfCancer):
            (measurement,) = lesion.get_measurements(name=name)
            items = measurement[0].ContentSequence
            by_model[name.meaning] = [i.TextValue for i in items if i.ValueType == "TEXT"]
        assert by_model == {
            "Volume": ["mri-lesion-unet", "2.0", "OncoAgent", "weights sha256 " + "a" * 64],
            "Probability of cancer": ["mri-lesion-svm", "1.1", "OncoAgent", "weights sha256 " + "b" * 64],
        }

    def test_no_lesions_is_a_valid_report_that_says_so(self, mri: MriCase, tmp_path: Path) -> None:
        headers, producer = mri.headers, mri.producer
        report = mri_report(MriFindings((), "no lesion found", None), producer, None, {})
        back = _roundtrip(comprehensive_3d_sr(report, headers, producer), tmp_path / "sr.dcm")
        (group,) = back.content.get_image_measurement_groups()
        assert _values(group)["Number of lesions (observable entity)"] == (0, "1")
        assert group.get_qualitative_evaluations()[0].value == codes.SCT.Absent
        assert back.content.get_volumetric_roi_measurement_groups() == []

    def test_lesions_without_a_seg_are_measured_without_a_region(self, mri: MriCase, tmp_path: Path) -> None:
        headers, producer = mri.headers, mri.producer
        report = mri_report(MriFindings(LESIONS, "", None), producer, None, {})
        back = _roundtrip(comprehensive_3d_sr(report, headers, producer), tmp_path / "sr.dcm")
        groups = back.content.get_image_measurement_groups()
        assert [g.tracking_identifier for g in groups] == ["Series", "Lesion 1", "Lesion 2"]


class TestComprehensive3DSR:
    def test_document_attributes(self, mri: MriCase, tmp_path: Path) -> None:
        series, headers, producer, seg = mri.series, mri.headers, mri.producer, mri.seg
        report = mri_report(MriFindings(LESIONS, "", None), producer, seg.dataset, seg.segment_numbers)
        sr = comprehensive_3d_sr(report, [*headers, seg.dataset], producer)
        sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
        ds = pydicom.dcmread(tmp_path / "sr.dcm")
        assert ds.SOPClassUID == Comprehensive3DSRStorage
        assert (ds.SOPInstanceUID, ds.SeriesInstanceUID) == (producer.uids.instance("sr"), producer.uids.series("sr"))
        assert (ds.StudyInstanceUID, ds.PatientID, ds.AccessionNumber) == (
            series.study_uid, headers[0].PatientID, headers[0].AccessionNumber)
        assert (ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer) == ("SR", 9101, 1, "OncoAgent")
        assert (ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag) == ("COMPLETE", "UNVERIFIED", "PRELIMINARY")
        assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
        assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99ONCO"
        evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
        referenced = {s.SeriesInstanceUID: len(s.ReferencedSOPSequence) for s in evidence.ReferencedSeriesSequence}
        assert referenced == {series.series_uid: SPEC.slices, seg.dataset.SeriesInstanceUID: 1}
        assert "PredecessorDocumentsSequence" not in ds

    def test_a_superseding_result_names_its_predecessor(self, mri: MriCase, tmp_path: Path) -> None:
        series, headers, producer = mri.series, mri.headers, mri.producer
        report = mri_report(MriFindings((), "no lesion found", None), producer, None, {})
        first = comprehensive_3d_sr(report, headers, producer)
        newer = _producer("mri-tumour", series.study_uid, series.series_uid, MODELS, fingerprint="new content")
        second = comprehensive_3d_sr(mri_report(MriFindings((), "", None), newer, None, {}), headers, newer, first)
        assert second.SOPInstanceUID != first.SOPInstanceUID
        (study,) = second.PredecessorDocumentsSequence
        (item,) = study.ReferencedSeriesSequence[0].ReferencedSOPSequence
        assert (item.ReferencedSOPInstanceUID, item.ReferencedSOPClassUID) == (first.SOPInstanceUID,
                                                                               Comprehensive3DSRStorage)
        retry = comprehensive_3d_sr(report, headers, producer, first)  # same content and version: a replacement
        assert retry.SOPInstanceUID == first.SOPInstanceUID and "PredecessorDocumentsSequence" not in retry


class TestComprehensiveSR:
    def test_same_content_other_class_and_instance(self, mri: MriCase, tmp_path: Path) -> None:
        headers, producer, seg = mri.headers, mri.producer, mri.seg
        report = mri_report(MriFindings(LESIONS, "", None), producer, seg.dataset, seg.segment_numbers)
        primary = comprehensive_3d_sr(report, [*headers, seg.dataset], producer)
        fallback = comprehensive_sr(report, [*headers, seg.dataset], producer)
        assert fallback.SOPClassUID == ComprehensiveSRStorage
        assert fallback.SOPInstanceUID == producer.uids.instance("sr-comprehensive") != primary.SOPInstanceUID
        assert fallback.SeriesInstanceUID == primary.SeriesInstanceUID
        assert fallback.ContentSequence == primary.ContentSequence


DETECTIONS = (
    Detection("CTC", 0.91, 5.0, 5.0, 12.0, 12.0),
    Detection("CTM", 0.88, 20.0, 20.0, 40.0, 35.0, 4),
    Detection("CTC", 0.52, 30.0, 2.0, 38.0, 9.0),
)
FINDINGS = SlideFindings(2, 1, 0.0006, 3333.3, 1666.7, 0.71, "high", DETECTIONS)


@pytest.fixture(scope="module")
def wsi() -> tuple[Dataset, Producer]:
    (header,), _ = read_headers([shared("wsi/highdicom_sm_image.dcm")])
    producer = _producer("wsi-ctc", header.StudyInstanceUID, header.SeriesInstanceUID,
                         (Algorithm("wsi-ctc-yolo11n", "1.0", "c" * 64),))
    return header, producer


class TestSlideReport:
    def test_slide_group_counts_densities_priority(self, wsi: tuple, tmp_path: Path) -> None:
        header, producer = wsi
        level0 = level0_image([header])
        report = slide_report(FINDINGS, producer, level0, regions=True, subject=hd.sr.SubjectContext.from_image(level0))
        back = _roundtrip(comprehensive_3d_sr(report, [header], producer), tmp_path / "sr.dcm")
        (slide,) = back.content.get_image_measurement_groups()
        assert slide.tracking_identifier == "Slide" and slide.tracking_uid == producer.uids.item("slide", 0)
        assert _values(slide) == {
            "Circulating tumour cell count": (2, "1"),
            "Circulating tumour microemboli count": (1, "1"),
            "Circulating tumour cells per tissue area": (3333.3, "/mm2"),
            "Circulating tumour microemboli per tissue area": (1666.7, "/mm2"),
            "Analysed tissue area": (0.0006, "mm2"),
            "Triage priority score": (0.71, "1"),
            "Detections listed as image regions": (3, "1"),
        }
        (priority,) = slide.get_qualitative_evaluations(name=codes.SCT.Priority)
        assert priority.value == codes.SCT.High
        assert [s.referenced_sop_instance_uid for s in slide.source_images] == [header.SOPInstanceUID]
        (subject,) = back.content.get_subject_contexts()
        assert subject.subject_class == codes.DCM.Specimen

    def test_detections_are_regions_on_the_level0_image_most_confident_first(self, wsi: tuple, tmp_path: Path
                                                                             ) -> None:
        header, producer = wsi
        report = slide_report(FINDINGS, producer, header, regions=True, max_regions=2)
        back = _roundtrip(comprehensive_3d_sr(report, [header], producer), tmp_path / "sr.dcm")
        groups = back.content.get_planar_roi_measurement_groups()
        assert [g.tracking_identifier for g in groups] == ["CTC 1", "CTM 2"]
        assert groups[1].finding_type == rc.CTM
        assert _values(groups[1]) == {"Detection confidence": (0.88, "1"), "Cells in the cluster": (4, "1")}
        region = groups[0].roi
        assert region is not None and region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        assert np.array_equal(region.value, [[5, 5], [12, 5], [12, 12], [5, 12], [5, 5]])
        source = region.ContentSequence[0].ReferencedSOPSequence[0]
        assert source.ReferencedSOPInstanceUID == header.SOPInstanceUID
        assert region.PixelOriginInterpretation == "VOLUME"
        (slide,) = back.content.get_image_measurement_groups()
        assert _values(slide)["Detections listed as image regions"] == (2, "1")

    def test_no_detections_is_a_valid_report(self, wsi: tuple, tmp_path: Path) -> None:
        header, producer = wsi
        empty = SlideFindings(0, 0, 1.5, 0.0, 0.0, 0.0, "low", ())
        back = _roundtrip(comprehensive_3d_sr(slide_report(empty, producer, header, regions=True), [header],
                                              producer), tmp_path / "sr.dcm")
        (slide,) = back.content.get_image_measurement_groups()
        assert _values(slide)["Circulating tumour cell count"] == (0, "1")
        assert slide.get_qualitative_evaluations()[0].value == codes.SCT.Low
        assert back.content.get_planar_roi_measurement_groups() == []
