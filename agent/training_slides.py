"""Reviewed slides as a YOLO data set for ``oncoagent train detector`` (part of ``oncoagent export training-data``).

Each signed-off slide review gives the cells as the reviewer left them: the AI's detections kept with their class
after the review (confirmed, reclassed, or left undecided, which counts as the AI classed it), the cells the
reviewer added, and the detections the reviewer rejected. Tiles of the model's size are read at the resolution
the job's model worked at (through the pipeline's own :class:`~pipelines.wsi.reader.SlideReader`) until every
reviewed cell lies whole in one; a tile's labels are the kept and added cells at least half inside it, as
boxes. Rejected detections are in no label file, but their tiles are in the set: the model learns them as
background (the hard negatives). Slides go whole to ``train`` or ``val`` by a hash of the input's key, so no
slide is in both and a slide stays in its split from one export to the next.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.records import Job
from agent.review_records import Decision, DecisionKind, Review

log = logging.getLogger(__name__)

VAL_SHARE = 0.2  # slides whose key hashes below this go to val
MIN_VISIBLE = 0.5  # least share of a cell's box inside a tile for it to be labelled there (as the cutter does)
MARGIN_PX = 4  # a cell counts as covered by a tile when it lies this far inside its edge
DEFAULT_TILE_PX = 320  # when the job's model names no input size


@dataclass(frozen=True)
class Cell:
    """One reviewed cell of a slide: its level-0 box, its class after the review (None: rejected) and what the
    reviewer did (confirmed, reclassed, rejected, undecided, added)."""

    box: tuple[float, float, float, float]
    label: str | None
    outcome: str


@dataclass
class SlideCase:
    """A signed-off slide review ready to cut: the job, its review, the slide's files and the reviewed cells."""

    review: Review
    job: Job
    slide_key: str
    paths: list[Path]
    cells: list[Cell]
    mpp_um: float
    fallback_mpp_um: float | None
    model_version: str
    split: str = "train"
    tiles: list[dict[str, Any]] = field(default_factory=list)


def reviewed_cells(detections: list[dict[str, Any]], decided: list[Decision]) -> list[Cell]:
    """The AI's detections with the reviewer's decision on each, then the cells the reviewer added."""
    by_target = {d.target: d for d in decided}
    cells = []
    for index, detection in enumerate(detections):
        ai_class = str(detection["class"])
        decision = by_target.get(f"d:{index}")
        box = _box(detection["l0_box"])
        if decision is None:
            cells.append(Cell(box, ai_class, "undecided"))
        elif decision.decision is DecisionKind.REJECTED:
            cells.append(Cell(box, None, "rejected"))
        else:
            label = decision.label or ai_class
            cells.append(Cell(box, label, "confirmed" if label == ai_class else "reclassed"))
    cells += [Cell(_box(d.geometry), d.label or "CTC", "added") for d in decided
              if d.decision is DecisionKind.ADDED and d.geometry is not None]
    return cells


def _box(values: Any) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in values)
    return (x0, y0, x1, y1)


def assign_splits(cases: list[SlideCase]) -> None:
    """``train`` or ``val`` by slide: a hash of the input key below :data:`VAL_SHARE` is ``val``. With two
    slides or more, neither split is left empty (the lowest hash goes to val, the highest to train)."""
    keyed = sorted(((_unit_hash(c.slide_key), c) for c in cases), key=lambda pair: pair[0])
    for value, case in keyed:
        case.split = "val" if value < VAL_SHARE else "train"
    slides = {c.slide_key for c in cases}
    if len(slides) >= 2:
        splits = {c.slide_key: c.split for c in cases}
        if "val" not in splits.values():
            _move(cases, keyed[0][1].slide_key, "val")
        elif "train" not in splits.values():
            _move(cases, keyed[-1][1].slide_key, "train")


def _move(cases: list[SlideCase], slide_key: str, split: str) -> None:
    for case in cases:
        if case.slide_key == slide_key:
            case.split = split


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64


def tile_origins(cells: list[Cell], l0_per_px: tuple[float, float], tile_px: int, size: tuple[int, int]
                 ) -> list[tuple[float, float]]:
    """Level-0 origins of ``tile_px`` tiles (``l0_per_px`` level-0 pixels per tile pixel), until every cell lies
    whole in one (a cell larger than a tile gets one centred on it). ``size``: the slide's level-0 size."""
    span_x, span_y = tile_px * l0_per_px[0], tile_px * l0_per_px[1]
    margin_x, margin_y = MARGIN_PX * l0_per_px[0], MARGIN_PX * l0_per_px[1]
    origins: list[tuple[float, float]] = []
    for x0, y0, x1, y1 in sorted((c.box for c in cells), key=lambda b: (b[1], b[0])):
        if any(ox + margin_x <= x0 and x1 <= ox + span_x - margin_x and oy + margin_y <= y0
               and y1 <= oy + span_y - margin_y for ox, oy in origins):
            continue
        ox = min(max((x0 + x1 - span_x) / 2, 0.0), max(size[0] - span_x, 0.0))
        oy = min(max((y0 + y1 - span_y) / 2, 0.0), max(size[1] - span_y, 0.0))
        origins.append((float(round(ox)), float(round(oy))))
    return origins


