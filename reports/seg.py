"""DICOM Segmentation of the MRI lesions, one segment per lesion, referencing the source MR instances.

The pipeline's label map (``lesions.nii.gz``, in the geometry of the volume that
:func:`pipelines.mri.volume.load_series` builds: slices ordered along the slice normal) is handed to
highdicom as a :class:`highdicom.Volume` with its affine in patient coordinates (LPS). highdicom matches
every frame to the source instance (or source frame) at the same position, so each frame's Derivation Image
Sequence names the MR image it segments, whatever the order of the files or of the frames in an enhanced MR
object. Segment *n* is the *n*-th lesion by label value; its tracking UID is the one the SR uses for the same
lesion, so viewers link measurement and outline.

highdicom wants the source images to share one orientation exactly (single-frame images: equal
ImageOrientationPatient; a multi-frame image: a PlaneOrientationSequence in its shared functional groups).
Scanners write the same stack with orientations that differ in the last digits (a GE 3D T1: 32 values over 130
slices, apart in the tenth decimal place), and enhanced MR objects often give the orientation per frame.
:func:`shared_orientation` treats orientations within :data:`ORIENTATION_TOLERANCE` as one: highdicom gets
copies of the headers that carry their mean orientation; orientations further apart are refused.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from highdicom import UID, Volume
from highdicom.seg import Segmentation, SegmentDescription
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import format_number_as_ds

from reports import codes
from reports.findings import Lesion
from reports.producer import MANUFACTURER, Producer, sequence_identification

log = logging.getLogger(__name__)

SEG_SERIES_NUMBER = 9102

# Largest difference of any direction-cosine component (ImageOrientationPatient) between source images that
# still counts as one orientation. The copies highdicom gets claim that orientation for every slice, and the SEG
# says each frame lies on its source image (Spatial Locations Preserved), so the claim must be off by a
# negligible distance: 1e-4 per component tilts a plane by under 2e-4 rad, under 0.1 mm anywhere within 400 mm
# of the image's first pixel, a fifth of the finest MR pixels (~0.5 mm). It is a million times the last-digit
# noise scanners write (GE: 1e-10) and far above six-decimal rounding (5e-7). The pipeline's looser
# ORIENTATION_TOLERANCE (pipelines.mri.volume, 1e-3) answers another question, whether slices form one stack at
# all, and is not reused: between 1e-4 and 1e-3 the volume is analysed but the SEG is refused.
ORIENTATION_TOLERANCE = 1e-4


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
        source_images=shared_orientation(sources),
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


def shared_orientation(sources: Sequence[Dataset]) -> list[Dataset]:
    """``sources`` as highdicom's SEG accepts them: every image with one orientation, given once.

    Orientations that differ by at most :data:`ORIENTATION_TOLERANCE` per direction cosine are replaced, in
    copies (the caller's datasets stay as they are), by their mean made orthonormal; for a multi-frame image
    whose frames each give an orientation, the copy carries it in the shared functional groups instead. Sources
    that already share one orientation, or that lack the attributes (highdicom then says what is missing), are
    returned as they are. ValueError names the spread when the orientations are further apart."""
    if len(sources) == 1 and "PerFrameFunctionalGroupsSequence" in sources[0]:
        return [_multiframe_shared_orientation(sources[0])]
    values = [ds.get("ImageOrientationPatient") for ds in sources]
    if len(sources) < 2 or any(not value for value in values):
        return list(sources)
    orientations = [_cosines(value) for value in values]
    distinct = {tuple(o.tolist()) for o in orientations}
    if len(distinct) == 1:
        return list(sources)
    common = _common_orientation(orientations, f"{len(sources)} images")
    log.info("series %s: %d source images with %d orientations within %g taken as one orientation for the SEG",
             sources[0].get("SeriesInstanceUID"), len(sources), len(distinct), ORIENTATION_TOLERANCE)
    copies = []
    for ds in sources:
        clone = copy.deepcopy(ds)
        clone.ImageOrientationPatient = common
        copies.append(clone)
    return copies


def _multiframe_shared_orientation(ds: Dataset) -> Dataset:
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and "PlaneOrientationSequence" in shared[0]:
        return ds
    frames = list(ds.PerFrameFunctionalGroupsSequence)
    values = [item.PlaneOrientationSequence[0].get("ImageOrientationPatient")
              if item.get("PlaneOrientationSequence") else None for item in frames]
    if not frames or any(not value for value in values):
        return ds
    orientations = [_cosines(value) for value in values]
    distinct = {tuple(o.tolist()) for o in orientations}
    common: list[Any] = (
        list(frames[0].PlaneOrientationSequence[0].ImageOrientationPatient) if len(distinct) == 1
        else _common_orientation(orientations, f"{len(frames)} frames of one image"))
    log.info("series %s: orientation of %d frames (%d values) given once for the SEG",
             ds.get("SeriesInstanceUID"), len(frames), len(distinct))
    clone = copy.deepcopy(ds)
    for item in clone.PerFrameFunctionalGroupsSequence:
        del item.PlaneOrientationSequence
    plane = Dataset()
    plane.ImageOrientationPatient = common
    if not clone.get("SharedFunctionalGroupsSequence"):
        clone.SharedFunctionalGroupsSequence = DicomSequence([Dataset()])
    clone.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence = DicomSequence([plane])
    return clone


def _cosines(value: Any) -> npt.NDArray[np.float64]:
    cosines = np.array([float(v) for v in value], dtype=np.float64)
    if cosines.shape != (6,) or not np.all(np.isfinite(cosines)):
        raise ValueError(f"ImageOrientationPatient needs 6 finite numbers, got {value!r}")
    return cosines


def _common_orientation(orientations: list[npt.NDArray[np.float64]], where: str) -> list[str]:
    """The mean of ``orientations`` with an orthonormal row and column direction, as DS strings; ValueError
    when they spread over more than :data:`ORIENTATION_TOLERANCE`."""
    stacked = np.stack(orientations)
    spread = float(np.max(np.ptp(stacked, axis=0)))
    if spread > ORIENTATION_TOLERANCE:
        distinct = len({tuple(o.tolist()) for o in orientations})
        raise ValueError(
            f"the source images' orientations differ by up to {spread:.3g} per direction cosine "
            f"({distinct} ImageOrientationPatient values in {where}; at most {ORIENTATION_TOLERANCE:g} counts as "
            "one orientation): a tilted or mixed-orientation series has no single plane orientation for the SEG"
        )
    mean = stacked.mean(axis=0)
    row = mean[:3] / np.linalg.norm(mean[:3])
    column = mean[3:] - (mean[3:] @ row) * row
    column = column / np.linalg.norm(column)
    return [format_number_as_ds(float(v)) for v in (*row, *column)]
