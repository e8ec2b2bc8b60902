# mypy: disable-error-code="no-untyped-call"
# (SimpleITK ships without type annotations.)
"""DICOM MR series → one SimpleITK volume in LPS patient coordinates, or an InputError that says why not.

Reads classic single-frame series and Enhanced MR multi-frame objects alike: every frame becomes a plane with
its position, orientation, pixel spacing and rescale. Planes are ordered along the slice normal (the cross
product of the ImageOrientationPatient row and column directions) by their ImagePositionPatient, never by
file name or InstanceNumber. The stack must be a regular grid: one orientation, one image size, one pixel
spacing, one image per position, evenly spaced positions stacked along the normal. Anything else
(localizers, projections, mixed orientations, repeated, missing or uneven slices, a single slice, non-MR
objects) is refused with the reason instead of being guessed into a wrong volume.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pipelines.errors import InputError

log = logging.getLogger(__name__)

ORIENTATION_TOLERANCE = 1e-3  # per direction-cosine component
REPEAT_TOLERANCE_MM = 0.01
LOCALIZER_DESCRIPTION = re.compile(r"\b(locali[sz]er|scout|survey|3[- ]?plane)\b", re.IGNORECASE)
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SeriesVolume:
    """A series as one volume: float32 values after rescale, spacing in mm, LPS origin and direction."""

    image: sitk.Image
    study_uid: str | None
    series_uid: str | None
    instances: int
    slice_spacing_mm: float
    orientation: tuple[float, ...]  # ImageOrientationPatient of the stack
    series_description: str
    manufacturer: str
    warnings: tuple[str, ...] = ()

    @property
    def slices(self) -> int:
        return int(self.image.GetSize()[2])

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        sx, sy, sz = self.image.GetSpacing()
        return (float(sx), float(sy), float(sz))

    def as_dict(self) -> dict[str, Any]:
        return {
            "size_voxels": [int(v) for v in self.image.GetSize()],
            "spacing_mm": [round(v, 4) for v in self.spacing_mm],
            "origin_lps_mm": [round(float(v), 3) for v in self.image.GetOrigin()],
            "orientation": [round(v, 5) for v in self.orientation],
            "instances": self.instances,
            "slices": self.slices,
            "series_description": self.series_description,
            "manufacturer": self.manufacturer,
        }


@dataclass(frozen=True)
class _Plane:
    """One image of the series: a single-frame instance or one frame of a multi-frame instance."""

    source: str  # file name, with the frame number for multi-frame instances
    position: FloatArray  # ImagePositionPatient (mm)
    orientation: FloatArray  # ImageOrientationPatient (6)
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm
    rows: int
    columns: int
    slope: float
    intercept: float
    pixels: Callable[[], npt.NDArray[Any]]


def load_series(paths: Sequence[Path]) -> SeriesVolume:
    """The volume of the MR series in ``paths`` (one series), or InputError with the reason."""
    if not paths:
        raise InputError("the series has no files")
    datasets = _read_all(paths)
    first = datasets[0][1]
    _check_series_level(datasets)
    planes: list[_Plane] = []
    for path, ds in datasets:
        planes.extend(_planes_of(path, ds))
    if len(planes) < 2:
        raise InputError(
            f"single-slice series ({len(planes)} image): a volume needs at least 2 parallel slices"
        )
    ordered, spacing, warnings = _stack(planes)
    volume = _assemble(ordered)
    image = _to_image(volume, ordered[0], spacing)
    warnings += _thickness_warning(first, spacing)
    result = SeriesVolume(
        image=image,
        study_uid=_str(first.get("StudyInstanceUID")) or None,
        series_uid=_str(first.get("SeriesInstanceUID")) or None,
        instances=len(datasets),
        slice_spacing_mm=spacing,
        orientation=tuple(float(v) for v in ordered[0].orientation),
        series_description=_str(first.get("SeriesDescription")),
        manufacturer=_str(first.get("Manufacturer")),
        warnings=tuple(warnings),
    )
    log.info(
        "series %s: %d instance(s) -> volume %s at %s mm",
        result.series_uid, result.instances, "x".join(map(str, image.GetSize())),
        "x".join(f"{v:.3g}" for v in result.spacing_mm),
    )
    return result


# ----------------------------------------------------------------------------------------- reading


def _read_all(paths: Sequence[Path]) -> list[tuple[Path, Dataset]]:
    datasets: list[tuple[Path, Dataset]] = []
    seen: set[str] = set()
    for path in sorted(paths):
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, ValueError, EOFError, OSError, TypeError, KeyError) as exc:
            raise InputError(f"{path.name}: not a readable DICOM file ({exc})") from exc
        uid = _str(ds.get("SOPInstanceUID"))
        if uid and uid in seen:
            log.warning("duplicate instance %s (%s) ignored", uid, path.name)
            continue
        seen.add(uid)
        datasets.append((path, ds))
    return datasets


def _check_series_level(datasets: list[tuple[Path, Dataset]]) -> None:
    modalities = sorted({_str(ds.get("Modality")) or "(none)" for _, ds in datasets})
    if modalities != ["MR"]:
        raise InputError(f"modality {'/'.join(modalities)}: this pipeline reads MR series only")
    series = {_str(ds.get("SeriesInstanceUID")) for _, ds in datasets}
    if len(series) > 1:
        raise InputError(f"the files belong to {len(series)} different series; one series is one input")
    for path, ds in datasets:
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            sop = getattr(ds.get("SOPClassUID"), "name", "unknown SOP class")
            raise InputError(f"{path.name}: no pixel data ({sop}), not an image")
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise InputError(f"{path.name}: colour image (SamplesPerPixel {ds.SamplesPerPixel}); MR volumes are "
                             "greyscale")
        image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
        if "LOCALIZER" in image_type:
            raise InputError(f"{path.name}: a localizer (ImageType {_show(image_type)}), not a diagnostic volume")
        if "PROJECTION IMAGE" in image_type:
            raise InputError(
                f"{path.name}: projection images (ImageType {_show(image_type)}, e.g. MIP or radial "
                "projections), not a volume of parallel slices"
            )
        description = _str(ds.get("SeriesDescription"))
        if LOCALIZER_DESCRIPTION.search(description):
            raise InputError(f"series description {description!r} names a localizer/scout, not a diagnostic volume")


def _planes_of(path: Path, ds: Dataset) -> list[_Plane]:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds or frames > 1:
        return _enhanced_planes(path, ds, frames)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if not ds.get(keyword):
            raise InputError(f"{path.name}: no {keyword}; the slice cannot be placed in the patient")
    return [
        _Plane(
            source=path.name,
            position=_floats(ds.ImagePositionPatient, 3, path.name, "ImagePositionPatient"),
            orientation=_floats(ds.ImageOrientationPatient, 6, path.name, "ImageOrientationPatient"),
            pixel_spacing=_spacing(ds.PixelSpacing, path.name),
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            slope=float(ds.get("RescaleSlope", 1) or 1),
            intercept=float(ds.get("RescaleIntercept", 0) or 0),
            pixels=_decoder(path, ds, None),
        )
    ]


def _enhanced_planes(path: Path, ds: Dataset, frames: int) -> list[_Plane]:
    shared = ds.SharedFunctionalGroupsSequence[0] if ds.get("SharedFunctionalGroupsSequence") else Dataset()
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    if len(per_frame) != frames:
        raise InputError(
            f"{path.name}: multi-frame object with {frames} frame(s) but {len(per_frame)} per-frame functional "
            "group item(s): the frames' positions (PlanePositionSequence) are unknown"
        )
    decode = _decoder(path, ds, frames)
    planes = []
    for index, item in enumerate(per_frame):
        where = f"{path.name} frame {index + 1}"

        def lookup(sequence: str, keyword: str, item: Dataset = item) -> Any:
            for group in (item, shared):
                seq = group.get(sequence)
                if seq and keyword in seq[0]:
                    return seq[0].get(keyword)
            return None

        position = lookup("PlanePositionSequence", "ImagePositionPatient")
        orientation = lookup("PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = lookup("PixelMeasuresSequence", "PixelSpacing")
        for name, value in (("ImagePositionPatient (PlanePositionSequence)", position),
                            ("ImageOrientationPatient (PlaneOrientationSequence)", orientation),
                            ("PixelSpacing (PixelMeasuresSequence)", spacing)):
            if value is None:
                raise InputError(f"{where}: no {name} in the functional groups; the frame cannot be placed")
        slope = lookup("PixelValueTransformationSequence", "RescaleSlope")
        intercept = lookup("PixelValueTransformationSequence", "RescaleIntercept")
        planes.append(
            _Plane(
                source=where,
                position=_floats(position, 3, where, "ImagePositionPatient"),
                orientation=_floats(orientation, 6, where, "ImageOrientationPatient"),
                pixel_spacing=_spacing(spacing, where),
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                slope=float(slope if slope is not None else ds.get("RescaleSlope", 1) or 1),
                intercept=float(intercept if intercept is not None else ds.get("RescaleIntercept", 0) or 0),
                pixels=_frame_getter(decode, index),
            )
        )
    return planes


def _decoder(path: Path, ds: Dataset, frames: int | None) -> Callable[[], npt.NDArray[Any]]:
    cache: dict[str, npt.NDArray[Any]] = {}

    def decode() -> npt.NDArray[Any]:
        if "pixels" not in cache:
            try:
                pixels = np.asarray(ds.pixel_array)
            except (ValueError, RuntimeError, NotImplementedError, AttributeError, TypeError, EOFError) as exc:
                syntax = getattr(ds.file_meta.get("TransferSyntaxUID"), "name", "unknown transfer syntax")
                raise InputError(f"{path.name}: pixel data cannot be decoded ({syntax}): {exc}") from exc
            if frames is not None and pixels.ndim == 2:
                pixels = pixels[None]
            cache["pixels"] = pixels
        return cache["pixels"]

    return decode


def _frame_getter(decode: Callable[[], npt.NDArray[Any]], index: int) -> Callable[[], npt.NDArray[Any]]:
    return lambda: decode()[index]


# ----------------------------------------------------------------------------------------- geometry


def _stack(planes: list[_Plane]) -> tuple[list[_Plane], float, list[str]]:
    """Planes in order along the normal and their spacing, after checking that they form a regular grid."""
    warnings: list[str] = []
    sizes = sorted({(p.rows, p.columns) for p in planes})
    if len(sizes) > 1:
        raise InputError("image sizes differ within the series: " + ", ".join(f"{r}x{c}" for r, c in sizes))
    reference = planes[0].orientation
    orientations = _distinct([p.orientation for p in planes], ORIENTATION_TOLERANCE)
    if len(orientations) > 1:
        raise InputError(
            f"mixed orientations: {len(orientations)} different ImageOrientationPatient values in "
            f"{len(planes)} images (a localizer, multi-planar or radial series); one stack has one orientation"
        )
    spacings = _distinct([np.array(p.pixel_spacing) for p in planes], 1e-4)
    if len(spacings) > 1:
        raise InputError("pixel spacing differs within the series: "
                         + ", ".join("x".join(f"{v:g}" for v in s) for s in spacings))
    row_dir, col_dir, normal = _axes(reference, planes[0].source)
    distance = np.array([float(p.position @ normal) for p in planes])
    order = np.argsort(distance, kind="stable")
    ordered = [planes[i] for i in order]
    along = distance[order]
    gaps = np.diff(along)
    positions = len(np.unique(np.round(along / REPEAT_TOLERANCE_MM)))
    if np.any(gaps < REPEAT_TOLERANCE_MM):
        raise InputError(
            f"repeated slice positions: {len(planes)} images at {positions} position(s) along the slice normal "
            "(several images per location, e.g. diffusion directions/b-values, echoes or dynamic phases); "
            "this pipeline needs one image per position"
        )
    offsets = [p.position - ordered[0].position for p in ordered]
    in_plane = max(max(abs(float(o @ row_dir)), abs(float(o @ col_dir))) for o in offsets)
    if in_plane > 0.5 * min(ordered[0].pixel_spacing):
        raise InputError(
            f"slices are not stacked along their normal: positions shift in-plane by up to {in_plane:.2f} mm "
            "(sheared or tilted stack)"
        )
    spacing = float(np.median(gaps))
    tolerance = max(0.02 * spacing, 0.02)
    if np.any(gaps > 1.5 * spacing):
        worst = int(np.argmax(gaps))
        missing = round(float(gaps[worst]) / spacing) - 1
        raise InputError(
            f"missing slice(s): a gap of {gaps[worst]:.2f} mm between {ordered[worst].source} and "
            f"{ordered[worst + 1].source} where the series spacing is {spacing:.2f} mm "
            f"(about {max(missing, 1)} slice(s) absent)"
        )
    if float(np.ptp(gaps)) > tolerance:
        raise InputError(
            f"uneven slice spacing: gaps from {gaps.min():.3f} to {gaps.max():.3f} mm along the slice normal"
        )
    return ordered, spacing, warnings


def _axes(orientation: FloatArray, where: str) -> tuple[FloatArray, FloatArray, FloatArray]:
    row, col = orientation[:3], orientation[3:]
    row_norm, col_norm = float(np.linalg.norm(row)), float(np.linalg.norm(col))
    if abs(row_norm - 1) > 0.01 or abs(col_norm - 1) > 0.01 or abs(float(row @ col)) > 0.01:
        raise InputError(f"{where}: ImageOrientationPatient {_show(orientation)} is not two orthogonal unit vectors")
    row = row / row_norm
    col = col - (col @ row) * row
    col = col / float(np.linalg.norm(col))
    return row, col, np.cross(row, col)


def _assemble(planes: list[_Plane]) -> npt.NDArray[np.float32]:
    volume = np.empty((len(planes), planes[0].rows, planes[0].columns), dtype=np.float32)
    for k, plane in enumerate(planes):
        pixels = plane.pixels()
        if pixels.shape != (plane.rows, plane.columns):
            raise InputError(f"{plane.source}: pixel data is {pixels.shape}, the header says "
                             f"{plane.rows}x{plane.columns}")
        volume[k] = pixels.astype(np.float64) * plane.slope + plane.intercept
    return volume


def _to_image(volume: npt.NDArray[np.float32], first: _Plane, spacing: float) -> sitk.Image:
    row, col, normal = _axes(first.orientation, first.source)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((first.pixel_spacing[1], first.pixel_spacing[0], spacing))
    image.SetOrigin(tuple(float(v) for v in first.position))
    # SimpleITK's direction is row-major; column j is the direction of index axis j (x: columns, y: rows)
    matrix = np.column_stack([row, col, normal])
    image.SetDirection(tuple(float(v) for v in matrix.ravel()))
    return image


def _thickness_warning(ds: Dataset, spacing: float) -> list[str]:
    thickness = ds.get("SliceThickness")
    if thickness in (None, ""):
        return []
    try:
        value = float(thickness)
    except (TypeError, ValueError):
        return []
    if value > 0 and abs(value - spacing) > max(0.1 * spacing, 0.05):
        return [f"slice thickness {value:g} mm differs from the slice spacing {spacing:.3g} mm (gaps or overlap)"]
    return []


# ----------------------------------------------------------------------------------------- values


def _floats(value: Any, count: int, where: str, keyword: str) -> FloatArray:
    try:
        out = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {keyword} is not numeric ({value!r})") from exc
    if out.shape != (count,) or not np.all(np.isfinite(out)):
        raise InputError(f"{where}: {keyword} needs {count} finite numbers, got {value!r}")
    return out


def _spacing(value: Any, where: str) -> tuple[float, float]:
    values = _floats(value, 2, where, "PixelSpacing")
    if np.any(values <= 0):
        raise InputError(f"{where}: PixelSpacing {_show(values)} is not positive")
    return (float(values[0]), float(values[1]))


def _distinct(vectors: list[FloatArray], tolerance: float) -> list[FloatArray]:
    found: list[FloatArray] = []
    for v in vectors:
        if not any(np.max(np.abs(v - f)) <= tolerance for f in found):
            found.append(v)
    return found


def _str(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _show(values: Any) -> str:
    return "\\".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