def tile_rows(cells: list[Cell], origin: tuple[float, float], l0_per_px: tuple[float, float], tile_px: int,
              class_names: tuple[str, ...]) -> list[str]:
    """YOLO rows (``class cx cy w h``, normalised) of the kept and added cells at least half inside the tile."""
    sx, sy = l0_per_px
    rows = []
    for cell in cells:
        if cell.label is None or cell.label not in class_names:
            continue
        x0, y0, x1, y1 = ((cell.box[0] - origin[0]) / sx, (cell.box[1] - origin[1]) / sy,
                          (cell.box[2] - origin[0]) / sx, (cell.box[3] - origin[1]) / sy)
        cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(tile_px)), min(y1, float(tile_px))
        whole = (x1 - x0) * (y1 - y0)
        if cx1 <= cx0 or cy1 <= cy0 or whole <= 0 or (cx1 - cx0) * (cy1 - cy0) / whole < MIN_VISIBLE:
            continue
        rows.append(f"{class_names.index(cell.label)} {(cx0 + cx1) / 2 / tile_px:.6f} {(cy0 + cy1) / 2 / tile_px:.6f} "
                    f"{(cx1 - cx0) / tile_px:.6f} {(cy1 - cy0) / tile_px:.6f}")
    return rows


def cut_case(case: SlideCase, root: Path, tile_px: int) -> None:
    """Write the case's tiles (PNG) and label files under ``root/images|labels/<split>``; record them in
    ``case.tiles``."""
    import cv2

    from pipelines.wsi.labels import CLASS_NAMES
    from pipelines.wsi.reader import SlideReader

    images, labels = root / "images" / case.split, root / "labels" / case.split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    with SlideReader.open(case.paths, fallback_mpp_um=case.fallback_mpp_um) as reader:
        l0_per_px = reader.l0_per_px(case.mpp_um)
        choice = reader.level_for(case.mpp_um)
        size = (reader.width_l0, reader.height_l0)
        for i, origin in enumerate(tile_origins(case.cells, l0_per_px, tile_px, size)):
            rgb = reader.read(origin[0], origin[1], tile_px, tile_px, case.mpp_um, choice)
            rows = tile_rows(case.cells, origin, l0_per_px, tile_px, tuple(CLASS_NAMES))
            name = f"job{case.job.id:06d}-v{case.review.version}-{i:04d}"
            cv2.imwrite(str(images / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            (labels / f"{name}.txt").write_text("".join(row + "\n" for row in rows), encoding="utf-8")
            case.tiles.append({"image": f"images/{case.split}/{name}.png", "l0_origin": list(origin),
                               "labels": len(rows)})
    log.info("job %d (review version %d): %d tiles to %s", case.job.id, case.review.version, len(case.tiles),
             case.split)


def case_entry(case: SlideCase) -> dict[str, Any]:
    """What the manifest says of one case: where its tiles came from and what the reviewer decided."""
    outcomes = Counter(cell.outcome for cell in case.cells)
    return {
        "job_id": case.job.id, "pipeline": case.job.pipeline, "review_version": case.review.version,
        "reviewer": case.review.signed_by_name, "signed_at": case.review.signed_at,
        "model_version": case.model_version, "split": case.split, "mpp_um": case.mpp_um,
        **{k: outcomes.get(k, 0) for k in ("confirmed", "reclassed", "rejected", "added", "undecided")},
        "tiles": [{**tile, "job_id": case.job.id, "review_version": case.review.version,
                   "reviewer": case.review.signed_by_name, "model_version": case.model_version}
                  for tile in case.tiles],
    }


def write_yolo_set(cases: list[SlideCase], root: Path, tile_px: int, extra: dict[str, Any]) -> Path:
    """Cut every case, then write ``data.yaml`` (train, val; the trainer's test split is val: a reviewed set
    has no third one), ``dataset.json`` (what the trainer records of its data) and ``manifest.json``."""
    from pipelines.wsi.dataset import count_objects, write_data_yaml

    assign_splits(cases)
    for case in cases:
        cut_case(case, root, tile_px)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    data_yaml = write_data_yaml(root, {"train": "images/train", "val": "images/val", "test": "images/val"})
    entries = [case_entry(case) for case in cases]
    totals = Counter({k: 0 for k in ("confirmed", "reclassed", "rejected", "added", "undecided")})
    for entry in entries:
        totals.update({k: entry[k] for k in totals})
    splits = {s: {"slides": len({c.slide_key for c in cases if c.split == s}),
                  "tiles": sum(len(c.tiles) for c in cases if c.split == s)} for s in ("train", "val")}
    (root / "dataset.json").write_text(json.dumps({
        "source": "reviewed slides (oncoagent export training-data)",
        "cut": {"tile_px": tile_px, "mpp_um": sorted({c.mpp_um for c in cases}), "min_visible": MIN_VISIBLE},
        "splits": splits, "objects": {s: v for s, v in count_objects(root).items() if s != "test"},
    }, indent=1), encoding="utf-8")
    (root / "manifest.json").write_text(json.dumps({
        **extra, "tile_px": tile_px, "splits": splits, "totals": dict(totals), "cases": entries,
    }, indent=1), encoding="utf-8")
    return data_yaml
