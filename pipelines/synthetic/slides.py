"""Generated whole-slide images as real pyramidal tiled TIFF files (openslide's generic-tiff format).

Cells are placed first (with ground-truth boxes in level-0 pixels), then every pyramid level is rendered
tile by tile from that list, so memory stays bounded whatever the slide size. Two modes, as CTC labs image
them:

* ``brightfield``: a cytology stain on a pale background; leukocytes with dark lobed nuclei, red cells,
  and tumour cells larger with big irregular nuclei (high nucleus/cytoplasm ratio).
* ``fluorescence``: an RGB composite of CD45 (red), CK (green) and DAPI (blue) on black, the CellSearch
  convention: a CTC is DAPI+ CK+ CD45−, a leukocyte DAPI+ CD45+ CK−; CK+ debris without a nucleus and
  large CD45+ cells are the hard negatives.

CTM clusters are groups of 2–8 touching CTCs; each member is also a CTC in the ground truth.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile

Mode = Literal["brightfield", "fluorescence"]
CLASS_NAMES = ("CTC", "CTM")


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
    tissue_fraction: float = 0.6  # share of the slide covered by the smear (an ellipse)
    tile: int = 512
    seed: int = 0


@dataclass(frozen=True)
class Cell:
    kind: str  # ctc, wbc, rbc, debris, lookalike
    cx: float
    cy: float
    rx: float
    ry: float
    angle: float
    nucleus: float  # nucleus radius as a share of the cell radius (0 = none)
    lobes: int
    tone: float  # stain intensity variation, ~1
    blur: float  # edge softness in level-0 pixels (focus)


@dataclass
class SlideTruth:
    path: Path
    spec: SlideSpec
    boxes: list[tuple[int, float, float, float, float]] = field(default_factory=list)  # class, x0, y0, x1, y1

    def counts(self) -> dict[str, int]:
        return {name: sum(1 for b in self.boxes if b[0] == i) for i, name in enumerate(CLASS_NAMES)}

    def save(self, target: Path) -> None:
        doc = {
            "slide": self.path.name,
            "spec": asdict(self.spec),
            "classes": list(CLASS_NAMES),
            "counts": self.counts(),
            "boxes": [
                {"class": CLASS_NAMES[c], "x0": x0, "y0": y0, "x1": x1, "y1": y1} for c, x0, y0, x1, y1 in self.boxes
            ],
        }
        target.write_text(json.dumps(doc, indent=1), encoding="utf-8")


def write_slide(path: Path, spec: SlideSpec = SlideSpec()) -> SlideTruth:
    """Write a pyramidal TIFF at ``path`` and its ground truth beside it (``<name>.truth.json``)."""
    rng = np.random.default_rng(spec.seed)
    cells, boxes = _place_cells(spec, rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    palette = _palette(spec.mode, rng)
    with tifffile.TiffWriter(path, bigtiff=spec.width * spec.height * 3 > 2**31) as tif:
        downsample = 1
        level = 0
        while True:
            w, h = math.ceil(spec.width / downsample), math.ceil(spec.height / downsample)
            res = 1e4 / (spec.mpp * downsample)
            tif.write(
                _tiles(spec, cells, palette, downsample, w, h, rng),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(spec.tile, spec.tile),
                photometric="rgb",
                compression="zlib",
                compressionargs={"level": 4},
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
                description=f"OncoAgent synthetic slide mode={spec.mode} seed={spec.seed}" if level == 0 else None,
                metadata=None,
            )
            if max(w, h) <= 2 * spec.tile:
                break
            downsample *= 4
            level += 1
    truth = SlideTruth(path, spec, boxes)
    truth.save(path.with_name(path.name + ".truth.json"))
    return truth


# ------------------------------------------------------------------------------------------ placement


def _place_cells(
    spec: SlideSpec, rng: np.random.Generator
) -> tuple[list[Cell], list[tuple[int, float, float, float, float]]]:
    um = 1 / spec.mpp  # level-0 pixels per µm
    cx0, cy0 = spec.width / 2, spec.height / 2
    ax, ay = (
        spec.width / 2 * math.sqrt(spec.tissue_fraction) * 1.05,
        spec.height / 2 * math.sqrt(spec.tissue_fraction) * 1.05,
    )
    area_mm2 = math.pi * ax * ay * (spec.mpp / 1000) ** 2
    focus_phase = rng.uniform(0, 2 * math.pi, 2)

    def in_smear(n: int) -> np.ndarray:
        r = np.sqrt(rng.uniform(0, 1, n)) * 0.97
        t = rng.uniform(0, 2 * math.pi, n)
        return np.stack([cx0 + ax * r * np.cos(t), cy0 + ay * r * np.sin(t)], axis=1)

    def blur_at(x: float, y: float) -> float:
        field_ = math.sin(x / spec.width * 5 + focus_phase[0]) * math.cos(y / spec.height * 4 + focus_phase[1])
        return max(0.4, 1.2 + 1.1 * field_) * um * 0.5

    cells: list[Cell] = []
    boxes: list[tuple[int, float, float, float, float]] = []
    occupied: list[tuple[float, float, float]] = []

    def add(kind: str, x: float, y: float, radius_um: float, elong: float, nucleus: float, lobes: int) -> Cell:
        r = radius_um * um
        cell = Cell(
            kind, x, y, r, r * elong, rng.uniform(0, math.pi), nucleus, lobes, rng.uniform(0.85, 1.15), blur_at(x, y)
        )
        cells.append(cell)
        return cell

    def box(cell: Cell, cls: int) -> None:
        ext_x = math.sqrt((cell.rx * math.cos(cell.angle)) ** 2 + (cell.ry * math.sin(cell.angle)) ** 2)
        ext_y = math.sqrt((cell.rx * math.sin(cell.angle)) ** 2 + (cell.ry * math.cos(cell.angle)) ** 2)
        boxes.append((cls, cell.cx - ext_x, cell.cy - ext_y, cell.cx + ext_x, cell.cy + ext_y))

    def free(x: float, y: float, r: float) -> bool:
        return all((x - ox) ** 2 + (y - oy) ** 2 > (r + orr) ** 2 for ox, oy, orr in occupied[-4000:])

    # Tumour cells first (never overlapping each other), then clusters, then the background population.
    for x, y in in_smear(spec.ctc * 3):
        if sum(1 for c in cells if c.kind == "ctc") >= spec.ctc:
            break
        radius = rng.uniform(8, 12.5)
        if not free(x, y, radius * um * 2):
            continue
        cell = add("ctc", x, y, radius, rng.uniform(0.8, 1.0), rng.uniform(0.6, 0.75), 1)
        occupied.append((x, y, radius * um * 1.2))
        box(cell, 0)
    placed = 0
    for x, y in in_smear(spec.ctm * 5):
        if placed >= spec.ctm:
            break
        n = int(rng.integers(2, 9))
        radius = rng.uniform(7, 10)
        span = radius * um * (1 + math.sqrt(n)) * 1.2
        if not free(x, y, span * 1.5):
            continue
        members: list[Cell] = []
        for k in range(n):
            if k == 0:
                mx, my = x, y
            else:
                base = members[int(rng.integers(0, len(members)))]
                theta = rng.uniform(0, 2 * math.pi)
                mx = base.cx + math.cos(theta) * radius * um * 1.7
                my = base.cy + math.sin(theta) * radius * um * 1.7
                if any((mx - m.cx) ** 2 + (my - m.cy) ** 2 < (radius * um * 1.5) ** 2 for m in members):
                    continue
            members.append(add("ctc", mx, my, radius * rng.uniform(0.9, 1.1), rng.uniform(0.85, 1.0), 0.65, 1))
        if len(members) < 2:
            cells[len(cells) - len(members) :] = []
            continue
        for m in members:
            box(m, 0)
        x0 = min(m.cx - m.rx for m in members)
        y0 = min(m.cy - m.rx for m in members)
        x1 = max(m.cx + m.rx for m in members)
        y1 = max(m.cy + m.rx for m in members)
        boxes.append((1, x0, y0, x1, y1))
        occupied.append(((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * 0.7))
        placed += 1

    def scatter(kind: str, per_mm2: float, radius: tuple[float, float], nucleus: float, lobes: tuple[int, int]) -> None:
        for x, y in in_smear(int(per_mm2 * area_mm2)):
            r = rng.uniform(*radius)
            if not free(x, y, r * um):
                continue
            add(kind, x, y, r, rng.uniform(0.8, 1.0), nucleus, int(rng.integers(*lobes)))

    scatter("wbc", spec.leukocytes_per_mm2, (4.5, 6.5), 0.55, (1, 4))
    scatter("rbc", spec.red_cells_per_mm2, (3.3, 4.2), 0.0, (1, 2))
    scatter("debris", spec.hard_negatives_per_mm2 / 2, (3.0, 9.0), 0.0, (1, 2))
    scatter("lookalike", spec.hard_negatives_per_mm2 / 2, (7.0, 9.5), 0.6, (1, 3))
    boxes = [
        (c, max(0.0, x0), max(0.0, y0), min(float(spec.width), x1), min(float(spec.height), y1))
        for c, x0, y0, x1, y1 in boxes
    ]
    return cells, boxes


# ------------------------------------------------------------------------------------------ rendering


@dataclass(frozen=True)
class _Palette:
    background: np.ndarray
    noise: float
    colours: dict[str, tuple[np.ndarray, np.ndarray]]  # kind -> (cytoplasm RGB, nucleus RGB)
    additive: bool  # fluorescence adds light on black; brightfield absorbs (multiplies)


def _palette(mode: Mode, rng: np.random.Generator) -> _Palette:
    jitter = rng.uniform(0.92, 1.08, 3)
    if mode == "brightfield":

        def c(*rgb: float) -> np.ndarray:
            return np.clip(np.array(rgb) * jitter, 0, 255)

        return _Palette(
            background=c(238, 228, 234),
            noise=4.0,
            colours={
                "ctc": (c(175, 140, 200), c(70, 40, 120)),
                "wbc": (c(222, 205, 225), c(95, 60, 145)),
                "rbc": (c(225, 150, 165), c(240, 190, 200)),
                "debris": (c(160, 120, 170), c(160, 120, 170)),
                "lookalike": (c(205, 180, 215), c(100, 70, 150)),
            },
            additive=False,
        )

    def f(*rgb: float) -> np.ndarray:
        return np.clip(np.array(rgb) * jitter, 0, 255)

    return _Palette(
        background=f(6, 8, 10),
        noise=3.0,
        colours={
            "ctc": (f(10, 190, 20), f(30, 60, 230)),  # CK+ cytoplasm, DAPI+ nucleus
            "wbc": (f(190, 15, 15), f(30, 50, 220)),  # CD45+ rim, DAPI+ nucleus
            "rbc": (f(0, 0, 0), f(0, 0, 0)),  # not stained
            "debris": (f(20, 170, 25), f(0, 0, 0)),  # CK+ without nucleus
            "lookalike": (f(170, 60, 20), f(35, 60, 215)),  # CD45+ with CK bleed-through
        },
        additive=True,
    )


def _tiles(
    spec: SlideSpec, cells: list[Cell], palette: _Palette, downsample: int, w: int, h: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    t = spec.tile
    buckets: dict[tuple[int, int], list[Cell]] = defaultdict(list)
    span = t * downsample
    for cell in cells:
        r = max(cell.rx, cell.ry) + 3 * cell.blur
        for ty in range(int((cell.cy - r) // span), int((cell.cy + r) // span) + 1):
            for tx in range(int((cell.cx - r) // span), int((cell.cx + r) // span) + 1):
                buckets[(tx, ty)].append(cell)
    noise_bank = [rng.normal(0, palette.noise, (t, t, 1)).astype(np.float32) for _ in range(8)]
    yy, xx = np.mgrid[0:t, 0:t].astype(np.float32)
    for ty in range(math.ceil(h / t)):
        for tx in range(math.ceil(w / t)):
            tile = np.empty((t, t, 3), np.float32)
            tile[:] = palette.background
            tile += noise_bank[(tx * 7 + ty * 13) % len(noise_bank)]
            for cell in buckets.get((tx, ty), ()):
                _draw(tile, cell, palette, downsample, tx * t, ty * t, xx, yy)
            yield np.clip(tile, 0, 255).astype(np.uint8)


def _draw(
    tile: np.ndarray, cell: Cell, palette: _Palette, ds: int, ox: int, oy: int, xx: np.ndarray, yy: np.ndarray
) -> None:
    cx, cy = cell.cx / ds - ox, cell.cy / ds - oy
    rx, ry = max(cell.rx / ds, 0.5), max(cell.ry / ds, 0.5)
    soft = max(cell.blur / ds, 0.3)
    reach = max(rx, ry) + 3 * soft
    t = tile.shape[0]
    x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, t)
    y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, t)
    if x0 >= x1 or y0 >= y1:
        return
    dx, dy = xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy
    ca, sa = math.cos(cell.angle), math.sin(cell.angle)
    u, v = dx * ca + dy * sa, -dx * sa + dy * ca
    dist = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    scale = min(rx, ry)
    body = _soft_step((1 - dist) * scale / soft)
    cyto, nuc = palette.colours[cell.kind]
    region = tile[y0:y1, x0:x1]
    layers = [(body, cyto)]
    if cell.nucleus > 0:
        angle = np.arctan2(v, u)
        wobble = 1 + (0.18 * np.sin(cell.lobes * angle) if cell.lobes > 1 else 0.08 * np.sin(3 * angle + cell.angle))
        ndist = dist / (cell.nucleus * wobble)
        layers.append((_soft_step((1 - ndist) * scale * cell.nucleus / soft), nuc))
    elif cell.kind == "rbc":
        layers.append((_soft_step((0.45 - dist) * scale / soft) * 0.6, nuc))
    for alpha, colour in layers:
        a = (alpha * min(cell.tone, 1.0))[..., None]
        if palette.additive:
            region += a * colour * cell.tone
        else:
            region *= 1 - a
            region += a * np.minimum(colour * cell.tone, 255)


def _soft_step(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1 / (1 + np.exp(-np.clip(x, -30, 30) * 1.7))
    return out
