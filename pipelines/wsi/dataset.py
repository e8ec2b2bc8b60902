"""YOLO data sets for the CTC/CTM detector: cut from generated slides, or a user's own, split 70/15/15.

Tiles are read through :class:`~pipelines.wsi.reader.SlideReader` at the processing resolution, exactly as
the pipeline reads them, so the model sees in training what it sees in use. Labels are polygons (the cell
outline, or the hull of a cluster), which YOLO turns into boxes; with outlines, rotation augmentation keeps
boxes tight. An object cut by the tile edge is labelled with its visible part when at least half of it is
visible and left out otherwise. The split is by slide, so no test tile shares pixels with a training tile.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import yaml

from pipelines.errors import InputError
from pipelines.synthetic.slides import SlideSpec, SlideTruth, truth_path, write_slide
from pipelines.wsi.labels import CLASS_NAMES
from pipelines.wsi.reader import SlideReader
from pipelines.wsi.tissue import tissue_mask

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
Point = tuple[float, float]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class LabelledObjects(Protocol):
    """A slide's labelled objects in level-0 pixels: a generator's truth, or a pathologist's annotations."""

    @property
    def boxes(self) -> list[tuple[int, float, float, float, float]]: ...  # class, x0, y0, x1, y1

    @property
    def outlines(self) -> list[list[Point]]: ...  # per box, a level-0 polygon


@dataclass(frozen=True)
class CutSettings:
    mpp_um: float = 1.0  # processing resolution
    tile_px: int = 320
    negatives_per_target: float = 0.2  # tiles without targets (hard negatives, background) per target tile
    min_visible: float = 0.5  # least visible share of an object cut by the tile edge that is labelled
    rotate: bool = True  # turn each tile by a random multiple of 90° (labels stay exact, unlike free rotation)
    seed: int = 0


@dataclass(frozen=True)
class SplitShares:
    train: float = 0.70
    val: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        if min(self.train, self.val, self.test) <= 0 or abs(self.train + self.val + self.test - 1) > 1e-6:
            raise ValueError("split shares must be positive and add up to 1")


# ------------------------------------------------------------------------------------------ generated slides


def training_specs(count: int, seed: int, target_density: float = 3.0) -> list[SlideSpec]:
    """Varied generated slides: both modes, scanners at 0.25–0.5 µm/px, ``target_density`` times richer in
    CTCs and clusters than a typical slide, so that every training tile teaches more boxes."""
    rng = random.Random(seed)
    specs = []
    for i in range(count):
        mpp = rng.choice((0.5, 0.5, 0.25, 0.46))
        side_um = rng.uniform(2600, 3400)
        side = int(side_um / mpp) // 512 * 512
        area_scale = (side_um / 3000) ** 2
        specs.append(
            SlideSpec(
                width=side,
                height=side,
                mpp=mpp,
                mode="brightfield" if i % 2 == 0 else "fluorescence",
                ctc=int(rng.uniform(35, 55) * area_scale * target_density),
                ctm=int(rng.uniform(10, 16) * area_scale * target_density),
                leukocytes_per_mm2=rng.uniform(600, 1400),
                red_cells_per_mm2=rng.uniform(100, 500),
                hard_negatives_per_mm2=rng.uniform(30, 90),
                tissue_fraction=rng.uniform(0.45, 0.7),
                seed=seed * 1000 + i,
            )
        )
    return specs


