# mypy: disable-error-code="no-untyped-call"
# (SimpleITK ships without type annotations.)
"""Reading what the figures and the SEG show: the slide (openslide) and the MR volume and label map.

The I/O edge of the report: everything here opens files and returns arrays and dataclasses for
:mod:`reports.figures` and :mod:`reports.seg`. The slide's tissue outline comes from the pipeline's own
tissue detector (:func:`pipelines.wsi.tissue.tissue_mask`) run on the overview, and the MR volume from the
pipeline's series loader (:func:`pipelines.mri.volume.load_series`), so the figures show what was analysed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import openslide
import SimpleITK as sitk

from reports.figures import Crop, KeySlice, SlideView
from reports.findings import Detection, Lesion
from reports.seg import LabelVolume

log = logging.getLogger(__name__)

OVERVIEW_MAX_PX = 1400
CROP_MIN_L0_PX = 64
CROP_OUTPUT_PX = 192
CROP_CONTEXT = 2.5  # crop side / box side


def slide_file(paths: Sequence[Path]) -> Path:
    """The file openslide reads: the slide, or for a DICOM series one instance it recognises."""
    if len(paths) == 1:
        return paths[0]
    for path in sorted(paths):
        if openslide.OpenSlide.detect_format(str(path)) is not None:
            return path
    raise ValueError(f"none of the {len(paths)} files is a slide openslide reads")


def _rgb(image: object) -> npt.NDArray[np.uint8]:
    from PIL import Image

    assert isinstance(image, Image.Image)
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_slide_view(paths: Sequence[Path], mpp_um: tuple[float, float] | None, with_tissue: bool = True
                    ) -> SlideView:
    """The slide's overview (at most ``OVERVIEW_MAX_PX`` a side) with its tissue mask."""
    path = slide_file(paths)
    with openslide.OpenSlide(str(path)) as slide:
        w0, h0 = slide.dimensions
        rgb = _rgb(slide.get_thumbnail((OVERVIEW_MAX_PX, OVERVIEW_MAX_PX)))
    h, w = rgb.shape[:2]
    l0_per_px = (w0 / w, h0 / h)
    tissue = None
    if with_tissue and mpp_um is not None:
        from pipelines.wsi.tissue import tissue_mask

        overview_mpp = mpp_um[0] * l0_per_px[0]
        tissue = tissue_mask(rgb, overview_mpp, l0_per_px).mask.astype(bool)
    return SlideView(rgb, l0_per_px, tissue, mpp_um)


def read_crops(paths: Sequence[Path], detections: Sequence[Detection]) -> list[Crop]:
    """A square level-0 crop around each detection (its box with context), resized for the report."""
    from PIL import Image

    path = slide_file(paths)
    crops = []
    with openslide.OpenSlide(str(path)) as slide:
        w0, h0 = slide.dimensions
        for d in detections:
            side = max(CROP_MIN_L0_PX, CROP_CONTEXT * max(d.l0_x1 - d.l0_x0, d.l0_y1 - d.l0_y0))
            cx, cy = d.l0_centre
            x0 = int(min(max(cx - side / 2, 0), max(w0 - side, 0)))
            y0 = int(min(max(cy - side / 2, 0), max(h0 - side, 0)))
            size = (int(min(side, w0)), int(min(side, h0)))
            region = slide.read_region((x0, y0), 0, size)
            rgb = _rgb(region)
            scale = min(1.0, CROP_OUTPUT_PX / max(size))  # large clusters are shown smaller
            if scale < 1.0:
                rgb = np.asarray(Image.fromarray(rgb).resize((round(size[0] * scale), round(size[1] * scale))))
            box = ((d.l0_x0 - x0) * scale, (d.l0_y0 - y0) * scale, (d.l0_x1 - x0) * scale, (d.l0_y1 - y0) * scale)
            crops.append(Crop(rgb, d, box))
    return crops


def read_label_volume(path: Path) -> tuple[LabelVolume, sitk.Image]:
    """The pipeline's label map (NIfTI; SimpleITK gives it in LPS) as array + affine, and the image."""
    image = sitk.ReadImage(str(path))
    labels = sitk.GetArrayFromImage(image)  # (slices, rows, columns)
    volume = LabelVolume.from_geometry(labels, image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return volume, image


def key_slices(paths: Sequence[Path], labels: sitk.Image, lesions: Sequence[Lesion], limit: int = 4
               ) -> list[KeySlice]:
    """For the ``limit`` largest lesions, the slice with the most of the lesion, from the MR volume
    resampled onto the label map's grid (the same grid when both come from the pipeline)."""
    from pipelines.mri.volume import load_series

    volume = load_series(paths).image
    if volume.GetSize() != labels.GetSize() or not np.allclose(volume.GetOrigin(), labels.GetOrigin(), atol=1e-3):
        volume = sitk.Resample(volume, labels, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    image = sitk.GetArrayFromImage(volume)
    label_array = sitk.GetArrayFromImage(labels)
    sx, sy = labels.GetSpacing()[:2]
    chosen = sorted(lesions, key=lambda les: -les.volume_ml)[:limit]
    slices = []
    for lesion in sorted(chosen, key=lambda les: les.index):
        per_slice = (label_array == lesion.index).sum(axis=(1, 2))
        if not per_slice.any():
            continue
        k = int(np.argmax(per_slice))
        slices.append(KeySlice(image[k].astype(np.float32), label_array[k], lesion.index, k, float(sy / sx)))
    return slices
