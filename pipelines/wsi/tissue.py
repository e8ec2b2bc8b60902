"""Where the slide holds tissue (or, for cytology, the cell smear): a mask on a coarse overview.

The overview is read at a few µm per pixel (never level 0). Methods:

* ``brightfield``: stained material absorbs light: a score from darkness against the glass brightness and
  colour saturation, smoothed, thresholded with Otsu's method above a noise floor.
* ``fluorescence``: material emits light on a dark background: the brightest channel above the background
  level, smoothed, thresholded likewise.
* ``auto``: fluorescence when the overview is mostly dark, brightfield otherwise.
* ``none``: the whole slide counts as tissue.

The mask is closed and its holes filled (a smear is sparse at this scale), specks are dropped, and for
tiling it is widened by a margin so that cells at the edge of the smear are never left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

TissueMethod = Literal["auto", "brightfield", "fluorescence", "none"]
Modality = Literal["brightfield", "fluorescence"]

SMOOTH_UM = 40.0  # smoothing before the threshold
CLOSE_UM = 120.0  # gaps between cells of a sparse smear that still count as one region
MIN_REGION_MM2 = 0.005  # components smaller than this are specks, not tissue
BRIGHTFIELD_FLOOR = 0.02  # least score (absorbance-like) that can be tissue
FLUORESCENCE_FLOOR = 4.0  # least brightness above background that can be tissue (8-bit levels)
DARK_BACKGROUND = 60.0  # an overview whose median is darker than this is a fluorescence image


@dataclass(frozen=True)
class TissueMask:
    """A boolean mask over the slide; one mask pixel covers ``l0_per_px`` level-0 pixels."""

    mask: np.ndarray  # bool (h, w)
    l0_per_px_x: float
    l0_per_px_y: float
    mpp_um: float  # µm per mask pixel
    modality: Modality
    method: TissueMethod

    def area_mm2(self) -> float:
        return float(self.mask.sum()) * (self.mpp_um / 1000) ** 2

    def widened(self, margin_um: float) -> TissueMask:
        radius = math.ceil(margin_um / self.mpp_um)
        if radius <= 0 or not self.mask.any():
            return self
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        grown = cv2.dilate(self.mask.astype(np.uint8), kernel) > 0
        return TissueMask(grown, self.l0_per_px_x, self.l0_per_px_y, self.mpp_um, self.modality, self.method)

    def coverage(self, l0_x0: float, l0_y0: float, l0_x1: float, l0_y1: float) -> float:
        """Share of the level-0 rectangle that the mask covers (0 where it lies outside the slide)."""
        h, w = self.mask.shape
        x0 = max(int(l0_x0 / self.l0_per_px_x), 0)
        y0 = max(int(l0_y0 / self.l0_per_px_y), 0)
        x1 = min(math.ceil(l0_x1 / self.l0_per_px_x), w)
        y1 = min(math.ceil(l0_y1 / self.l0_per_px_y), h)
        if x0 >= x1 or y0 >= y1:
            return 0.0
        return float(self.mask[y0:y1, x0:x1].mean())


def detect_modality(overview_rgb: np.ndarray) -> Modality:
    return "fluorescence" if float(np.median(overview_rgb.max(axis=2))) < DARK_BACKGROUND else "brightfield"


def tissue_mask(
    overview_rgb: np.ndarray, mpp_um: float, l0_per_px: tuple[float, float], method: TissueMethod = "auto"
) -> TissueMask:
    """The tissue mask of an overview image taken at ``mpp_um`` per pixel."""
    modality: Modality = detect_modality(overview_rgb)
    if method == "brightfield" or method == "fluorescence":  # noqa: PLR1714 (narrows the type)
        modality = method
    if method == "none":
        mask = np.ones(overview_rgb.shape[:2], bool)
    else:
        score, floor = (_brightfield_score(overview_rgb), BRIGHTFIELD_FLOOR) if modality == "brightfield" else (
            _fluorescence_score(overview_rgb), FLUORESCENCE_FLOOR
        )
        mask = _threshold(score, floor, mpp_um)
    return TissueMask(mask, l0_per_px[0], l0_per_px[1], mpp_um, modality, method)


def _brightfield_score(rgb: np.ndarray) -> np.ndarray:
    grey = rgb.astype(np.float32).mean(axis=2)
    saturation = (rgb.max(axis=2).astype(np.float32) - rgb.min(axis=2)) / 255
    glass = grey >= np.percentile(grey, 90)  # the brightest pixels: bare glass where there is any
    glass_grey = max(float(np.median(grey[glass])), 1.0)
    glass_saturation = float(np.median(saturation[glass]))
    darkness = np.clip(1 - grey / glass_grey, 0, 1)
    out: np.ndarray = np.maximum(darkness, np.clip(saturation - glass_saturation, 0, 1))
    return out


def _fluorescence_score(rgb: np.ndarray) -> np.ndarray:
    bright = rgb.max(axis=2).astype(np.float32)
    background = float(np.percentile(bright, 5))
    out: np.ndarray = np.clip(bright - background, 0, None)
    return out


def _threshold(score: np.ndarray, floor: float, mpp_um: float) -> np.ndarray:
    sigma = max(SMOOTH_UM / mpp_um, 0.5)
    smooth = cv2.GaussianBlur(score.astype(np.float32), (0, 0), sigma)
    top = float(smooth.max())
    if top <= floor:
        return np.zeros(score.shape, bool)
    scaled = np.clip(smooth / top * 255, 0, 255).astype(np.uint8)
    otsu, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    level = max(otsu / 255 * top, floor)
    mask = (smooth > level).astype(np.uint8)
    radius = max(1, round(CLOSE_UM / mpp_um / 2))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    pad = radius + 1
    padded = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)[pad:-pad, pad:-pad]
    filled = _fill_holes(closed)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(filled, connectivity=8)
    min_px = MIN_REGION_MM2 / (mpp_um / 1000) ** 2
    keep = np.zeros(count, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
    out: np.ndarray = keep[labels]
    return out


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    flood = np.zeros((h + 2, w + 2), np.uint8)
    flood[1:-1, 1:-1] = mask
    reach = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(flood, reach, (0, 0), 2)
    out: np.ndarray = (flood[1:-1, 1:-1] != 2).astype(np.uint8)
    return out
