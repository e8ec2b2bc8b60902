"""From per-tile detections to slide findings, in level-0 pixels: one object counted once, clusters found.

Seams. Tiles overlap by at least the largest object, so every object lies whole inside some tile. A box that
touches an inner tile edge (not the slide border) is marked ``cut``: it may be a part of an object that a
neighbour tile sees whole. Class-aware suppression then keeps whole boxes first (by confidence) and drops
(a) any box of the same class overlapping a kept one above the IoU threshold, and (b) a cut box that lies
mostly inside a kept one. Two cut parts of one object (where no tile saw it whole) are joined.

Clusters (CTM) come from two sources: the model's CTM class, and CTCs closer to each other than a
configurable distance, grouped as connected components. A group and a model CTM that overlap are one CTM,
with the group's box (it hugs the member cells) and the higher confidence.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial import cKDTree

from pipelines.wsi.labels import CLASS_NAMES, CTC, CTM
from pipelines.wsi.tiling import Tile, TileGrid

CUT_INSIDE = 0.5  # a cut box this much inside a kept box is a part of it
JOIN_CUT = 0.3  # two cut boxes overlapping this much (of the smaller) are parts of one object
GROUP_MATCH = 0.5  # a group and a model CTM overlapping this much (of the smaller box) are one cluster


@dataclass(frozen=True)
class Detection:
    cls: int
    confidence: float
    l0_x0: float
    l0_y0: float
    l0_x1: float
    l0_y1: float
    cut: bool = False
    members: int = 0  # CTCs in a cluster
    source: str = "model"  # for CTM: model, grouping or model+grouping

    @property
    def name(self) -> str:
        return CLASS_NAMES[self.cls]

    @property
    def area(self) -> float:
        return max(self.l0_x1 - self.l0_x0, 0.0) * max(self.l0_y1 - self.l0_y0, 0.0)

    def as_dict(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "class": self.name,
            "confidence": round(self.confidence, 4),
            "l0_box": [round(self.l0_x0, 1), round(self.l0_y0, 1), round(self.l0_x1, 1), round(self.l0_y1, 1)],
        }
        if self.cls == CTM:
            doc["members"] = self.members
            doc["source"] = self.source
        return doc


def _intersection(a: Detection, b: Detection) -> float:
    w = min(a.l0_x1, b.l0_x1) - max(a.l0_x0, b.l0_x0)
    h = min(a.l0_y1, b.l0_y1) - max(a.l0_y0, b.l0_y0)
    return max(w, 0.0) * max(h, 0.0)


def iou(a: Detection, b: Detection) -> float:
    inter = _intersection(a, b)
    return inter / max(a.area + b.area - inter, 1e-9)


def to_level0(raw: np.ndarray, tile: Tile, grid: TileGrid, margin_px: float = 2.0) -> list[Detection]:
    """Tile-pixel detections ``(k, 6)`` of one tile as level-0 detections, marked where an inner seam cuts them."""
    out = []
    t = grid.tile_px
    for t_x0, t_y0, t_x1, t_y1, confidence, cls in raw:
        cut = (
            (t_x0 <= margin_px and not tile.border_left)
            or (t_y0 <= margin_px and not tile.border_top)
            or (t_x1 >= t - margin_px and not tile.border_right)
            or (t_y1 >= t - margin_px and not tile.border_bottom)
        )
        out.append(
            Detection(
                int(cls),
                float(confidence),
                tile.l0_x + float(t_x0) * grid.l0_per_px_x,
                tile.l0_y + float(t_y0) * grid.l0_per_px_y,
                tile.l0_x + float(t_x1) * grid.l0_per_px_x,
                tile.l0_y + float(t_y1) * grid.l0_per_px_y,
                bool(cut),
            )
        )
    return out


class _Index:
    """Kept boxes bucketed on a coarse grid, to find overlap candidates without comparing all pairs."""

    def __init__(self, cell: float) -> None:
        self.cell = max(cell, 1.0)
        self.buckets: dict[tuple[int, int], list[int]] = defaultdict(list)

    def _key(self, d: Detection) -> tuple[int, int]:
        return int((d.l0_x0 + d.l0_x1) / 2 // self.cell), int((d.l0_y0 + d.l0_y1) / 2 // self.cell)

    def add(self, i: int, d: Detection) -> None:
        self.buckets[self._key(d)].append(i)

    def near(self, d: Detection) -> Iterable[int]:
        kx, ky = self._key(d)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yield from self.buckets.get((kx + dx, ky + dy), ())


def merge_across_seams(detections: Sequence[Detection], iou_threshold: float) -> list[Detection]:
    """Class-aware suppression over the whole slide, whole boxes before cut ones, see the module notes."""
    if not detections:
        return []
    largest = max(max(d.l0_x1 - d.l0_x0, d.l0_y1 - d.l0_y0) for d in detections)
    kept: list[Detection] = []
    index = _Index(largest)
    for d in sorted(detections, key=lambda d: (d.cut, -d.confidence)):
        drop = False
        for i in index.near(d):
            k = kept[i]
            if k.cls != d.cls:
                continue
            inter = _intersection(d, k)
            if inter <= 0:
                continue
            same_object = inter / max(d.area + k.area - inter, 1e-9) >= iou_threshold
            part_of_kept = d.cut and not k.cut and inter / max(d.area, 1e-9) >= CUT_INSIDE
            parts_of_one = d.cut and k.cut and inter / max(min(d.area, k.area), 1e-9) >= JOIN_CUT
            if parts_of_one:
                kept[i] = replace(
                    k,
                    confidence=max(k.confidence, d.confidence),
                    l0_x0=min(k.l0_x0, d.l0_x0),
                    l0_y0=min(k.l0_y0, d.l0_y0),
                    l0_x1=max(k.l0_x1, d.l0_x1),
                    l0_y1=max(k.l0_y1, d.l0_y1),
                )
            drop = parts_of_one or same_object or part_of_kept
            if drop:
                break
        if not drop:
            index.add(len(kept), d)
            kept.append(d)
    return kept


def _box_gap(a: Detection, b: Detection, sx: float, sy: float) -> float:
    """Edge-to-edge distance between two boxes, with level-0 px scaled by ``sx``/``sy`` (to µm)."""
    gx = max(a.l0_x0 - b.l0_x1, b.l0_x0 - a.l0_x1, 0.0) * sx
    gy = max(a.l0_y0 - b.l0_y1, b.l0_y0 - a.l0_y1, 0.0) * sy
    return float(np.hypot(gx, gy))


def group_ctcs(ctcs: Sequence[Detection], distance_um: float, mpp: tuple[float, float]) -> list[list[int]]:
    """Connected components of CTCs whose boxes are at most ``distance_um`` apart; only groups of 2 or more."""
    if len(ctcs) < 2:
        return []
    sx, sy = mpp
    centres = np.array([((d.l0_x0 + d.l0_x1) / 2 * sx, (d.l0_y0 + d.l0_y1) / 2 * sy) for d in ctcs])
    largest = max(float(np.hypot((d.l0_x1 - d.l0_x0) * sx, (d.l0_y1 - d.l0_y0) * sy)) for d in ctcs)
    parent = list(range(len(ctcs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in cKDTree(centres).query_pairs(largest + distance_um):
        if _box_gap(ctcs[i], ctcs[j], sx, sy) <= distance_um:
            parent[find(i)] = find(j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(ctcs)):
        groups[find(i)].append(i)
    return sorted((sorted(g) for g in groups.values() if len(g) >= 2), key=lambda g: g[0])


def combine_clusters(
    detections: Sequence[Detection], distance_um: float, mpp: tuple[float, float]
) -> list[Detection]:
    """CTCs unchanged; CTMs as the union of the model's CTM boxes and groups of close CTCs (one per overlap)."""
    ctcs = [d for d in detections if d.cls == CTC]
    model_ctms = [d for d in detections if d.cls == CTM]
    grouped = []
    for members in group_ctcs(ctcs, distance_um, mpp):
        parts = [ctcs[i] for i in members]
        grouped.append(
            Detection(
                CTM,
                float(np.mean([p.confidence for p in parts])),
                min(p.l0_x0 for p in parts),
                min(p.l0_y0 for p in parts),
                max(p.l0_x1 for p in parts),
                max(p.l0_y1 for p in parts),
                members=len(parts),
                source="grouping",
            )
        )
    clusters: list[Detection] = []
    used: set[int] = set()
    for ctm in model_ctms:
        inside = [c for c in ctcs if _intersection(c, ctm) / max(c.area, 1e-9) >= CUT_INSIDE]
        best, best_overlap = None, GROUP_MATCH
        for j, g in enumerate(grouped):
            overlap = _intersection(ctm, g) / max(min(ctm.area, g.area), 1e-9)
            if overlap >= best_overlap:
                best, best_overlap = j, overlap
        if best is None:
            clusters.append(replace(ctm, members=len(inside), source="model"))
        elif best not in used:  # a second model box on an already matched group is the same cluster
            used.add(best)
            group = grouped[best]
            # the group's box hugs its member cells; the model's cluster box is less exact at the edges
            clusters.append(
                replace(group, confidence=max(ctm.confidence, group.confidence), source="model+grouping")
            )
    clusters += [g for j, g in enumerate(grouped) if j not in used]
    return ctcs + clusters
