"""Detections as GeoJSON that QuPath imports (File → Import objects, or drag and drop onto the slide).

Coordinates are level-0 pixels with y downwards, as QuPath expects. Each detection is a rectangle
``Feature`` with ``objectType: detection``, a ``classification`` (name and RGB colour) and its confidence
as a measurement; ids are derived from the slide and the box, so the same result gives the same file.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.wsi.labels import CLASS_COLOURS_RGB
from pipelines.wsi.merge import Detection

_NAMESPACE = uuid.UUID("5b0c6a56-8f0e-4a8c-9f55-0c2b9e1f4a11")


def feature(d: Detection, slide_key: str) -> dict[str, Any]:
    x0, y0, x1, y1 = (round(v, 1) for v in (d.l0_x0, d.l0_y0, d.l0_x1, d.l0_y1))
    measurements: dict[str, float] = {"Confidence": round(d.confidence, 4)}
    if d.members:
        measurements["CTC members"] = d.members
    return {
        "type": "Feature",
        "id": str(uuid.uuid5(_NAMESPACE, f"{slide_key}|{d.cls}|{x0},{y0},{x1},{y1}")),
        "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
        "properties": {
            "objectType": "detection",
            "classification": {"name": d.name, "color": list(CLASS_COLOURS_RGB[d.name])},
            "isLocked": False,
            "measurements": measurements,
        },
    }


def feature_collection(detections: Sequence[Detection], slide_key: str) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": [feature(d, slide_key) for d in detections]}


def write_geojson(target: Path, detections: Sequence[Detection], slide_key: str) -> None:
    target.write_text(json.dumps(feature_collection(detections, slide_key)), encoding="utf-8")
