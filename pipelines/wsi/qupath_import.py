"""CTC/CTM ground truth from QuPath: the GeoJSON a pathologist exports beside each slide.

A slide ``<stem>.<ext>`` is annotated by ``<stem>.geojson`` (or ``<name>.geojson``) beside it: what QuPath's
*File → Export objects as GeoJSON* writes — a ``FeatureCollection``, or a bare list of ``Feature`` objects.
Each feature classified ``CTC`` or ``CTM`` (``properties.classification.name``, any case) is one object:

* ``Polygon``: its outer ring is the outline (a drawn cell, a rectangle, a cluster's hull);
* ``MultiPolygon``: one object, the convex hull of its polygons (e.g. a cluster drawn cell by cell);
* ``Point`` / ``MultiPoint``: each point one object, a square of the class's typical size centred on it
  (:data:`TYPICAL_SIZE_UM`), since a point carries no extent; such objects are marked ``from_point``.

Coordinates are level-0 pixels, y downwards, as QuPath writes them. As in the pipeline's counts and the
generator's truth, a cluster's member cells are CTCs too: each should also be annotated as a CTC. Features of
other classes (tissue regions, "Ignore", unclassified) are skipped and counted. A file that is not JSON, not
GeoJSON features, or that classifies as CTC/CTM a geometry this cannot use, is refused with an
:class:`InputError` that names it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipelines.errors import InputError
from pipelines.wsi.labels import CLASS_NAMES

TYPICAL_SIZE_UM: dict[str, float] = {"CTC": 20.0, "CTM": 50.0}  # box side for a point annotation
ANNOTATION_SUFFIX = ".geojson"
Point = tuple[float, float]


@dataclass(frozen=True)
class SlideAnnotations:
    """The CTC/CTM objects of one slide, as boxes and outlines in level-0 pixels."""

    source: Path
    boxes: list[tuple[int, float, float, float, float]] = field(default_factory=list)  # class, x0, y0, x1, y1
    outlines: list[list[Point]] = field(default_factory=list)  # per box
    from_point: list[bool] = field(default_factory=list)  # per box: made from a point annotation
    skipped: dict[str, int] = field(default_factory=dict)  # features of other classes, by class name

    def counts(self) -> dict[str, int]:
        return {name: sum(1 for b in self.boxes if b[0] == i) for i, name in enumerate(CLASS_NAMES)}

    def box_array(self) -> np.ndarray:
        """``(n, 5)``: class, x0, y0, x1, y1."""
        return np.array(self.boxes, np.float64).reshape(-1, 5)

    @property
    def points(self) -> int:
        return sum(self.from_point)


def annotation_file(slide: Path) -> Path | None:
    """The GeoJSON beside ``slide`` (``a.geojson`` or ``a.svs.geojson`` for ``a.svs``), if there is one."""
    for candidate in (slide.with_suffix(ANNOTATION_SUFFIX), slide.with_name(slide.name + ANNOTATION_SUFFIX)):
        if candidate != slide and candidate.is_file():
            return candidate
    return None


def annotated_slides(folder: Path) -> list[Path]:
    """Files in ``folder`` with a QuPath GeoJSON beside them (the GeoJSON and JSON files themselves excluded)."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() not in (ANNOTATION_SUFFIX, ".json") and annotation_file(p) is not None
    )


def _features(doc: Any, source: Path) -> list[dict[str, Any]]:
    features: Any
    if isinstance(doc, list):
        features = doc
    elif isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        features = doc.get("features")
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        features = [doc]
    else:
        raise InputError(f"{source.name}: not GeoJSON features (a FeatureCollection or a list of Features)")
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        raise InputError(f"{source.name}: 'features' must be a list of GeoJSON Feature objects")
    return features


def _class_name(feature: dict[str, Any]) -> str | None:
    props = feature.get("properties") or {}
    classification = props.get("classification") if isinstance(props, dict) else None
    # QuPath writes {"name": ..., "color": ...}; some exporters write the name alone
    name = classification.get("name") if isinstance(classification, dict) else classification
    return str(name) if name is not None else None


def _points(coords: Any, source: Path, where: str) -> np.ndarray:
    try:
        array = np.array(coords, np.float64).reshape(-1, 2)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source.name}: {where}: coordinates are not [x, y] pairs ({exc})") from None
    if not len(array) or not np.isfinite(array).all():
        raise InputError(f"{source.name}: {where}: no usable coordinates")
    return array


