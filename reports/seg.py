"""DICOM Segmentation of the MRI lesions, one segment per lesion, referencing the source MR instances.

The pipeline's label map (``lesions.nii.gz``, in the geometry of the volume that
:func:`pipelines.mri.volume.load_series` builds: slices ordered along the slice normal) is handed to
highdicom as a :class:`highdicom.Volume` with its affine in patient coordinates (LPS). highdicom matches
every frame to the source instance (or source frame) at the same position, so each frame's Derivation Image
Sequence names the MR image it segments, whatever the order of the files or of the frames in an enhanced MR
object. Segment *n* is the *n*-th lesion by label value; its tracking UID is the one the SR uses for the same
lesion, so viewers link measurement and outline.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from highdicom import UID, Volume
from highdicom.seg import Segmentation, SegmentDescription
from pydicom.dataset import Dataset

from reports import codes
from reports.findings import Lesion
from reports.producer import MANUFACTURER, Producer, sequence_identification

log = logging.getLogger(__name__)

SEG_SERIES_NUMBER = 9102


@dataclass(frozen=True)
class LabelVolume:
    """A label map: ``labels[slice, row, column]`` and the 4×4 affine from (slice, row, column) indices to
    patient coordinates in mm (LPS)."""

    labels: npt.NDArray[np.integer]
    affine: npt.NDArray[np.float64]

    @classmethod
    def from_geometry(
        cls,
        labels: npt.NDArray[np.integer],
        origin: Sequence[float],
        spacing_xyz: Sequence[float],
        direction: Sequence[float],
    ) -> LabelVolume:
        """From an ITK-style geometry: origin of voxel (0, 0, 0), spacing along x (columns), y (rows) and z
        (slices), and the row-major 3×3 direction matrix whose columns are those axes' directions."""
        matrix = np.asarray(direction, dtype=np.float64).reshape(3, 3)
        affine = np.eye(4)
        affine[:3, 0] = matrix[:, 2] * float(spacing_xyz[2])  # slice index → along the normal
        affine[:3, 1] = matrix[:, 1] * float(spacing_xyz[1])  # row index → down the columns
        affine[:3, 2] = matrix[:, 0] * float(spacing_xyz[0])  # column index → along the rows
        affine[:3, 3] = [float(v) for v in origin]
        return cls(np.asarray(labels), affine)


@dataclass(frozen=True)
class LesionSegmentation:
    """The SEG and which segment number holds which lesion (by the lesion's label value)."""

    dataset: Segmentation
    segment_numbers: dict[int, int]


def lesion_segmentation(
    volume: LabelVolume,
    lesions: Sequence[Lesion],
    sources: Sequence[Dataset],
    producer: Producer,
) -> LesionSegmentation:
    """The SEG of ``lesions`` (labels of ``volume``) derived from the MR instances ``sources`` (headers are
    enough). Label values that are not a reported lesion are left out."""
    if not lesions:
        raise ValueError("no lesions: a segmentation needs at least one segment")
    ordered = sorted(lesions, key=lambda les: les.index)
    numbers = {les.index: n for n, les in enumerate(ordered, start=1)}
    lookup = np.zeros(int(max(int(volume.labels.max(initial=0)), *numbers)) + 1, dtype=np.uint8)
    for index, number in numbers.items():
        lookup[index] = number
    labels = lookup[np.clip(volume.labels, 0, None).astype(np.int64)]
    segmenter = producer.algorithm(0)
    identification = sequence_identification(segmenter, producer.pipeline, producer.version)
    descriptions = [
        SegmentDescription(
            segment_number=numbers[les.index],
            segment_label=les.name,
            segmented_property_category=codes.LESION_CATEGORY,
            segmented_property_type=codes.LESION,
            algorithm_type="AUTOMATIC",
            algorithm_identification=identification,
            tracking_uid=producer.uids.item("lesion", les.index),
            tracking_id=les.name,
        )
        for les in ordered
    ]
    frame_of_reference = sources[0].get("FrameOfReferenceUID") if sources else None
    pixels = Volume(labels, volume.affine, "PATIENT", frame_of_reference_uid=frame_of_reference)
    seg = Segmentation(
        source_images=list(sources),
        pixel_array=pixels,
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=producer.uids.series("seg"),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=UID(producer.uids.instance("seg")),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=producer.pipeline,
        software_versions=producer.version,
        device_serial_number=producer.serial_number,
        content_label="LESIONS",
        content_description=f"{producer.pipeline} lesions"[:64],
        series_description=f"{MANUFACTURER} {producer.pipeline} lesions"[:64],
    )
    return LesionSegmentation(seg, numbers)
