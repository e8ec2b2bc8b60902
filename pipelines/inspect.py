"""``inspect``: what an input is, before any model sees it.

For a DICOM series: modality, SOP class, instance and frame counts, matrix, pixel spacing, slice geometry
(order along the slice normal, spacing regularity, orientation consistency) and transfer syntaxes, plus a
PNG preview of the middle image. For a slide: format, level-0 size, pyramid levels, resolution in µm/px,
objective power, plus a thumbnail. Fails with an InputError on files that cannot be read.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError

from pipelines.base import PipelineInput, PipelineResult
from pipelines.errors import InputError
from pipelines.wsi.resolution import declared_mpp, is_plausible

PREVIEW = "preview.png"
THUMB_SIZE = (512, 512)


class InspectPipeline:
    name: ClassVar[str] = "inspect"
    version: ClassVar[str] = "1.0.0"

    def run(self, inp: PipelineInput, out_dir: Path) -> PipelineResult:
        if not inp.paths:
            raise InputError("input has no files")
        if inp.kind == "slide":
            return _inspect_slide(inp.paths[0], out_dir)
        return _inspect_series(inp.paths, out_dir)


def _inspect_slide(path: Path, out_dir: Path) -> PipelineResult:
    import openslide

    try:
        slide = openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, OSError) as exc:
        raise InputError(f"cannot open slide {path.name}: {exc}") from exc
    with slide:
        props = slide.properties
        warnings = []
        declared = declared_mpp(props)
        mpp_um = list(declared) if declared and is_plausible(declared) else None
        if declared is None:
            warnings.append("slide declares no resolution (µm/px)")
        elif mpp_um is None:
            warnings.append(f"implausible declared resolution {declared[0]:.4g} µm/px (a screen-dpi default?)")
        width, height = slide.dimensions
        summary: dict[str, Any] = {
            "format": slide.detect_format(str(path)),
            "vendor": props.get(openslide.PROPERTY_NAME_VENDOR),
            "width_px": width,
            "height_px": height,
            "levels": [
                {"width": w, "height": h, "downsample": round(d, 4)}
                for (w, h), d in zip(slide.level_dimensions, slide.level_downsamples, strict=True)
            ],
            "mpp_um": mpp_um,
            "objective_power": props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER),
            "associated_images": sorted(slide.associated_images),
        }
        if mpp_um:
            summary["area_mm2"] = round(width * mpp_um[0] * height * mpp_um[1] / 1e6, 3)
        try:
            slide.get_thumbnail(THUMB_SIZE).convert("RGB").save(out_dir / PREVIEW)
        except openslide.OpenSlideError as exc:
            raise InputError(f"slide {path.name} cannot be decoded: {exc}") from exc
    return PipelineResult(summary=summary, files=(PREVIEW,), warnings=tuple(warnings))


def _inspect_series(paths: tuple[Path, ...], out_dir: Path) -> PipelineResult:
    headers = []
    for path in paths:
        try:
            headers.append((path, pydicom.dcmread(path, stop_before_pixels=True)))
        except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
            raise InputError(f"unreadable DICOM instance {path.name}: {exc}") from exc
    first = headers[0][1]
    warnings: list[str] = []
    frames = sum(int(ds.get("NumberOfFrames", 1) or 1) for _, ds in headers)
    summary: dict[str, Any] = {
        "modality": first.get("Modality"),
        "sop_class": first.SOPClassUID.name if "SOPClassUID" in first else None,
        "instances": len(headers),
        "frames": frames,
        "rows": first.get("Rows"),
        "columns": first.get("Columns"),
        "pixel_spacing_mm": [float(v) for v in first.PixelSpacing] if "PixelSpacing" in first else None,
        "transfer_syntaxes": sorted(Counter(str(ds.file_meta.TransferSyntaxUID.name) for _, ds in headers)),
        "manufacturer": first.get("Manufacturer"),
        "series_description": first.get("SeriesDescription"),
    }
    geometry = _slice_geometry([ds for _, ds in headers])
    summary["geometry"] = geometry
    warnings += geometry.pop("warnings")
    middle_path = headers[len(headers) // 2][0]
    if geometry.get("order"):
        middle_path = headers[geometry["order"][len(headers) // 2]][0]
    geometry.pop("order", None)
    files: tuple[str, ...] = ()
    try:
        _save_preview(pydicom.dcmread(middle_path), out_dir / PREVIEW)
        files = (PREVIEW,)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError) as exc:
        warnings.append(f"no preview: pixel data cannot be decoded ({exc})")
    return PipelineResult(summary=summary, files=files, warnings=tuple(warnings))


def _slice_geometry(datasets: list[Any]) -> dict[str, Any]:
    """Slice order and spacing along the normal of ImageOrientationPatient; inconsistencies as warnings."""
    out: dict[str, Any] = {"warnings": []}
    with_geometry = [ds for ds in datasets if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds]
    if len(with_geometry) != len(datasets) or len(datasets) < 2:
        if len(datasets) >= 2:
            out["warnings"].append("some instances lack ImagePositionPatient/ImageOrientationPatient")
        return out
    orientations = {tuple(round(float(v), 4) for v in ds.ImageOrientationPatient) for ds in datasets}
    if len(orientations) > 1:
        out["warnings"].append(f"{len(orientations)} different image orientations in one series")
    iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets]) @ normal
    order = np.argsort(positions)
    gaps = np.diff(positions[order])
    out["order"] = [int(i) for i in order]
    out["slice_positions"] = len(np.unique(np.round(positions, 3)))
    if gaps.size:
        out["slice_spacing_mm"] = round(float(np.median(gaps)), 4)
        if np.any(gaps < 1e-3):
            out["warnings"].append("repeated slice positions (several images per location)")
        elif np.ptp(gaps) > 0.01 * max(float(np.median(gaps)), 1e-6) + 1e-3:
            out["warnings"].append(f"uneven slice spacing ({gaps.min():.3f}–{gaps.max():.3f} mm)")
    return out


def _save_preview(ds: Any, target: Path) -> None:
    pixels = ds.pixel_array
    if pixels.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1:
        pixels = pixels[pixels.shape[0] // 2]
    arr = pixels.astype(np.float32)
    if arr.ndim == 2:
        lo, hi = np.percentile(arr, [1, 99])
        arr = np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    Image.fromarray(arr.astype(np.uint8)).save(target)