def _square(centre: np.ndarray, side_px: tuple[float, float]) -> list[Point]:
    cx, cy = float(centre[0]), float(centre[1])
    hx, hy = side_px[0] / 2, side_px[1] / 2
    return [(cx - hx, cy - hy), (cx + hx, cy - hy), (cx + hx, cy + hy), (cx - hx, cy + hy)]


def _outlines(geometry: Any, name: str, mpp_um: tuple[float, float], source: Path, where: str,
              ) -> list[tuple[list[Point], bool]]:
    """(outline, from a point) for each object one classified feature stands for."""
    if not isinstance(geometry, dict):
        raise InputError(f"{source.name}: {where}: has no geometry")
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    side = (TYPICAL_SIZE_UM[name] / mpp_um[0], TYPICAL_SIZE_UM[name] / mpp_um[1])
    if kind in ("Point", "MultiPoint"):
        return [(_square(p, side), True) for p in _points(coords, source, where)]
    if kind == "Polygon" and isinstance(coords, list) and coords:
        ring = _points(coords[0], source, where)
    elif kind == "MultiPolygon" and isinstance(coords, list) and coords:
        rings = [_points(poly[0], source, where) for poly in coords if isinstance(poly, list) and poly]
        if not rings:
            raise InputError(f"{source.name}: {where}: an empty MultiPolygon")
        ring = cv2.convexHull(np.concatenate(rings).astype(np.float32)).reshape(-1, 2).astype(np.float64)
    else:
        raise InputError(
            f"{source.name}: {where}: a {name} must be a Point, MultiPoint, Polygon or MultiPolygon, not {kind!r}"
        )
    if len(ring) < 3 or float(np.ptp(ring[:, 0])) <= 0 or float(np.ptp(ring[:, 1])) <= 0:
        raise InputError(f"{source.name}: {where}: the {name} outline encloses no area")
    return [([(float(x), float(y)) for x, y in ring], False)]


def read_annotations(path: Path, mpp_um: tuple[float, float]) -> SlideAnnotations:
    """The CTC/CTM objects of a QuPath GeoJSON file; ``mpp_um`` (x, y) of level 0 sizes point annotations."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path.name}: not a readable GeoJSON file ({exc})") from None
    wanted = {n.lower(): i for i, n in enumerate(CLASS_NAMES)}
    result = SlideAnnotations(path)
    for number, feature in enumerate(_features(doc, path), start=1):
        name = _class_name(feature)
        cls = wanted.get(name.strip().lower()) if name else None
        if cls is None:
            key = name or "unclassified"
            result.skipped[key] = result.skipped.get(key, 0) + 1
            continue
        for outline, from_point in _outlines(feature.get("geometry"), CLASS_NAMES[cls], mpp_um, path,
                                             f"feature {number}"):
            xs, ys = [p[0] for p in outline], [p[1] for p in outline]
            result.boxes.append((cls, min(xs), min(ys), max(xs), max(ys)))
            result.outlines.append(outline)
            result.from_point.append(from_point)
    return result


def read_slide_annotations(slide: Path, fallback_mpp_um: float | None = None) -> SlideAnnotations:
    """The annotations beside ``slide``, points sized at the slide's own resolution."""
    from pipelines.wsi.reader import SlideReader

    source = annotation_file(slide)
    if source is None:
        raise InputError(f"{slide.name}: no QuPath GeoJSON beside it ({slide.stem}{ANNOTATION_SUFFIX})")
    with SlideReader(slide, fallback_mpp_um=fallback_mpp_um) as reader:
        mpp = (reader.resolution.mpp_x_um, reader.resolution.mpp_y_um)
    return read_annotations(source, mpp)


def to_feature_collection(boxes: Sequence[tuple[int, float, float, float, float]],
                          outlines: Sequence[Sequence[Point]] | None = None) -> dict[str, Any]:
    """Objects as QuPath annotation features (polygon outlines where given, else rectangles)."""
    features = []
    for i, (cls, x0, y0, x1, y1) in enumerate(boxes):
        ring = [list(p) for p in outlines[i]] if outlines else [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
        ring.append(list(ring[0]))
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "annotation", "classification": {"name": CLASS_NAMES[int(cls)]}},
        })
    return {"type": "FeatureCollection", "features": features}
