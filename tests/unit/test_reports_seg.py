"""DICOM Segmentation of MRI lesions (reports.seg), on generated MR series with ground-truth lesion masks."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage

from pipelines.synthetic.mri_series import (
    MRSeries,
    MRSeriesSpec,
    volume_geometry,
    write_enhanced_mr_series,
    write_mr_series,
)
from reports.context import read_headers
from reports.findings import Algorithm, Lesion
from reports.producer import Producer
from reports.seg import LabelVolume, lesion_segmentation
from reports.uids import OutputUids

SPEC = MRSeriesSpec(rows=48, columns=48, slices=10, lesions=2, seed=11)


def _producer(series: MRSeries) -> Producer:
    uids = OutputUids.for_result(pipeline="mri-tumour", pipeline_version="1.0.0", input_key=series.series_uid,
                                 study_uid=series.study_uid, series_uid=series.series_uid, fingerprint="f")
    return Producer("mri-tumour", "1.0.0", (Algorithm("unet", "2.0", "a" * 64), Algorithm("svm", "1.1", "b" * 64)),
                    uids)


def _lesions(series: MRSeries) -> tuple[Lesion, ...]:
    return tuple(Lesion(t.index, t.voxels * 0.00675, 2 * t.radius_mm, None, 0.5, t.label) for t in series.lesions)


def _volume(series: MRSeries, spec: MRSeriesSpec = SPEC) -> LabelVolume:
    origin, direction = volume_geometry(spec)
    return LabelVolume.from_geometry(series.lesion_mask, origin, series.spacing_mm, direction)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> MRSeries:
    return write_mr_series(tmp_path_factory.mktemp("mr"), SPEC)


class TestLabelVolume:
    def test_affine_maps_slice_row_column_to_patient_mm(self) -> None:
        volume = LabelVolume.from_geometry(np.zeros((2, 3, 4), np.uint8), (10.0, 20.0, 30.0), (0.5, 0.7, 3.0),
                                           (1, 0, 0, 0, 1, 0, 0, 0, 1))
        assert volume.affine.tolist() == [[0.0, 0.0, 0.5, 10.0], [0.0, 0.7, 0.0, 20.0], [3.0, 0.0, 0.0, 30.0],
                                          [0.0, 0.0, 0.0, 1.0]]


class TestLesionSegmentation:
    def test_attributes(self, series: MRSeries, tmp_path: Path) -> None:
        producer = _producer(series)
        headers, _ = read_headers(series.files)
        result = lesion_segmentation(_volume(series), _lesions(series), headers, producer)
        seg = result.dataset
        assert result.segment_numbers == {1: 1, 2: 2}
        assert seg.SOPClassUID == SegmentationStorage
        assert seg.SOPInstanceUID == producer.uids.instance("seg")
        assert seg.SeriesInstanceUID == producer.uids.series("seg")
        assert (seg.StudyInstanceUID, seg.PatientID, seg.FrameOfReferenceUID) == (
            series.study_uid, headers[0].PatientID, headers[0].FrameOfReferenceUID)
        assert (seg.SeriesNumber, seg.Manufacturer, seg.ManufacturerModelName, seg.SoftwareVersions) == (
            9102, "OncoAgent", "mri-tumour", "1.0.0")
        assert seg.SegmentationType == "BINARY"
        first = seg.SegmentSequence[0]
        assert (first.SegmentNumber, first.SegmentLabel, first.TrackingID, first.TrackingUID) == (
            1, "Lesion 1", "Lesion 1", producer.uids.item("lesion", 1))
        assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Lesion.value
        category = first.SegmentedPropertyCategoryCodeSequence[0]
        assert category.CodeValue == codes.SCT.MorphologicallyAbnormalStructure.value
        assert first.SegmentAlgorithmName == "unet"

    def test_frames_reference_the_source_instance_at_their_position(self, series: MRSeries, tmp_path: Path) -> None:
        headers, _ = read_headers(series.files)
        seg = lesion_segmentation(_volume(series), _lesions(series), headers, _producer(series)).dataset
        by_uid = {h.SOPInstanceUID: h for h in headers}
        for frame in seg.PerFrameFunctionalGroupsSequence:
            (source,) = frame.DerivationImageSequence[0].SourceImageSequence
            position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
            assert np.allclose([float(v) for v in by_uid[source.ReferencedSOPInstanceUID].ImagePositionPatient],
                               position)

    def test_round_trip_gives_the_ground_truth_per_source_instance(self, series: MRSeries, tmp_path: Path) -> None:
        headers, _ = read_headers(series.files)
        lesion_segmentation(_volume(series), _lesions(series), headers, _producer(series)).dataset.save_as(
            tmp_path / "seg.dcm", enforce_file_format=True)
        back = hd.seg.segread(tmp_path / "seg.dcm")
        assert back.number_of_segments == 2
        for k, path in enumerate(series.files):
            uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
            if not series.lesion_mask[k].any():
                continue
            pixels = back.get_pixels_by_source_instance([uid], combine_segments=True, skip_overlap_checks=True)
            assert np.array_equal(pixels[0], series.lesion_mask[k])

    def test_lesion_indices_become_consecutive_segments(self, series: MRSeries) -> None:
        headers, _ = read_headers(series.files)
        relabelled = np.where(series.lesion_mask == 2, 7, series.lesion_mask)
        origin, direction = volume_geometry(SPEC)
        volume = LabelVolume.from_geometry(relabelled, origin, series.spacing_mm, direction)
        lesions = (Lesion(1, 1.0, 5.0, None, None, None), Lesion(7, 1.0, 5.0, None, None, None))
        result = lesion_segmentation(volume, lesions, headers, _producer(series))
        assert result.segment_numbers == {1: 1, 7: 2}
        assert [s.SegmentLabel for s in result.dataset.SegmentSequence] == ["Lesion 1", "Lesion 7"]

    def test_enhanced_mr_frames_out_of_order(self, tmp_path: Path) -> None:
        order = [3, 0, 9, 1, 8, 2, 7, 4, 6, 5]
        series = write_enhanced_mr_series(tmp_path / "emr.dcm", SPEC, frame_order=order)
        headers, _ = read_headers(series.files)
        seg = lesion_segmentation(_volume(series), _lesions(series), headers, _producer(series)).dataset
        for frame in seg.PerFrameFunctionalGroupsSequence:
            (source,) = frame.DerivationImageSequence[0].SourceImageSequence
            slice_index = order[int(source.ReferencedFrameNumber) - 1]
            z = float(frame.PlanePositionSequence[0].ImagePositionPatient[2])
            assert z == pytest.approx(volume_geometry(SPEC)[0][2] + slice_index * SPEC.slice_thickness_mm)

    def test_no_lesions_is_refused(self, series: MRSeries) -> None:
        headers, _ = read_headers(series.files)
        with pytest.raises(ValueError, match="no lesions"):
            lesion_segmentation(_volume(series), (), headers, _producer(series))


def test_sr_reference_to_the_only_segment_of_a_seg(tmp_path: Path) -> None:
    """A SEG with one segment keeps its Segment Identification in the shared functional groups, where
    highdicom's ReferencedSegment.from_segmentation does not look; the SR still references it and its sources."""
    from reports.sr import referenced_segment

    spec = MRSeriesSpec(rows=48, columns=48, slices=10, lesions=1, seed=12)
    one = write_mr_series(tmp_path / "mr", spec)
    headers, _ = read_headers(one.files)
    seg = lesion_segmentation(_volume(one, spec), _lesions(one), headers, _producer(one)).dataset
    assert "SegmentIdentificationSequence" in seg.SharedFunctionalGroupsSequence[0]
    reference = referenced_segment(seg, 1)
    items = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in reference}
    segment = items["Referenced Segment"].ReferencedSOPSequence[0]
    assert (segment.ReferencedSOPInstanceUID, segment.ReferencedSegmentNumber) == (seg.SOPInstanceUID, 1)
    sources = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in reference
               if i.ConceptNameCodeSequence[0].CodeMeaning == "Source Image for Segmentation"}
    framed = {src.ReferencedSOPInstanceUID for frame in seg.PerFrameFunctionalGroupsSequence
              for d in frame.DerivationImageSequence for src in d.SourceImageSequence}
    assert sources == framed and sources <= {str(h.SOPInstanceUID) for h in headers}
