"""DICOM Segmentation of MRI lesions (reports.seg), on generated MR series with ground-truth lesion masks."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage

from pipelines.mri.volume import load_series
from pipelines.synthetic.mri_series import (
    AXIAL,
    MRSeries,
    MRSeriesSpec,
    volume_geometry,
    write_enhanced_mr_series,
    write_mr_series,
)
from reports.context import read_headers
from reports.findings import Algorithm, Lesion
from reports.producer import Producer
from reports.seg import ORIENTATION_TOLERANCE, LabelVolume, lesion_segmentation, shared_orientation
from reports.uids import OutputUids
from tests.conftest import shared

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


# ----------------------------------------------------------------------------------------- orientation tolerance

OBLIQUE = (0.8, 0.0, 0.6, 0.0, 1.0, 0.0)  # an oblique stack: slice normal (-0.6, 0, 0.8)
JITTER_SPEC = MRSeriesSpec(rows=48, columns=48, slices=40, lesions=2, seed=21, orientation=OBLIQUE)
JITTER_VALUES = 32  # like the GE 3D T1: 32 ImageOrientationPatient values over its slices


def _iop(ds: Dataset) -> np.ndarray:
    return np.array([float(v) for v in ds.ImageOrientationPatient])


def _jittered(orientation: tuple[float, ...], k: int) -> list[str]:
    """``orientation`` off in the tenth decimal place, one of JITTER_VALUES variants chosen by ``k``."""
    noise = np.random.default_rng(k % JITTER_VALUES).normal(scale=1e-10, size=6)
    return [f"{v + n:.13f}" for v, n in zip(orientation, noise, strict=True)]


def _rotated_y(orientation: tuple[float, ...], degrees: float) -> list[float]:
    """``orientation`` with both directions turned about the patient's y axis (a tilted slice)."""
    a = np.radians(degrees)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    iop = np.asarray(orientation, dtype=float)
    return [round(float(v), 12) for v in (*(turn @ iop[:3]), *(turn @ iop[3:]))]


def _segment_frames(mask: np.ndarray, numbers: dict[int, int]) -> int:
    """How many frames a BINARY SEG of ``mask`` holds: one per segment per slice the segment appears on."""
    return sum(int((mask == index).any(axis=(1, 2)).sum()) for index in numbers)


def _assert_dciodvfy_clean(path: Path) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dicom3tools' dciodvfy is not installed: the SEG was checked but not validated by dciodvfy")
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120, check=False)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
    assert errors == []


def _assert_frames_on_their_sources(seg: Dataset, headers: list[Dataset]) -> None:
    by_uid = {h.SOPInstanceUID: h for h in headers}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        assert "PlaneOrientationSequence" not in frame
        (derivation,) = frame.DerivationImageSequence
        (source,) = derivation.SourceImageSequence
        assert source.SpatialLocationsPreserved == "YES"
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose([float(v) for v in by_uid[source.ReferencedSOPInstanceUID].ImagePositionPatient],
                           position, atol=1e-3)


@pytest.fixture(scope="module")
def jittered(tmp_path_factory: pytest.TempPathFactory) -> MRSeries:
    """An oblique series whose files carry per-slice orientations that differ in the tenth decimal place."""
    series = write_mr_series(tmp_path_factory.mktemp("jittered"), JITTER_SPEC)
    for k, path in enumerate(series.files):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = _jittered(OBLIQUE, k)
        ds.save_as(path, enforce_file_format=True)
    return series


