"""Figures of the report: arrays and findings in, PNG files out (matplotlib's object API, no global state).

Slides: the overview with the tissue outline and every detection, a heat map of CTC density per mm² of
tissue, zoomed crops of the most confident detections. MRI: key slices through each lesion with its outline,
a chart of the classifier's radiomics features, a gauge of the probability of malignancy. Each function
writes one PNG and returns the :class:`Figure` that the document shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.patches import Circle, Rectangle, Wedge

from reports.findings import Detection, Lesion

DPI = 110
CLASS_COLOURS = {"CTC": "#e62828", "CTM": "#fa9600"}
OTHER_COLOUR = "#3c78d8"
LESION_COLOURS = ("#ff3b30", "#ffcc00", "#34c759", "#0a84ff", "#bf5af2", "#ff9f0a")
HEATMAP_CELLS = 24  # grid cells along the longer side of the slide
MIN_TISSUE_SHARE = 0.1  # heat-map cells with less tissue are left blank (density would be noise)

RgbImage = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Figure:
    """A written figure: ``file`` relative to the result folder, a title and a caption for the reader."""

    file: str
    title: str
    caption: str
    layout: str = "full"  # "full" page width, or "half" (two figures side by side)


def _save(fig: MplFigure, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(target, dpi=DPI, facecolor="white")


def _relative(target: Path, root: Path) -> str:
    return target.relative_to(root).as_posix()


# ------------------------------------------------------------------------------------------ slides


@dataclass(frozen=True)
class SlideView:
    """What the slide figures draw on: an overview image, its scale to level 0, the tissue mask on it."""

    rgb: RgbImage  # (h, w, 3)
    l0_per_px: tuple[float, float]  # level-0 pixels per overview pixel, x and y
    tissue: npt.NDArray[np.bool_] | None = None  # (h, w), same grid as ``rgb``
    mpp_um: tuple[float, float] | None = None  # level-0 µm per pixel, x and y

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.rgb.shape[1]), int(self.rgb.shape[0]))


def slide_overview(target: Path, root: Path, view: SlideView, detections: Sequence[Detection]) -> Figure:
    """The slide with the tissue outline (blue) and a ring on every detection (CTC red, CTM orange)."""
    w, h = view.size
    fig = MplFigure(figsize=(7.0, 7.0 * h / max(w, 1) + 0.6))
    ax = fig.add_axes((0.01, 0.08, 0.98, 0.9))
    ax.imshow(view.rgb, interpolation="lanczos")
    if view.tissue is not None and view.tissue.any():
        ax.contour(view.tissue.astype(float), levels=[0.5], colors=["#1f77ff"], linewidths=0.9)
    sx, sy = view.l0_per_px
    counts: dict[str, int] = {}
    for cls in sorted({d.cls for d in detections}):
        members = [d for d in detections if d.cls == cls]
        counts[cls] = len(members)
        centres = np.array([d.l0_centre for d in members]) / np.array([sx, sy])
        ax.scatter(centres[:, 0], centres[:, 1], s=160 if cls == "CTM" else 70, facecolors="none",
                   edgecolors=CLASS_COLOURS.get(cls, OTHER_COLOUR), linewidths=1.4 if cls == "CTM" else 1.0)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    _scale_bar(ax, view)
    ax.set_axis_off()
    legend = "   ".join(f"{cls}: {n}" for cls, n in sorted(counts.items())) or "no detections"
    fig.text(0.5, 0.03, f"Tissue outline in blue; {legend} (CTC red rings, CTM orange)", ha="center", fontsize=9)
    _save(fig, target)
    return Figure(_relative(target, root), "Slide overview",
                  "The analysed slide with the tissue the model looked at (blue outline) and every detection.",
                  "half")


def _scale_bar(ax: Axes, view: SlideView) -> None:
    if view.mpp_um is None:
        return
    w, h = view.size
    um_per_px = view.mpp_um[0] * view.l0_per_px[0]
    target_um = um_per_px * w / 5
    nice = 10 ** math.floor(math.log10(target_um))
    length_um = max(v * nice for v in (1, 2, 5) if v * nice <= target_um)
    length_px = length_um / um_per_px
    x0, y0 = w * 0.04, h * 0.95
    ax.add_patch(Rectangle((x0, y0), length_px, max(h * 0.008, 1.5), color="black"))
    label = f"{length_um / 1000:g} mm" if length_um >= 1000 else f"{length_um:g} µm"
    ax.text(x0, y0 - h * 0.015, label, fontsize=8, color="black",
            bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1})


def density_heatmap(target: Path, root: Path, view: SlideView, detections: Sequence[Detection]) -> Figure:
    """CTCs per mm² of tissue on a coarse grid over the slide (counts per cell when µm/px is unknown)."""
    w, h = view.size
    cell = max(w, h) / HEATMAP_CELLS
    nx, ny = max(1, math.ceil(w / cell)), max(1, math.ceil(h / cell))
    sx, sy = view.l0_per_px
    centres = np.array([d.l0_centre for d in detections if d.cls == "CTC"], dtype=np.float64).reshape(-1, 2)
    cols = np.minimum((centres[:, 0] / sx / cell).astype(int), nx - 1)
    rows = np.minimum((centres[:, 1] / sy / cell).astype(int), ny - 1)
    counts = np.zeros((ny, nx))
    np.add.at(counts, (rows, cols), 1)
    tissue = view.tissue if view.tissue is not None else np.ones((h, w), bool)
    share = np.zeros((ny, nx))
    for j in range(ny):
        for i in range(nx):
            block = tissue[int(j * cell): int((j + 1) * cell), int(i * cell): int((i + 1) * cell)]
            share[j, i] = float(block.mean()) if block.size else 0.0
    if view.mpp_um is not None:
        cell_mm2 = (cell * sx * view.mpp_um[0] / 1000) * (cell * sy * view.mpp_um[1] / 1000)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = counts / (share * cell_mm2)
        unit = "CTC per mm² of tissue"
    else:
        values, unit = counts, "CTC per grid cell (resolution unknown)"
    values = np.where(share >= MIN_TISSUE_SHARE, values, np.nan)
    fig = MplFigure(figsize=(7.0, 7.0 * h / max(w, 1) + 0.6))
    ax = fig.add_axes((0.01, 0.08, 0.86, 0.9))
    grey = view.rgb.astype(np.float32).mean(axis=2)
    ax.imshow(grey, cmap="gray", vmin=0, vmax=255, interpolation="lanczos")
    finite = values[np.isfinite(values)]
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    image = ax.imshow(values, cmap="YlOrRd", alpha=0.6, extent=(0, nx * cell, ny * cell, 0), vmin=0, vmax=vmax,
                      interpolation="nearest")
    if view.tissue is not None and view.tissue.any():
        ax.contour(view.tissue.astype(float), levels=[0.5], colors=["#1f77ff"], linewidths=0.8)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.01)
    bar.set_label(unit, fontsize=9)
    total = int(counts.sum())
    fig.text(0.45, 0.03, f"{total} CTC; cells with less than {MIN_TISSUE_SHARE:.0%} tissue left blank",
             ha="center", fontsize=9)
    _save(fig, target)
    return Figure(_relative(target, root), "CTC density",
                  "Where the circulating tumour cells are: CTCs per mm² of tissue in each grid cell.", "half")


@dataclass(frozen=True)
class Crop:
    """A detection's surroundings at full resolution, and its box in the crop's pixels (x0, y0, x1, y1)."""

    rgb: RgbImage
    detection: Detection
    box_px: tuple[float, float, float, float]


def detection_crops(target: Path, root: Path, crops: Sequence[Crop]) -> Figure:
    """The most confident detections at full resolution, each with its box."""
    columns = min(4, max(1, len(crops)))
    rows = max(1, math.ceil(len(crops) / columns))
    fig = MplFigure(figsize=(1.9 * columns, 2.1 * rows))
    for n, crop in enumerate(crops):
        d = crop.detection
        x0, y0, x1, y1 = crop.box_px
        ax = fig.add_subplot(rows, columns, n + 1)
        ax.imshow(crop.rgb, interpolation="lanczos")
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5,
                               color=CLASS_COLOURS.get(d.cls, OTHER_COLOUR)))
        ax.set_title(f"{n + 1}. {d.cls}  {d.confidence:.2f}", fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    _save(fig, target)
    return Figure(_relative(target, root), "Most confident detections",
                  "Zoomed views of the detections the model is surest of, with their boxes and confidences.")


# ------------------------------------------------------------------------------------------ MRI


@dataclass(frozen=True)
class KeySlice:
    """One MR slice through a lesion: the image plane, the label plane, which lesion it shows."""

    image: npt.NDArray[np.floating]  # (rows, columns)
    labels: npt.NDArray[np.integer]  # (rows, columns), lesion index per pixel
    lesion: int
    slice_index: int
    aspect: float = 1.0  # row spacing / column spacing


def mri_key_slices(target: Path, root: Path, slices: Sequence[KeySlice]) -> Figure:
    """Each key slice with every lesion's outline (the key lesion thicker) and a zoom on the lesion."""
    fig = MplFigure(figsize=(7.0, 3.3 * len(slices)))
    for row, key in enumerate(slices):
        lo, hi = np.percentile(key.image, [1, 99.5])
        zoom = _bounds(key.labels == key.lesion, margin=0.6)
        for col, window in enumerate((None, zoom)):
            ax = fig.add_subplot(len(slices), 2, 2 * row + col + 1)
            ax.imshow(key.image, cmap="gray", vmin=lo, vmax=hi, aspect=key.aspect, interpolation="bilinear")
            for index in np.unique(key.labels[key.labels > 0]):
                colour = LESION_COLOURS[(int(index) - 1) % len(LESION_COLOURS)]
                ax.contour((key.labels == index).astype(float), levels=[0.5], colors=[colour],
                           linewidths=2.0 if index == key.lesion else 1.0)
            if window is not None:
                (r0, r1), (c0, c1) = window
                ax.set_xlim(c0 - 0.5, c1 - 0.5)
                ax.set_ylim(r1 - 0.5, r0 - 0.5)
                ax.set_title(f"Lesion {key.lesion}, zoomed", fontsize=9)
            else:
                ax.set_title(f"Lesion {key.lesion}: slice {key.slice_index + 1}", fontsize=9)
            ax.set_axis_off()
    fig.tight_layout()
    _save(fig, target)
    return Figure(_relative(target, root), "Key slices",
                  "The slice through the largest cross-section of each lesion, outlined as segmented.")


