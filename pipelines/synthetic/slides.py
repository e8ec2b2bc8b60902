"""Generated whole-slide images as real pyramidal tiled TIFF files (openslide's generic-tiff format).

The slide is a blood-cell smear (an irregular ellipse, slightly tinted against the bare glass) on which the
rare targets are placed first, with ground-truth boxes and outlines in level-0 pixels: single circulating
tumour cells (CTC) and clusters of 2–8 touching CTCs (CTM; every member is also a CTC in the ground truth).
The background population (leukocytes, red cells, debris, look-alikes) is generated per 2048-pixel block
from the seed and the block index, so any block can be rebuilt on demand and nothing slide-sized is held.
Level 0 is rendered tile by tile; every lower level is built from the level above (2×2 tiles → one), as
scanners do. Memory stays bounded whatever the slide size. Focus (edge softness) and stain intensity vary
smoothly across the slide; the stain palette varies per slide, tone per cell.

Two modes, as CTC labs image them:

* ``brightfield``: a cytology stain on a pale background; leukocytes with dark lobed nuclei, red cells,
  and tumour cells larger with big irregular, granular nuclei (high nucleus/cytoplasm ratio); large
  mononuclear look-alikes and stained debris as hard negatives.
* ``fluorescence``: an RGB composite of CD45 (red), CK (green) and DAPI (blue) on black, the CellSearch
  convention: a CTC is DAPI+ CK+ CD45−, a leukocyte DAPI+ CD45+ CK−; CK+ debris without a nucleus and
  large CD45+ cells with CK bleed-through are the hard negatives.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from scipy.spatial import cKDTree

from pipelines.wsi.pyramid_writer import PyramidTiffWriter

Mode = Literal["brightfield", "fluorescence"]
CLASS_NAMES = ("CTC", "CTM")

# Cell kinds; targets are CTC, everything else is background.
CTC, WBC, RBC, DEBRIS, LOOKALIKE = range(5)
KIND_NAMES = ("ctc", "wbc", "rbc", "debris", "lookalike")
CELL_DTYPE = np.dtype(
    [
        ("kind", "u1"),
        ("cx", "f8"),  # level-0 px
        ("cy", "f8"),
        ("rx", "f4"),  # level-0 px
        ("ry", "f4"),
        ("angle", "f4"),
        ("nucleus", "f4"),  # nucleus radius as a share of the cell radius (0 = none)
        ("lobes", "u1"),
        ("tone", "f4"),  # stain intensity variation, ~1
        ("blur", "f4"),  # edge softness in level-0 px (focus)
        ("phase", "f4"),  # texture phase
    ]
)
BLOCK_L0 = 2048  # background population is generated per block of this many level-0 px
TARGET_GAP_UM = 15.0  # least gap between separate targets (single CTCs, clusters)
MAX_CLUSTER_SPAN_UM = 90.0
OUTLINE_POINTS = 24


@dataclass(frozen=True)
class SlideSpec:
    width: int = 8192
    height: int = 8192
    mpp: float = 0.5  # µm per level-0 pixel
    mode: Mode = "brightfield"
    ctc: int = 30  # single CTCs (not counting cluster members)
    ctm: int = 4  # clusters
    leukocytes_per_mm2: float = 900.0
    red_cells_per_mm2: float = 300.0
    hard_negatives_per_mm2: float = 40.0
    tissue_fraction: float = 0.6  # share of the slide covered by the smear (an irregular ellipse)
    tile: int = 512
    seed: int = 0
    jpeg_quality: int = 90


@dataclass
class SlideTruth:
    path: Path
    spec: SlideSpec
    boxes: list[tuple[int, float, float, float, float]] = field(default_factory=list)  # class, x0, y0, x1, y1
    outlines: list[list[tuple[float, float]]] = field(default_factory=list)  # per box, level-0 polygon

    def counts(self) -> dict[str, int]:
        return {name: sum(1 for b in self.boxes if b[0] == i) for i, name in enumerate(CLASS_NAMES)}

    def save(self, target: Path) -> None:
        doc = {
            "slide": self.path.name,
            "spec": asdict(self.spec),
            "classes": list(CLASS_NAMES),
            "counts": self.counts(),
            "boxes": [
                {
                    "class": CLASS_NAMES[c],
                    "x0": x0,
                    "y0": y0,
                    "x1": x1,
                    "y1": y1,
                    **({"outline": [[round(x, 2), round(y, 2)] for x, y in self.outlines[i]]} if self.outlines else {}),
                }
                for i, (c, x0, y0, x1, y1) in enumerate(self.boxes)
            ],
        }
        target.write_text(json.dumps(doc, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, truth_file: Path) -> SlideTruth:
        """Read ``<slide>.truth.json`` written by :func:`write_slide`."""
        doc = json.loads(truth_file.read_text(encoding="utf-8"))
        spec = SlideSpec(**doc["spec"])
        boxes = [(CLASS_NAMES.index(b["class"]), b["x0"], b["y0"], b["x1"], b["y1"]) for b in doc["boxes"]]
        outlines = [[(float(x), float(y)) for x, y in b.get("outline", [])] for b in doc["boxes"]]
        return cls(truth_file.with_name(doc["slide"]), spec, boxes, outlines if all(outlines) else [])


def truth_path(slide: Path) -> Path:
    return slide.with_name(slide.name + ".truth.json")


def write_slide(path: Path, spec: SlideSpec = SlideSpec()) -> SlideTruth:
    """Write a pyramidal TIFF at ``path`` and its ground truth beside it (``<name>.truth.json``)."""
    world = _World(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = spec.tile
    # JPEG tiles of noisy smears take ~0.2 byte/px at quality 90; BigTIFF beyond what classic TIFF addresses
    bigtiff = spec.width * spec.height * 3 * 0.5 > 2**31
    with PyramidTiffWriter(path, bigtiff=bigtiff, mpp_um=spec.mpp, jpeg_quality=spec.jpeg_quality) as writer:
        level = writer.write_level(
            spec.width,
            spec.height,
            t,
            world.level0_tiles(),
            downsample=1,
            description=f"OncoAgent synthetic slide mode={spec.mode} seed={spec.seed}",
        )
        downsample = 1
        while max(level.width, level.height) > t:
            downsample *= 2
            level = writer.write_level(
                math.ceil(spec.width / downsample),
                math.ceil(spec.height / downsample),
                t,
                writer.downsampled_tiles(level),
                downsample=downsample,
            )
    truth = SlideTruth(path, spec, world.boxes, world.outlines)
    truth.save(truth_path(path))
    return truth


# ------------------------------------------------------------------------------------------ the slide's world


@dataclass(frozen=True)
class _Palette:
    glass: np.ndarray
    smear: np.ndarray
    noise: float
    colours: tuple[tuple[np.ndarray, np.ndarray], ...]  # per kind: (cytoplasm RGB, nucleus RGB)
    additive: bool  # fluorescence adds light on black; brightfield absorbs


class _World:
    """Everything placed on one slide: smear shape, targets, and background cells per block on demand."""

    def __init__(self, spec: SlideSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        self.um = 1 / spec.mpp  # level-0 px per µm
        self.cx0, self.cy0 = spec.width / 2, spec.height / 2
        scale = math.sqrt(spec.tissue_fraction) * 1.05
        self.ax, self.ay = spec.width / 2 * scale, spec.height / 2 * scale
        self.wobble = rng.uniform(0, 2 * math.pi, 3)
        self.focus_phase = rng.uniform(0, 2 * math.pi, 2)
        self.stain_phase = rng.uniform(0, 2 * math.pi, 2)
        self.palette = _palette(spec.mode, rng)
        self.noise_bank = [rng.normal(0, 1, (spec.tile, spec.tile, 1)).astype(np.float32) for _ in range(8)]
        self.boxes: list[tuple[int, float, float, float, float]] = []
        self.outlines: list[list[tuple[float, float]]] = []
        self.targets = self._place_targets(rng)
        # target circles (centre, radius) that background cells keep clear of
        centres = np.stack([self.targets["cx"], self.targets["cy"]], 1)
        self._target_tree = cKDTree(centres) if len(self.targets) else None
        self._blocks: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._block_cache = 4 * (math.ceil(spec.width / BLOCK_L0) + 2)

    # ------------------------------------------------------------------ fields over the slide

    def smear_radius(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Normalised radius: < 1 inside the smear."""
        dx, dy = (x - self.cx0) / self.ax, (y - self.cy0) / self.ay
        theta = np.arctan2(dy, dx)
        w = self.wobble
        edge = 1 + 0.05 * np.sin(3 * theta + w[0]) + 0.035 * np.sin(5 * theta + w[1]) + 0.02 * np.sin(9 * theta + w[2])
        out: np.ndarray = np.sqrt(dx**2 + dy**2) / edge
        return out

    def blur_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        s = self.spec
        f = np.sin(x / s.width * 5 + self.focus_phase[0]) * np.cos(y / s.height * 4 + self.focus_phase[1])
        out: np.ndarray = np.maximum(0.4, 1.2 + 1.1 * f) * self.um * 0.5
        return out

    def stain_at(self, x: float, y: float) -> float:
        s = self.spec
        phase = self.stain_phase
        return 1 + 0.08 * math.sin(x / s.width * 3 + phase[0]) * math.cos(y / s.height * 2.5 + phase[1])

    def in_smear(self, rng: np.random.Generator, n: int) -> np.ndarray:
        r = np.sqrt(rng.uniform(0, 1, n)) * 0.9
        t = rng.uniform(0, 2 * math.pi, n)
        return np.stack([self.cx0 + self.ax * r * np.cos(t), self.cy0 + self.ay * r * np.sin(t)], axis=1)

    # ------------------------------------------------------------------ targets

    def _cell(
        self, rng: np.random.Generator, kind: int, x: float, y: float, radius_um: float, elong: float,
        nucleus: float, lobes: int,
    ) -> np.ndarray:
        cell = np.zeros((), CELL_DTYPE)
        r = radius_um * self.um
        cell["kind"], cell["cx"], cell["cy"], cell["rx"], cell["ry"] = kind, x, y, r, r * elong
        cell["angle"], cell["nucleus"], cell["lobes"] = rng.uniform(0, math.pi), nucleus, lobes
        cell["tone"] = rng.uniform(0.85, 1.15)
        cell["blur"] = float(self.blur_at(np.array(x), np.array(y)))
        cell["phase"] = rng.uniform(0, 2 * math.pi)
        return cell

    def _place_targets(self, rng: np.random.Generator) -> np.ndarray:
        spec, um = self.spec, self.um
        cells: list[np.ndarray] = []
        occupied: list[tuple[float, float, float]] = []  # centre and radius, level-0 px

        def clear(x: float, y: float, r: float) -> bool:
            gap = TARGET_GAP_UM * um
            return all((x - ox) ** 2 + (y - oy) ** 2 > (r + orr + gap) ** 2 for ox, oy, orr in occupied)

        singles = 0
        for x, y in self.in_smear(rng, max(spec.ctc * 20, 1)):
            if singles >= spec.ctc:
                break
            radius = rng.uniform(8, 12.5)
            if not clear(x, y, radius * um):
                continue
            cell = self._cell(rng, CTC, x, y, radius, rng.uniform(0.8, 1.0), rng.uniform(0.6, 0.75), 1)
            cells.append(cell)
            occupied.append((x, y, radius * um))
            self._add_target(0, [cell])
            singles += 1
        clusters = 0
        for x, y in self.in_smear(rng, max(spec.ctm * 30, 1)):
            if clusters >= spec.ctm:
                break
            n = int(rng.integers(2, 9))
            radius = rng.uniform(7, 10)
            reach = MAX_CLUSTER_SPAN_UM / 2 * um
            if not clear(x, y, reach):
                continue
            members = [self._cell(rng, CTC, x, y, radius * rng.uniform(0.9, 1.1), rng.uniform(0.85, 1.0),
                                  rng.uniform(0.6, 0.7), 1)]
            for _ in range(4 * n):
                if len(members) >= n:
                    break
                base = members[int(rng.integers(0, len(members)))]
                theta = rng.uniform(0, 2 * math.pi)
                mx = float(base["cx"]) + math.cos(theta) * radius * um * 1.7
                my = float(base["cy"]) + math.sin(theta) * radius * um * 1.7
                r_member = radius * rng.uniform(0.9, 1.1)
                if math.hypot(mx - x, my - y) + r_member * um > reach:
                    continue
                if any((mx - m["cx"]) ** 2 + (my - m["cy"]) ** 2 < (radius * um * 1.5) ** 2 for m in members):
                    continue
                members.append(self._cell(rng, CTC, mx, my, r_member, rng.uniform(0.85, 1.0), rng.uniform(0.6, 0.7), 1))
            if len(members) < 2:
                continue
            cells.extend(members)
            occupied.append((x, y, reach))
            for m in members:
                self._add_target(0, [m])
            self._add_target(1, members)
            clusters += 1
        return np.array(cells, CELL_DTYPE) if cells else np.zeros(0, CELL_DTYPE)

    def _add_target(self, cls: int, members: list[np.ndarray]) -> None:
        points = np.concatenate([_outline(m) for m in members])
        if len(members) > 1:
            points = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
        w, h = float(self.spec.width), float(self.spec.height)
        points[:, 0] = np.clip(points[:, 0], 0, w)
        points[:, 1] = np.clip(points[:, 1], 0, h)
        x0, y0 = points.min(axis=0)
        x1, y1 = points.max(axis=0)
        self.boxes.append((cls, float(x0), float(y0), float(x1), float(y1)))
        self.outlines.append([(float(px), float(py)) for px, py in points])

    # ------------------------------------------------------------------ background, per block

    def block(self, bx: int, by: int) -> np.ndarray:
        key = (bx, by)
        cached = self._blocks.get(key)
        if cached is not None:
            self._blocks.move_to_end(key)
            return cached
        cells = self._make_block(bx, by)
        self._blocks[key] = cells
        if len(self._blocks) > self._block_cache:
            self._blocks.popitem(last=False)
        return cells

    def _make_block(self, bx: int, by: int) -> np.ndarray:
        spec, um = self.spec, self.um
        rng = np.random.default_rng([spec.seed, 17, bx + 1, by + 1])
        area_mm2 = (BLOCK_L0 * spec.mpp / 1000) ** 2
        # kind, per mm², radius µm, elongation, nucleus share, lobes
        populations = (
            (WBC, spec.leukocytes_per_mm2, (4.5, 6.5), (0.8, 1.0), (0.5, 0.6), (1, 4)),
            (RBC, spec.red_cells_per_mm2, (3.3, 4.2), (0.85, 1.0), (0.0, 0.0), (1, 2)),
            (DEBRIS, spec.hard_negatives_per_mm2 / 2, (3.0, 9.0), (0.5, 1.0), (0.0, 0.0), (1, 2)),
            (LOOKALIKE, spec.hard_negatives_per_mm2 / 2, (7.0, 9.5), (0.8, 1.0), (0.45, 0.6), (1, 3)),
        )
        parts = []
        for kind, density, radius, elong, nucleus, lobes in populations:
            n = int(rng.poisson(density * area_mm2))
            part = np.zeros(n, CELL_DTYPE)
            part["kind"] = kind
            part["cx"] = bx * BLOCK_L0 + rng.uniform(0, BLOCK_L0, n)
            part["cy"] = by * BLOCK_L0 + rng.uniform(0, BLOCK_L0, n)
            r = rng.uniform(*radius, n) * um
            part["rx"], part["ry"] = r, r * rng.uniform(*elong, n)
            part["angle"] = rng.uniform(0, math.pi, n)
            part["nucleus"] = rng.uniform(*nucleus, n)
            part["lobes"] = rng.integers(*lobes, n)
            part["tone"] = rng.uniform(0.85, 1.15, n)
            part["phase"] = rng.uniform(0, 2 * math.pi, n)
            parts.append(part)
        cells = np.concatenate(parts)
        cells = cells[self.smear_radius(cells["cx"], cells["cy"]) < 0.97]
        cells["blur"] = self.blur_at(cells["cx"], cells["cy"])
        if self._target_tree is not None and len(cells):
            reach = MAX_CLUSTER_SPAN_UM * um
            near = self._target_tree.query_ball_point(np.stack([cells["cx"], cells["cy"]], 1), reach)
            keep = np.ones(len(cells), bool)
            t = self.targets
            for i, idx in enumerate(near):
                if idx:
                    d = np.hypot(t["cx"][idx] - cells["cx"][i], t["cy"][idx] - cells["cy"][i])
                    keep[i] = bool(np.all(d > t["rx"][idx] + cells["rx"][i] + 3 * um))
            cells = cells[keep]
        if len(cells) > 1:
            tree = cKDTree(np.stack([cells["cx"], cells["cy"]], 1))
            pairs = tree.query_pairs(2 * float(cells["rx"].max()), output_type="ndarray")
            if len(pairs):
                d = np.hypot(cells["cx"][pairs[:, 0]] - cells["cx"][pairs[:, 1]],
                             cells["cy"][pairs[:, 0]] - cells["cy"][pairs[:, 1]])
                clash = pairs[d < 0.9 * (cells["rx"][pairs[:, 0]] + cells["rx"][pairs[:, 1]])]
                dropped: set[int] = set()
                for i, j in sorted(map(tuple, np.sort(clash, axis=1).tolist()), key=lambda p: (p[1], p[0])):
                    if i not in dropped:
                        dropped.add(j)
                cells = np.delete(cells, sorted(dropped))
        return cells

    # ------------------------------------------------------------------ rendering

    def cells_near(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        margin = 16 * self.um
        parts = []
        for by in range(max(int((y0 - margin) // BLOCK_L0), 0), int((y1 + margin) // BLOCK_L0) + 1):
            for bx in range(max(int((x0 - margin) // BLOCK_L0), 0), int((x1 + margin) // BLOCK_L0) + 1):
                parts.append(self.block(bx, by))
        parts.append(self.targets)
        cells = np.concatenate(parts)
        reach = np.maximum(cells["rx"], cells["ry"]) + 3 * cells["blur"]
        cx, cy = cells["cx"], cells["cy"]
        inside = (cx + reach > x0) & (cx - reach < x1) & (cy + reach > y0) & (cy - reach < y1)
        near: np.ndarray = cells[inside]
        return near

    def level0_tiles(self) -> Iterator[np.ndarray]:
        spec = self.spec
        t = spec.tile
        yy, xx = np.mgrid[0:t, 0:t].astype(np.float32)
        low = 16  # the smear tint is smooth: computed on a coarse grid and scaled up
        for ty in range(math.ceil(spec.height / t)):
            for tx in range(math.ceil(spec.width / t)):
                x0, y0 = tx * t, ty * t
                gy, gx = np.mgrid[0 : t : t // low, 0 : t : t // low].astype(np.float64)
                radius = self.smear_radius(x0 + gx, y0 + gy)
                soft = 150 * self.um / min(self.ax, self.ay)
                cover = cv2.resize((1 / (1 + np.exp((radius - 1) / soft))).astype(np.float32), (t, t))[..., None]
                pal = self.palette
                tile = pal.glass * (1 - cover) + pal.smear * cover
                tile += self.noise_bank[(tx * 7 + ty * 13) % len(self.noise_bank)] * pal.noise
                stain = self.stain_at(x0 + t / 2, y0 + t / 2)
                for cell in self.cells_near(x0, y0, x0 + t, y0 + t):
                    _draw(tile, cell, pal, x0, y0, xx, yy, stain)
                yield np.clip(tile, 0, 255).astype(np.uint8)


def _outline(cell: np.ndarray) -> np.ndarray:
    """The cell's edge (its 50 % contour) as level-0 points."""
    t = np.linspace(0, 2 * math.pi, OUTLINE_POINTS, endpoint=False)
    ca, sa = math.cos(float(cell["angle"])), math.sin(float(cell["angle"]))
    u, v = float(cell["rx"]) * np.cos(t), float(cell["ry"]) * np.sin(t)
    return np.stack([float(cell["cx"]) + u * ca - v * sa, float(cell["cy"]) + u * sa + v * ca], 1)


def _palette(mode: Mode, rng: np.random.Generator) -> _Palette:
    jitter = rng.uniform(0.92, 1.08, 3)

    def c(*rgb: float) -> np.ndarray:
        return np.clip(np.array(rgb, np.float32) * jitter, 0, 255).astype(np.float32)

    if mode == "brightfield":
        return _Palette(
            glass=c(242, 236, 240),
            smear=c(234, 222, 230),
            noise=4.0,
            colours=(
                (c(175, 140, 200), c(62, 34, 112)),  # CTC: large, big dark granular nucleus
                (c(214, 196, 222), c(88, 54, 140)),  # leukocyte: lobed nucleus
                (c(225, 150, 165), c(240, 190, 200)),  # red cell: pale centre
                (c(160, 120, 170), c(160, 120, 170)),  # debris
                (c(212, 190, 220), c(110, 80, 160)),  # look-alike: large mononuclear, paler
            ),
            additive=False,
        )
    return _Palette(
        glass=c(4, 5, 7),
        smear=c(9, 11, 14),
        noise=3.0,
        colours=(
            (c(10, 190, 20), c(30, 60, 230)),  # CTC: CK+ cytoplasm, DAPI+ nucleus
            (c(190, 15, 15), c(30, 50, 220)),  # leukocyte: CD45+ rim, DAPI+ nucleus
            (c(0, 0, 0), c(0, 0, 0)),  # red cell: not stained
            (c(20, 170, 25), c(0, 0, 0)),  # debris: CK+ without nucleus
            (c(170, 60, 20), c(35, 60, 215)),  # look-alike: CD45+ with CK bleed-through
        ),
        additive=True,
    )


def _draw(
    tile: np.ndarray, cell: np.ndarray, palette: _Palette, ox: float, oy: float, xx: np.ndarray, yy: np.ndarray,
    stain: float,
) -> None:
    cx, cy = float(cell["cx"]) - ox, float(cell["cy"]) - oy
    rx, ry = max(float(cell["rx"]), 0.5), max(float(cell["ry"]), 0.5)
    soft = max(float(cell["blur"]), 0.3)
    reach = max(rx, ry) + 3 * soft
    t = tile.shape[0]
    x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, t)
    y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, t)
    if x0 >= x1 or y0 >= y1:
        return
    kind = int(cell["kind"])
    angle, phase = float(cell["angle"]), float(cell["phase"])
    dx, dy = xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy
    ca, sa = math.cos(angle), math.sin(angle)
    u, v = dx * ca + dy * sa, -dx * sa + dy * ca
    dist = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    scale = min(rx, ry)
    body = _soft_step((1 - dist) * scale / soft)
    cyto, nuc = palette.colours[kind]
    tone = float(cell["tone"]) * stain
    region = tile[y0:y1, x0:x1]
    layers = [(body, cyto)]
    nucleus, lobes = float(cell["nucleus"]), int(cell["lobes"])
    if nucleus > 0:
        theta = np.arctan2(v, u)
        wobble = 1 + (0.14 * np.sin(lobes * theta + phase) if lobes > 1 else 0.08 * np.sin(3 * theta + phase))
        ndist = dist / (nucleus * wobble)
        alpha = _soft_step((1 - ndist) * scale * nucleus / soft)
        if kind == CTC:  # granular chromatin and a nucleolus
            grain = 0.88 + 0.12 * np.sin(u * 1.3 + phase) * np.sin(v * 1.1 - phase)
            nucleolus = _soft_step((0.22 * scale - np.hypot(u - 0.2 * rx * math.cos(phase), v)) / soft)
            alpha = alpha * grain + 0.25 * nucleolus * alpha
        layers.append((alpha, nuc))
    elif kind == RBC:
        layers.append((_soft_step((0.45 - dist) * scale / soft) * 0.6, nuc))
    for alpha, colour in layers:
        a = (np.clip(alpha, 0, 1) * min(tone, 1.0))[..., None]
        if palette.additive:
            region += a * colour * tone
        else:
            region *= 1 - a
            region += a * np.minimum(colour * tone, 255)


def _soft_step(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1 / (1 + np.exp(-np.clip(x, -30, 30) * 1.7))
    return out