class TestSourceOrientations:
    def test_orientations_apart_in_the_tenth_decimal_give_a_seg_on_the_volume(self, jittered: MRSeries,
                                                                             tmp_path: Path) -> None:
        headers, _ = read_headers(jittered.files)
        assert len({tuple(h.ImageOrientationPatient) for h in headers}) == JITTER_VALUES
        before = copy.deepcopy(headers)
        image = load_series(jittered.files).image  # the pipeline's volume of the same series
        volume = LabelVolume.from_geometry(jittered.lesion_mask, image.GetOrigin(), image.GetSpacing(),
                                           image.GetDirection())
        result = lesion_segmentation(volume, _lesions(jittered), headers, _producer(jittered))
        seg = result.dataset
        assert seg.SOPClassUID == SegmentationStorage
        assert len(seg.SegmentSequence) == 2
        assert seg.NumberOfFrames == _segment_frames(jittered.lesion_mask, result.segment_numbers) > 2
        orientation = np.array([float(v) for v in
                                seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                                .ImageOrientationPatient])
        assert np.allclose(orientation, OBLIQUE, atol=ORIENTATION_TOLERANCE)
        assert all(np.allclose(orientation, _iop(h), atol=ORIENTATION_TOLERANCE) for h in headers)
        assert np.allclose(orientation, np.array(image.GetDirection()).reshape(3, 3)[:, :2].T.ravel(), atol=1e-5)
        _assert_frames_on_their_sources(seg, headers)
        assert headers == before  # the caller's datasets keep their own orientations
        assert [list(h.ImageOrientationPatient) for h in headers] == [_jittered(OBLIQUE, k)
                                                                      for k in range(len(headers))]
        seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
        back = hd.seg.segread(tmp_path / "seg.dcm")
        assert back.number_of_segments == 2
        _assert_dciodvfy_clean(tmp_path / "seg.dcm")

    @pytest.mark.parametrize(("slice_orientation", "spread"), [
        (_rotated_y(AXIAL, 5), "0.0872"),
        ((0.0, 1.0, 0.0, 0.0, 0.0, -1.0), "1"),  # one sagittal slice in an axial stack
        ((1.0, 0.0, 0.0, 0.0, 1.0 - 2e-4, 2e-2), "0.02"),
    ])
    def test_orientations_further_apart_are_refused_with_their_spread(
            self, series: MRSeries, slice_orientation: tuple[float, ...], spread: str) -> None:
        headers, _ = read_headers(series.files)
        assert all(tuple(float(v) for v in h.ImageOrientationPatient) == AXIAL for h in headers)
        headers[4].ImageOrientationPatient = list(slice_orientation)
        before = copy.deepcopy(headers)
        expected = (rf"orientations differ by up to {re.escape(spread)} per direction cosine "
                    r"\(2 ImageOrientationPatient values in 10 images; at most 0\.0001 counts as one orientation\)")
        with pytest.raises(ValueError, match=expected):
            lesion_segmentation(_volume(series), _lesions(series), headers, _producer(series))
        assert headers == before

    def test_just_beyond_the_tolerance_is_refused_and_within_it_accepted(self, series: MRSeries) -> None:
        headers, _ = read_headers(series.files)
        headers[3].ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.9 * ORIENTATION_TOLERANCE]
        assert len(shared_orientation(headers)) == len(headers)
        headers[3].ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 1.1 * ORIENTATION_TOLERANCE]
        with pytest.raises(ValueError, match=r"differ by up to 0\.00011 per direction cosine"):
            shared_orientation(headers)

    def test_sources_with_one_orientation_are_passed_as_they_are(self, series: MRSeries) -> None:
        headers, _ = read_headers(series.files)
        assert all(out is h for out, h in zip(shared_orientation(headers), headers, strict=True))

    def test_enhanced_mr_with_per_frame_orientations(self, tmp_path: Path) -> None:
        """An Enhanced MR object that gives each frame its own (jittered) PlaneOrientationSequence: the copy
        highdicom gets holds one orientation in the shared functional groups."""
        series = write_enhanced_mr_series(tmp_path / "emr.dcm", SPEC)
        headers, _ = read_headers(series.files)
        (ds,) = headers
        del ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
        for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
            plane = Dataset()
            plane.ImageOrientationPatient = _jittered(AXIAL, k)
            item.PlaneOrientationSequence = DicomSequence([plane])
        before = copy.deepcopy(headers)
        seg = lesion_segmentation(_volume(series), _lesions(series), headers, _producer(series)).dataset
        orientation = [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                       .ImageOrientationPatient]
        assert np.allclose(orientation, AXIAL, atol=ORIENTATION_TOLERANCE)
        assert all(frame.DerivationImageSequence[0].SourceImageSequence[0].SpatialLocationsPreserved == "YES"
                   for frame in seg.PerFrameFunctionalGroupsSequence)
        assert headers == before
        ds.PerFrameFunctionalGroupsSequence[2].PlaneOrientationSequence[0].ImageOrientationPatient = \
            _rotated_y(AXIAL, 5)
        with pytest.raises(ValueError, match=r"differ by up to 0.0872 .* in 10 frames of one image"):
            lesion_segmentation(_volume(series), _lesions(series), headers, _producer(series))


