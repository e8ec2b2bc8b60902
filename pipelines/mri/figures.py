"""Training figures as PNG: ROC curve, PCA and t-SNE of the classifier's feature space, a segmentation overlay.

matplotlib runs on its non-interactive Agg backend; every function writes one file and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

CLASS_COLOURS = {0: ("#1f77b4", "benign"), 1: ("#d62728", "malignant")}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_png(y_true: npt.NDArray[np.int_], probability: npt.NDArray[np.float64], path: Path, title: str) -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fpr, tpr, _ = roc_curve(y_true, probability)
    auc = roc_auc_score(y_true, probability)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, color="#d62728", lw=2, label=f"AUC {auc:.3f} (n={len(y_true)})")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)",
           xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _scatter(points: npt.NDArray[np.float64], y: npt.NDArray[np.int_], path: Path, title: str,
             axes: tuple[str, str]) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for value, (colour, name) in CLASS_COLOURS.items():
        chosen = y == value
        ax.scatter(points[chosen, 0], points[chosen, 1], s=12, c=colour, alpha=0.7, label=f"{name} ({chosen.sum()})")
    ax.set(xlabel=axes[0], ylabel=axes[1], title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pca_png(features: npt.NDArray[np.float64], y: npt.NDArray[np.int_], path: Path, title: str) -> Path:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2)
    points = pca.fit_transform(features)
    ratio = pca.explained_variance_ratio_
    return _scatter(points, y, path, title, (f"PC1 ({ratio[0]:.0%} of variance)", f"PC2 ({ratio[1]:.0%})"))


def tsne_png(features: npt.NDArray[np.float64], y: npt.NDArray[np.int_], path: Path, title: str,
             seed: int) -> Path:
    from sklearn.manifold import TSNE

    perplexity = float(max(2, min(30, (len(features) - 1) // 3)))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    return _scatter(points, y, path, title, ("t-SNE 1", "t-SNE 2"))


def overlay_png(image: npt.NDArray[Any], truth: npt.NDArray[Any], predicted: npt.NDArray[Any], path: Path,
                title: str) -> Path:
    """The slice with the most lesion voxels, with the true (green) and predicted (red) outlines."""
    plt = _pyplot()
    k = int(np.argmax((truth > 0).sum(axis=(1, 2)) + (predicted > 0).sum(axis=(1, 2))))
    fig, ax = plt.subplots(figsize=(5, 5))
    lo, hi = np.percentile(image[k], [1, 99.5])
    ax.imshow(image[k], cmap="gray", vmin=lo, vmax=hi)
    if np.any(truth[k] > 0):
        ax.contour(truth[k] > 0, levels=[0.5], colors="lime", linewidths=1)
    if np.any(predicted[k] > 0):
        ax.contour(predicted[k] > 0, levels=[0.5], colors="red", linewidths=1)
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
