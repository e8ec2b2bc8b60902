"""Figures of an evaluation report as PNG files: Bland–Altman, confusion matrix, Dice per case.

matplotlib's object API on the Agg canvas (no global pyplot state); each function writes one file and
returns its name. The detector's precision/recall/F1 curves come from :func:`pipelines.wsi.evaluation.plot_curves`
and the ROC curve from :func:`pipelines.mri.figures.roc_png`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipelines.evaluation.agreement import bland_altman

DPI = 100


def _save(fig: Figure, target: Path) -> str:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(target, dpi=DPI)
    return target.name


def bland_altman_png(method: npt.ArrayLike, truth: npt.ArrayLike, target: Path, title: str) -> str:
    """Difference (method − truth) against the mean of the two, with the bias and 95 % limits of agreement."""
    m, t = np.asarray(method, np.float64), np.asarray(truth, np.float64)
    a = bland_altman(m, t)
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    ax.scatter((m + t) / 2, m - t, s=22, color="#1f77b4", alpha=0.8)
    ax.axhline(a.bias, color="#d62728", lw=1.5, label=f"mean difference {a.bias:+.2f}")
    for value, name in ((a.lower, "lower"), (a.upper, "upper")):
        ax.axhline(value, color="grey", ls="--", lw=1, label=f"{name} limit {value:+.2f}")
    ax.axhline(0, color="black", lw=0.5)
    ax.set(xlabel="mean of OncoAgent and truth (count per slide)", ylabel="OncoAgent − truth", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, target)


def confusion_png(tp: int, fp: int, tn: int, fn: int, target: Path, title: str) -> str:
    matrix = np.array([[tn, fp], [fn, tp]])
    fig = Figure(figsize=(4.2, 3.8))
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black", fontsize=14)
    ax.set_xticks([0, 1], ["benign", "malignant"])
    ax.set_yticks([0, 1], ["benign", "malignant"])
    ax.set(xlabel="predicted", ylabel="truth", title=title)
    return _save(fig, target)


def per_case_png(names: Sequence[str], values: Sequence[float], target: Path, title: str, ylabel: str) -> str:
    fig = Figure(figsize=(max(5.0, 0.25 * len(names) + 2), 3.8))
    ax = fig.add_subplot()
    ax.bar(range(len(values)), values, color="#2ca02c")
    ax.axhline(float(np.mean(values)) if len(values) else 0.0, color="#d62728", lw=1, label="mean")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set(ylim=(0, 1.02), ylabel=ylabel, title=title)
    ax.legend(loc="lower right")
    return _save(fig, target)