def test_seg_over_a_real_ge_series_whose_slices_disagree_in_the_eighth_decimal(tmp_path: Path) -> None:
    """A real GE DWI series (14 images: 2 slice positions x 7 diffusion images) writes its two slices with
    ImageOrientationPatient values about 3e-8 apart. A made-up lesion on its b=0 stack (the first image at each
    position) gets a SEG on the scanner's own geometry."""
    folder = shared("mri/ge_dwi_series")
    headers, problems = read_headers(sorted(folder.iterdir()))
    assert problems == [] and len(headers) == 14
    stack: dict[tuple[float, ...], Dataset] = {}
    for h in sorted(headers, key=lambda h: int(h.InstanceNumber)):
        stack.setdefault(tuple(round(float(v), 2) for v in h.ImagePositionPatient), h)
    sources = list(stack.values())
    assert len(sources) == 2
    assert tuple(sources[0].ImageOrientationPatient) != tuple(sources[1].ImageOrientationPatient)
    spread = float(np.max(np.abs(_iop(sources[0]) - _iop(sources[1]))))
    assert 1e-9 < spread < ORIENTATION_TOLERANCE
    row, column = _iop(sources[0])[:3], _iop(sources[0])[3:]
    normal = np.cross(row, column)
    along = [float(np.array([float(v) for v in h.ImagePositionPatient]) @ normal) for h in sources]
    ordered = [sources[i] for i in np.argsort(along)]
    rows, columns = int(ordered[0].Rows), int(ordered[0].Columns)
    labels = np.zeros((2, rows, columns), np.uint8)
    yy, xx = np.mgrid[:rows, :columns]
    labels[:, (yy - rows // 2) ** 2 + (xx - columns // 2) ** 2 <= 12**2] = 1
    spacing = [float(v) for v in ordered[0].PixelSpacing]  # (between rows, between columns)
    volume = LabelVolume.from_geometry(
        labels, [float(v) for v in ordered[0].ImagePositionPatient], (spacing[1], spacing[0], abs(along[1] - along[0])),
        tuple(np.column_stack([row, column, normal]).ravel()))
    before = copy.deepcopy(sources)
    producer = Producer("mri-tumour", "1.0.0", (Algorithm("unet", "2.0", "a" * 64),), OutputUids.for_result(
        pipeline="mri-tumour", pipeline_version="1.0.0", input_key=str(sources[0].SeriesInstanceUID),
        study_uid=str(sources[0].StudyInstanceUID), series_uid=str(sources[0].SeriesInstanceUID), fingerprint="f"))
    seg = lesion_segmentation(volume, (Lesion(1, 1.0, 24.0, None, None, None),), sources, producer).dataset
    assert seg.SOPClassUID == SegmentationStorage and seg.NumberOfFrames == 2
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    orientation = np.array([float(v) for v in
                            seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient])
    assert all(np.allclose(orientation, _iop(h), atol=ORIENTATION_TOLERANCE) for h in sources)
    _assert_frames_on_their_sources(seg, sources)
    assert {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for f in seg.PerFrameFunctionalGroupsSequence} == {h.SOPInstanceUID for h in sources}
    assert sources == before
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    _assert_dciodvfy_clean(tmp_path / "seg.dcm")