def _bounds(mask: npt.NDArray[np.bool_], margin: float) -> tuple[tuple[int, int], tuple[int, int]] | None:
    if not mask.any():
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    size = max(rows[-1] - rows[0], cols[-1] - cols[0], 8) * (1 + margin)
    cr, cc = (rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2
    half = size / 2
    return ((int(cr - half), int(cr + half) + 1), (int(cc - half), int(cc + half) + 1))


def radiomics_chart(target: Path, root: Path, lesions: Sequence[Lesion]) -> Figure:
    """The classifier's radiomics features per lesion as bars (symmetric log scale: features differ by
    orders of magnitude)."""
    names = sorted({name for les in lesions for name in les.features})
    shown = [les for les in lesions if les.features]
    fig = MplFigure(figsize=(7.0, 1.3 + 0.3 * len(names) * max(1, len(shown)) ** 0.5), layout="constrained")
    ax = fig.add_subplot()
    height = 0.8 / max(1, len(shown))
    y = np.arange(len(names))
    for n, les in enumerate(shown):
        values = [les.features.get(name, np.nan) for name in names]
        ax.barh(y + n * height - 0.4 + height / 2, values, height=height, label=les.name,
                color=LESION_COLOURS[(les.index - 1) % len(LESION_COLOURS)])
    ax.set_yticks(y)
    ax.set_yticklabels([_short(name) for name in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=1.0)
    ax.axvline(0, color="black", lw=0.6)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel("feature value (symmetric log scale)", fontsize=8)
    if len(shown) > 1:
        ax.legend(fontsize=8, loc="lower right")
    _save(fig, target)
    return Figure(_relative(target, root), "Radiomics features",
                  "The texture and shape features the classifier weighs, per lesion.")


def _short(name: str) -> str:
    image, _, rest = name.partition("_")
    return rest.replace("_", " ") if image == "original" else f"{rest.replace('_', ' ')} ({image})"


def probability_gauges(target: Path, root: Path, items: Sequence[tuple[str, float, str]], title: str,
                       caption: str) -> Figure:
    """One semicircular gauge per item (label, value in [0, 1], verdict), green to red."""
    fig = MplFigure(figsize=(min(7.0, 2.4 * max(1, len(items))), 2.0))
    for n, (label, value, verdict) in enumerate(items):
        ax = fig.add_subplot(1, max(1, len(items)), n + 1)
        _gauge(ax, value, label, verdict)
    fig.tight_layout()
    _save(fig, target)
    return Figure(_relative(target, root), title, caption)


def _gauge(ax: Axes, value: float, label: str, verdict: str) -> None:
    value = min(max(value, 0.0), 1.0)
    for start, end, colour in ((0.0, 0.3, "#34c759"), (0.3, 0.6, "#ffcc00"), (0.6, 1.0, "#ff3b30")):
        ax.add_patch(Wedge((0, 0), 1.0, 180 - end * 180, 180 - start * 180, width=0.3, color=colour, alpha=0.85))
    angle = math.pi * (1 - value)
    ax.plot([0, 0.8 * math.cos(angle)], [0, 0.8 * math.sin(angle)], color="black", lw=2.2)
    ax.add_patch(Circle((0, 0), 0.06, color="black"))
    ax.text(0, -0.22, f"{value:.2f}", ha="center", fontsize=12, weight="bold")
    ax.text(0, -0.45, f"{label}: {verdict}" if verdict else label, ha="center", fontsize=8)
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-0.55, 1.1)
    ax.set_aspect("equal")
    ax.set_axis_off()
