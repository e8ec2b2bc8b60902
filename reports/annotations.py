"""Microscopy Bulk Simple Annotations: every CTC and CTM detection on a DICOM whole-slide image.

One annotation group per class (CTC, CTM) that has detections; each detection is its box as a polygon, with
the model's confidence (and a cluster's cell count) as measurements. Coordinates are 3D in the slide's frame
of reference (mm), converted from level-0 pixels with highdicom's transformer for the total pixel matrix of
the level-0 image; the SR's regions stay 2D on that image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from highdicom import UID
from highdicom.ann import AnnotationGroup, Measurements, MicroscopyBulkSimpleAnnotations
from highdicom.spatial import ImageToReferenceTransformer
from pydicom.dataset import Dataset
from pydicom.uid import VLWholeSlideMicroscopyImageStorage

from reports import codes
from reports.findings import Detection
from reports.producer import MANUFACTURER, Producer, sequence_identification

log = logging.getLogger(__name__)

ANN_SERIES_NUMBER = 9103
CLASSES = ("CTC", "CTM")


def level0_image(headers: Sequence[Dataset]) -> Dataset | None:
    """The whole-slide image the detections' level-0 pixels refer to: the VL Whole Slide Microscopy image of
    type VOLUME with the largest total pixel matrix (what openslide calls level 0)."""
    volumes = [
        ds for ds in headers
        if str(ds.get("SOPClassUID", "")) == VLWholeSlideMicroscopyImageStorage
        and "TotalPixelMatrixColumns" in ds
        and len(ds.get("ImageType") or ()) > 2
        and str(ds.ImageType[2]).upper() == "VOLUME"
    ]
    if not volumes:
        return None
    return max(volumes, key=lambda ds: int(ds.TotalPixelMatrixColumns) * int(ds.TotalPixelMatrixRows))


def detection_annotations(
    detections: Sequence[Detection], source_image: Dataset, producer: Producer
) -> MicroscopyBulkSimpleAnnotations:
    """Bulk annotations of ``detections`` (level-0 pixel boxes) on ``source_image`` (the level-0 image)."""
    if not detections:
        raise ValueError("no detections: bulk annotations need at least one annotation")
    to_slide = ImageToReferenceTransformer.for_image(source_image, for_total_pixel_matrix=True)
    identification = sequence_identification(producer.algorithm(0), producer.pipeline, producer.version)
    groups = []
    present = [c for c in CLASSES if any(d.cls == c for d in detections)]
    present += sorted({d.cls for d in detections} - set(CLASSES))
    for number, cls in enumerate(present, start=1):
        members = [d for d in detections if d.cls == cls]
        measurements = [
            Measurements(
                name=codes.DETECTION_CONFIDENCE,
                values=np.array([d.confidence for d in members], dtype=np.float64),
                unit=codes.UNIT_NONE,
            )
        ]
        if cls == "CTM":
            measurements.append(
                Measurements(
                    name=codes.CLUSTER_MEMBERS,
                    values=np.array([d.members if d.members else np.nan for d in members], dtype=np.float64),
                    unit=codes.UNIT_NONE,
                )
            )
        groups.append(
            AnnotationGroup(
                number=number,
                uid=UID(producer.uids.item("annotation-group", number)),
                label=cls,
                annotated_property_category=codes.CELL_CATEGORY if cls == "CTC" else codes.LESION_CATEGORY,
                annotated_property_type=codes.DETECTION_CLASSES.get(cls, codes.private(cls[:16], cls)),
                graphic_type="POLYGON",
                graphic_data=_polygons(members, to_slide),
                algorithm_type="AUTOMATIC",
                algorithm_identification=identification,
                measurements=measurements,
                description=f"{len(members)} {cls} detected by {producer.model_names}"[:64],
            )
        )
    return MicroscopyBulkSimpleAnnotations(
        source_images=[source_image],
        annotation_coordinate_type="3D",
        annotation_groups=groups,
        series_instance_uid=producer.uids.series("ann"),
        series_number=ANN_SERIES_NUMBER,
        sop_instance_uid=producer.uids.instance("ann"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=producer.pipeline,
        software_versions=producer.version,
        device_serial_number=producer.serial_number,
        content_label="DETECTIONS",
        content_description=f"{producer.pipeline} CTC and CTM detections"[:64],
        series_description=f"{MANUFACTURER} {producer.pipeline} detections"[:64],
        coding_schemes=codes.coding_schemes(),
    )


def _polygons(detections: Sequence[Detection], to_slide: ImageToReferenceTransformer
              ) -> list[npt.NDArray[np.float64]]:
    """Each detection's box as 4 corners in slide coordinates (one transform for all of them)."""
    boxes = np.array([[d.l0_x0, d.l0_y0, d.l0_x1, d.l0_y1] for d in detections], dtype=np.float64)
    corners = np.stack(
        [boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [2, 3]], boxes[:, [0, 3]]], axis=1
    ).reshape(-1, 2)
    points = np.asarray(to_slide(corners), dtype=np.float64).reshape(len(detections), 4, 3)
    return list(points)
