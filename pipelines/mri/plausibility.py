"""Whether a segmented "lesion" can be a solid lesion at all, by its shape and its T2 signal.

Two findings the classifier must not be asked to call malignant:

- a thin sheet: its longest diameter is far beyond what its volume allows a compact lesion (the bright edge of
  an object segmented along its surface: 5 mL spread over 200 mm). The measure is the longest diameter over
  the diameter of a sphere of the same volume; generated training lesions, lobulated and spiculated ones
  included, stay below 1.7 (164 lesions of seeds 0..79), an elongated real lesion below about 2.5;
- fluid: on a T2-weighted series, a homogeneous region several times brighter than what surrounds it (a
  cyst, the gallbladder, the bladder). The measure is the median inside (eroded by a voxel) over the median of
  a ring one to three voxels outside; generated lesions stay below 3.1 (the same 164), fluid is four to
  eight times the liver at an echo time of 60-100 ms.

Flagged lesions keep their measurements and their classifier output for the record, but are reported for
review, not as a malignancy (see ``mri-tumour``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

IMPLAUSIBLE = "implausible — review"
"""The label of a lesion whose shape or signal says it is no solid lesion."""
SHEET_RATIO = 3.0
FLUID_CONTRAST = 4.0
FLUID_VARIATION = 0.12  # coefficient of variation inside, at most
RING_VOXELS = (1, 3)


@dataclass(frozen=True)
class Shape:
    volume_ml: float
    longest_diameter_mm: float

    @property
    def compact_diameter_mm(self) -> float:
        """Diameter of a sphere of the same volume."""
        return float((6.0 * self.volume_ml * 1000.0 / math.pi) ** (1.0 / 3.0))


def sheet_reason(shape: Shape) -> str | None:
    compact = shape.compact_diameter_mm
    if compact <= 0 or shape.longest_diameter_mm <= SHEET_RATIO * compact:
        return None
    return (f"sheet-like shape: longest diameter {shape.longest_diameter_mm:.0f} mm where a compact lesion of "
            f"{shape.volume_ml:.1f} mL spans about {compact:.0f} mm (ratio "
            f"{shape.longest_diameter_mm / compact:.1f}, over {SHEET_RATIO:g})")


def fluid_reason(values: npt.NDArray[Any], inside: npt.NDArray[np.bool_],
                 others: npt.NDArray[np.bool_] | None = None) -> str | None:
    """``values`` and the lesion's mask ``inside`` on one grid (a crop with a margin of at least
    ``RING_VOXELS[1]`` voxels around the lesion will do); ``others`` (other lesions) are left out of the ring."""
    core = ndimage.binary_erosion(inside)
    if int(core.sum()) < 10:
        core = inside
    ring = ndimage.binary_dilation(inside, iterations=RING_VOXELS[1]) & ~ndimage.binary_dilation(
        inside, iterations=RING_VOXELS[0])
    if others is not None:
        ring &= ~others
    if int(core.sum()) < 2 or int(ring.sum()) < 2:
        return None
    signal = values[core].astype(np.float64)
    around = float(np.median(values[ring]))
    mean = float(signal.mean())
    if around <= 0 or mean <= 0:
        return None
    contrast = float(np.median(signal)) / around
    variation = float(signal.std()) / mean
    if contrast < FLUID_CONTRAST or variation > FLUID_VARIATION:
        return None
    return (f"fluid-like T2 signal: {contrast:.1f} times as bright as its surroundings and homogeneous "
            f"(variation {100 * variation:.0f} %), as a cyst, the gallbladder or the bladder")


def lesion_reasons(shape: Shape, values: npt.NDArray[Any], labels: npt.NDArray[Any], label: int,
                   bbox_index: tuple[int, int, int, int, int, int]) -> list[str]:
    """Every reason lesion ``label`` of the label map ``labels`` ((z, y, x) like ``values``) is implausible;
    ``bbox_index`` is its box (x, y, z start, then size)."""
    x, y, z, sx, sy, sz = bbox_index
    m = RING_VOXELS[1] + 1
    box = (slice(max(z - m, 0), z + sz + m), slice(max(y - m, 0), y + sy + m), slice(max(x - m, 0), x + sx + m))
    crop_labels = labels[box]
    inside = crop_labels == label
    reasons = [sheet_reason(shape), fluid_reason(values[box], inside, (crop_labels > 0) & ~inside)]
    return [r for r in reasons if r is not None]


def mark_implausible(item: dict[str, Any], reasons: list[str]) -> None:
    """Record ``reasons`` in a result's lesion item; a flagged lesion's classifier output is kept for the record
    (``classifier_probability``) but not reported: no malignancy probability, the label :data:`IMPLAUSIBLE`."""
    item["plausibility"] = list(reasons)
    if reasons:
        item["classifier_probability"] = item.get("malignancy_probability")
        item["malignancy_probability"] = None
        item["label"] = IMPLAUSIBLE


def implausible_labels(values: npt.NDArray[Any], segmentation: Any) -> set[int]:
    """Labels of ``segmentation``'s lesions (a :class:`~pipelines.mri.segmentation.Segmentation` on the grid of
    the (z, y, x) array ``values``) that the check flags: the pipeline reports no malignancy for them."""
    import SimpleITK as sitk

    labels = sitk.GetArrayViewFromImage(segmentation.labels)
    return {
        lesion.label for lesion in segmentation.lesions
        if lesion_reasons(Shape(lesion.volume_ml, lesion.longest_diameter_mm), values, labels, lesion.label,
                          lesion.bbox_index)
    }
