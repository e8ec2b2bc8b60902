"""The result's preview image: the slide overview, the tissue outline, and a mark on every finding."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from pipelines.wsi.labels import CLASS_COLOURS_RGB
from pipelines.wsi.merge import Detection
from pipelines.wsi.tissue import TissueMask

MAX_SIDE_PX = 1024


def write_preview(target: Path, overview_rgb: np.ndarray, mask: TissueMask, detections: Sequence[Detection]) -> None:
    h, w = overview_rgb.shape[:2]
    scale = min(1.0, MAX_SIDE_PX / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = cv2.resize(overview_rgb, size, interpolation=cv2.INTER_AREA) if scale < 1 else overview_rgb.copy()
    outline = cv2.resize(mask.mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(outline, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, (0, 160, 255), 1)
    px_x = scale / mask.l0_per_px_x
    px_y = scale / mask.l0_per_px_y
    for d in detections:
        centre = (round((d.l0_x0 + d.l0_x1) / 2 * px_x), round((d.l0_y0 + d.l0_y1) / 2 * px_y))
        radius = max(3, round(max(d.l0_x1 - d.l0_x0, d.l0_y1 - d.l0_y0) / 2 * px_x) + 2)
        cv2.circle(image, centre, radius, CLASS_COLOURS_RGB[d.name], 1 if d.cls == 0 else 2)
    cv2.imwrite(str(target), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
