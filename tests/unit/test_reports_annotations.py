"""Microscopy Bulk Simple Annotations of every detection on a DICOM whole-slide image (reports.annotations)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import MicroscopyBulkSimpleAnnotationsStorage

from reports import codes as rc
from reports.annotations import detection_annotations, level0_image
from reports.context import read_headers
from reports.findings import Algorithm, Detection
from reports.producer import Producer
from reports.uids import OutputUids
from tests.conftest import shared

DETECTIONS = (
    Detection("CTC", 0.91, 5.0, 5.0, 12.0, 12.0),
    Detection("CTM", 0.88, 20.0, 20.0, 40.0, 35.0, 4),
    Detection("CTC", 0.52, 30.0, 2.0, 38.0, 9.0),
)


@pytest.fixture(scope="module")
def image() -> Dataset:
    (header,), _ = read_headers([shared("wsi/highdicom_sm_image.dcm")])
    return header


def _producer(image: Dataset) -> Producer:
    uids = OutputUids.for_result(pipeline="wsi-ctc", pipeline_version="1.0.0", input_key=image.SeriesInstanceUID,
                                 study_uid=image.StudyInstanceUID, series_uid=image.SeriesInstanceUID, fingerprint="f")
    return Producer("wsi-ctc", "1.0.0", (Algorithm("wsi-ctc-yolo11n", "1.0", "c" * 64),), uids)


class TestLevel0Image:
    def test_the_largest_volume_image_of_the_pyramid(self) -> None:
        headers, _ = read_headers([shared("wsi/dicom-boxes/boxes_0.dcm"), shared("wsi/dicom-boxes/boxes_1.dcm")])
        chosen = level0_image(headers)
        assert chosen is not None and list(chosen.ImageType)[2] == "VOLUME"
        assert chosen.SOPInstanceUID == next(h.SOPInstanceUID for h in headers if h.ImageType[2] == "VOLUME")

    def test_none_for_other_images(self) -> None:
        ds = Dataset()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        assert level0_image([ds]) is None


class TestDetectionAnnotations:
    def test_attributes(self, image: Dataset) -> None:
        producer = _producer(image)
        ann = detection_annotations(DETECTIONS, image, producer)
        assert ann.SOPClassUID == MicroscopyBulkSimpleAnnotationsStorage
        assert ann.SOPInstanceUID == producer.uids.instance("ann")
        assert ann.SeriesInstanceUID == producer.uids.series("ann")
        assert (ann.StudyInstanceUID, ann.PatientID, ann.FrameOfReferenceUID) == (
            image.StudyInstanceUID, image.PatientID, image.FrameOfReferenceUID)
        assert (ann.SeriesNumber, ann.Manufacturer, ann.ManufacturerModelName, ann.AnnotationCoordinateType) == (
            9103, "OncoAgent", "wsi-ctc", "3D")
        assert ann.ReferencedImageSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID

    def test_one_group_per_class_with_every_detection(self, image: Dataset, tmp_path: Path) -> None:
        producer = _producer(image)
        detection_annotations(DETECTIONS, image, producer).save_as(tmp_path / "ann.dcm", enforce_file_format=True)
        back = hd.ann.annread(tmp_path / "ann.dcm")
        ctc, ctm = back.get_annotation_groups()
        assert (ctc.number, ctc.label, ctc.number_of_annotations, ctc.AnnotationGroupUID) == (
            1, "CTC", 2, producer.uids.item("annotation-group", 1))
        assert (ctm.label, ctm.number_of_annotations) == ("CTM", 1)
        assert ctc.annotated_property_type == rc.CTC and ctc.annotated_property_category == codes.SCT.Cell
        assert ctm.annotated_property_type == rc.CTM
        assert ctc.AnnotationGroupAlgorithmIdentificationSequence[0].AlgorithmName == "wsi-ctc-yolo11n"
        names, values, units = ctm.get_measurements()
        assert [n.meaning for n in names] == ["Detection confidence", "Cells in the cluster"]
        assert values.tolist() == [[pytest.approx(0.88), 4.0]]
        assert [u.value for u in units] == ["1", "1"]

    def test_coordinates_map_back_to_the_level0_boxes(self, image: Dataset, tmp_path: Path) -> None:
        detection_annotations(DETECTIONS, image, _producer(image)).save_as(tmp_path / "ann.dcm",
                                                                           enforce_file_format=True)
        back = hd.ann.annread(tmp_path / "ann.dcm")
        to_pixels = hd.spatial.ReferenceToImageTransformer.for_image(
            pydicom.dcmread(shared("wsi/highdicom_sm_image.dcm"), stop_before_pixels=True), for_total_pixel_matrix=True)
        polygons = back.get_annotation_groups()[0].get_graphic_data("3D")
        pixels = [to_pixels(p)[:, :2] for p in polygons]
        assert np.allclose(pixels[0], [[5, 5], [12, 5], [12, 12], [5, 12]], atol=1e-6)
        assert np.allclose(pixels[1], [[30, 2], [38, 2], [38, 9], [30, 9]], atol=1e-6)

    def test_no_detections_is_refused(self, image: Dataset) -> None:
        with pytest.raises(ValueError, match="no detections"):
            detection_annotations((), image, _producer(image))