def generate_slides(folder: Path, specs: Sequence[SlideSpec]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in specs:
        path = folder / f"gen-{spec.mode[:2]}-{spec.seed}.tiff"
        if not (path.exists() and truth_path(path).exists()):
            write_slide(path, spec)
        paths.append(path)
    return paths


def generated_slides_in(folder: Path) -> list[Path]:
    """Slides in ``folder`` that have a generator ground truth beside them."""
    return sorted(p for p in folder.iterdir() if p.is_file() and truth_path(p).exists())


# ------------------------------------------------------------------------------------------ cutting tiles


def _clip_polygon(points: np.ndarray, w: float, h: float) -> np.ndarray:
    """Sutherland–Hodgman clipping of a polygon to the rectangle [0, w] × [0, h]."""
    def clip(pts: list[Point], inside: Callable[[Point], bool], cross: Callable[[Point, Point], Point]) -> list[Point]:
        out: list[Point] = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(cross(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cross(prev, cur))
        return out

    def at_x(x: float) -> Callable[[Point, Point], Point]:
        return lambda a, b: (x, a[1] + (b[1] - a[1]) * (x - a[0]) / (b[0] - a[0]))

    def at_y(y: float) -> Callable[[Point, Point], Point]:
        return lambda a, b: (a[0] + (b[0] - a[0]) * (y - a[1]) / (b[1] - a[1]), y)

    pts = [(float(x), float(y)) for x, y in points]
    for inside, cross in (
        (lambda p: p[0] >= 0, at_x(0.0)),
        (lambda p: p[0] <= w, at_x(w)),
        (lambda p: p[1] >= 0, at_y(0.0)),
        (lambda p: p[1] <= h, at_y(h)),
    ):
        if not pts:
            break
        pts = clip(pts, inside, cross)
    return np.array(pts, np.float64).reshape(-1, 2)


def _area(points: np.ndarray) -> float:
    if len(points) < 3:
        return 0.0
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def tile_labels(
    truth: LabelledObjects, l0_x: float, l0_y: float, l0_per_px: tuple[float, float], tile_px: int, min_visible: float
) -> list[tuple[int, np.ndarray]]:
    """(class, polygon in tile pixels) for every object at least ``min_visible`` inside the tile."""
    sx, sy = l0_per_px
    span_x, span_y = tile_px * sx, tile_px * sy
    labels = []
    for (cls, x0, y0, x1, y1), outline in zip(truth.boxes, truth.outlines, strict=True):
        if x1 <= l0_x or y1 <= l0_y or x0 >= l0_x + span_x or y0 >= l0_y + span_y:
            continue
        poly = np.array(outline, np.float64)
        poly = np.stack([(poly[:, 0] - l0_x) / sx, (poly[:, 1] - l0_y) / sy], 1)
        whole = _area(poly)
        visible = _clip_polygon(poly, tile_px, tile_px)
        if whole > 0 and _area(visible) / whole >= min_visible:
            labels.append((cls, visible))
    return labels


def rotate_quarter(
    rgb: np.ndarray, labels: list[tuple[int, np.ndarray]], quarters: int
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Turn a square tile and its polygons counter-clockwise by ``quarters`` × 90°."""
    side = rgb.shape[0]
    out = []
    for cls, poly in labels:
        pts = poly.copy()
        for _ in range(quarters % 4):
            pts = np.stack([pts[:, 1], side - pts[:, 0]], 1)
        out.append((cls, pts))
    return np.ascontiguousarray(np.rot90(rgb, quarters % 4)), out


def cut_slide(
    slide: Path, truth: LabelledObjects, images: Path, labels: Path, settings: CutSettings, rng: random.Random
) -> int:
    """Cut target and background tiles from one labelled slide; return how many were written."""
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    t = settings.tile_px
    with SlideReader(slide, fallback_mpp_um=None) as reader:
        sx, sy = reader.l0_per_px(settings.mpp_um)
        choice = reader.level_for(settings.mpp_um)
        origins: list[tuple[float, float]] = []
        # tiles until every cluster and single CTC lies whole in one (cluster members come with their cluster)
        clusters = [b for b in truth.boxes if b[0] == 1]
        groups = [
            b for b in truth.boxes
            if b[0] == 1 or not any(c[1] <= b[1] and c[2] <= b[2] and b[3] <= c[3] and b[4] <= c[4] for c in clusters)
        ]
        rng.shuffle(groups)
        covered = [False] * len(groups)
        for i, (_, x0, y0, x1, y1) in enumerate(groups):
            if covered[i]:
                continue
            w_px, h_px = (x1 - x0) / sx, (y1 - y0) / sy
            ox = (x0 / sx - rng.uniform(4, max(4.0, t - w_px - 4))) * sx
            oy = (y0 / sy - rng.uniform(4, max(4.0, t - h_px - 4))) * sy
            origins.append((ox, oy))
            for j, (_, gx0, gy0, gx1, gy1) in enumerate(groups):
                inside_x = ox + 4 * sx <= gx0 and gx1 <= ox + (t - 4) * sx
                covered[j] = covered[j] or (inside_x and oy + 4 * sy <= gy0 and gy1 <= oy + (t - 4) * sy)
        overview_mpp = 16.0
        mask = tissue_mask(reader.read_overview(overview_mpp), overview_mpp, reader.l0_per_px(overview_mpp))
        ys, xs = np.nonzero(mask.mask)
        for _ in range(math.ceil(len(origins) * settings.negatives_per_target) if len(xs) else 0):
            k = rng.randrange(len(xs))
            cx, cy = (xs[k] + rng.random()) * mask.l0_per_px_x, (ys[k] + rng.random()) * mask.l0_per_px_y
            origins.append((cx - t * sx / 2, cy - t * sy / 2))
        written = 0
        for i, (wanted_x, wanted_y) in enumerate(origins):
            l0_x = float(round(min(max(wanted_x, 0.0), max(reader.width_l0 - t * sx, 0.0))))
            l0_y = float(round(min(max(wanted_y, 0.0), max(reader.height_l0 - t * sy, 0.0))))
            rgb = reader.read(l0_x, l0_y, t, t, settings.mpp_um, choice)
            labels_px = tile_labels(truth, l0_x, l0_y, (sx, sy), t, settings.min_visible)
            if settings.rotate:
                rgb, labels_px = rotate_quarter(rgb, labels_px, rng.randrange(4))
            name = f"{slide.stem}-{i:04d}"
            cv2.imwrite(str(images / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            rows = [f"{cls} " + " ".join(f"{v / t:.6f}" for v in poly.reshape(-1)) for cls, poly in labels_px]
            (labels / f"{name}.txt").write_text("\n".join(rows) + ("\n" if rows else ""), encoding="utf-8")
            written += 1
    return written


def generated_truth(slide: Path) -> SlideTruth:
    return SlideTruth.load(truth_path(slide))


def generated_mode(slide: Path) -> str:
    return generated_truth(slide).spec.mode


def split_slides(slides: Sequence[Path], shares: SplitShares, seed: int,
                 mode_of: Callable[[Path], str] = generated_mode) -> dict[str, list[Path]]:
    """Whole slides to test/val/train (at least one each), the modes (``mode_of``) alternating so each split
    has every one."""
    if len(slides) < len(SPLITS):
        raise InputError(f"a split by slide needs at least {len(SPLITS)} slides, got {len(slides)}")
    rng = random.Random(seed)
    order = sorted(slides)
    rng.shuffle(order)
    by_mode: dict[str, list[Path]] = {}
    for slide in order:
        by_mode.setdefault(mode_of(slide), []).append(slide)
    interleaved = [p for group in zip_longest(*by_mode.values()) for p in group if p is not None]
    n = len(interleaved)
    n_test, n_val = max(1, round(n * shares.test)), max(1, round(n * shares.val))
    return {
        "train": interleaved[n_test + n_val :],
        "val": interleaved[n_test : n_test + n_val],
        "test": interleaved[:n_test],
    }


def build_from_slides(
    slides: Sequence[Path], out: Path, settings: CutSettings = CutSettings(), shares: SplitShares = SplitShares(),
    truth_of: Callable[[Path], LabelledObjects] = generated_truth, mode_of: Callable[[Path], str] = generated_mode,
    source: str = "generated slides",
) -> Path:
    """A YOLO data set (``data.yaml``) of tiles cut from labelled slides, split by slide: generated ones by
    default, or any whose objects ``truth_of`` reads (e.g. QuPath annotations)."""
    rng = random.Random(settings.seed)
    split = split_slides(slides, shares, settings.seed, mode_of)
    stats: dict[str, dict[str, int]] = {}
    for name, members in split.items():
        tiles = 0
        for slide in members:
            truth = truth_of(slide)
            if not truth.outlines:
                raise InputError(f"{slide.name}: its ground truth has no outlines (regenerate it)")
            tiles += cut_slide(slide, truth, out / "images" / name, out / "labels" / name, settings, rng)
        stats[name] = {"slides": len(members), "tiles": tiles}
        log.info("%s: %d tiles from %d slides", name, tiles, len(members))
    data_yaml = write_data_yaml(out, {s: f"images/{s}" for s in SPLITS})
    (out / "dataset.json").write_text(
        json.dumps(
            {
                "source": source,
                "cut": asdict(settings),
                "splits": stats,
                "slides": {s: [p.name for p in m] for s, m in split.items()},
                "objects": count_objects(out),
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    return data_yaml


def write_data_yaml(root: Path, splits: dict[str, str]) -> Path:
    doc = {"path": str(root.resolve()), **splits, "names": dict(enumerate(CLASS_NAMES))}
    target = root / "data.yaml"
    target.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return target


def count_objects(root: Path) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        per_class = dict.fromkeys(CLASS_NAMES, 0)
        for label in (root / "labels" / split).glob("*.txt"):
            for line in label.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    per_class[CLASS_NAMES[int(line.split()[0])]] += 1
        counts[split] = per_class
    return counts


# ------------------------------------------------------------------------------------------ a user's data set


def prepare_yolo_dataset(root: Path, shares: SplitShares = SplitShares(), seed: int = 0) -> Path:
    """``data.yaml`` for a user's YOLO data set: used as is when it names train/val/test, else split 70/15/15.

    Accepted layouts: ``data.yaml`` naming the splits; ``images/{train,val,test}`` with ``labels/...``; or
    a flat ``images/`` + ``labels/`` that is split here by file (lists written beside it).
    """
    existing = root / "data.yaml"
    if existing.exists():
        doc = yaml.safe_load(existing.read_text(encoding="utf-8")) or {}
        if all(k in doc for k in SPLITS):
            return existing
        raise InputError(f"{existing} must name train, val and test splits")
    if all((root / "images" / s).is_dir() for s in SPLITS):
        return write_data_yaml(root, {s: f"images/{s}" for s in SPLITS})
    images = sorted(p for p in (root / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise InputError(f"{root} holds no YOLO data set (data.yaml, or images/ with labels/) and no generated slides")
    rng = random.Random(seed)
    rng.shuffle(images)
    n_val, n_test = max(1, round(len(images) * shares.val)), max(1, round(len(images) * shares.test))
    parts = {"test": images[:n_test], "val": images[n_test : n_test + n_val], "train": images[n_test + n_val :]}
    for split, files in parts.items():
        (root / f"{split}.txt").write_text("".join(f"{p.resolve()}\n" for p in files), encoding="utf-8")
    return write_data_yaml(root, {s: f"{s}.txt" for s in SPLITS})


def split_images(data_yaml: Path, split: str) -> list[Path]:
    """The image files of one split of a YOLO data set."""
    doc = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    root = Path(doc.get("path") or data_yaml.parent)
    entry = root / doc[split]
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return [Path(line.strip()) for line in entry.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_rgb(image: Path) -> np.ndarray:
    bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{image} is not an image OpenCV can read")
    rgb: np.ndarray = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return rgb


def label_file(image: Path) -> Path:
    """YOLO's convention: the label of ``.../images/x.png`` is ``.../labels/x.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def read_label_boxes(image: Path, width: int, height: int) -> np.ndarray:
    """Ground truth of one image as ``(n, 5)``: class, x0, y0, x1, y1 in pixels (boxes or polygons)."""
    path = label_file(image)
    rows = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            values = [float(v) for v in line.split()]
            if not values:
                continue
            cls, coords = int(values[0]), np.array(values[1:])
            if len(coords) == 4:
                cx, cy, w, h = coords
                x0, y0 = (cx - w / 2) * width, (cy - h / 2) * height
                rows.append((cls, x0, y0, x0 + w * width, y0 + h * height))
            else:
                pts = coords.reshape(-1, 2) * (width, height)
                rows.append((cls, *pts.min(axis=0), *pts.max(axis=0)))
    return np.array(rows, np.float64).reshape(-1, 5)
