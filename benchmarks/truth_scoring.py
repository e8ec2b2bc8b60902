"""Slide-wide detections scored against a generated slide's truth, for the benchmarks (not a test).

Detections are ``(k, 6)`` arrays x0, y0, x1, y1, confidence, class in level-0 pixels; truth is ``(n, 5)`` class,
x0, y0, x1, y1 (:class:`pipelines.synthetic.slides.SlideTruth` boxes).

* Recall and precision per class: one-to-one matching at IoU ≥ 0.5, greedy in falling confidence, as
  :func:`pipelines.wsi.evaluation.match` scores a tile.
* Duplicates: every detection is assigned to the truth object of its class that covers most of it (at least
  ``INSIDE`` of the detection's area); an object with ``n`` detections assigned has ``n - 1`` duplicates. This
  counts the second whole box of one cell and the cut part of it that a neighbouring tile saw, which
  matching by IoU alone would call a false positive.
* At seams: an object whose truth box crosses an inner edge of the tiling (a tile side that is not the slide's
  border) lies on a seam; duplicates are reported for those objects and for all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.wsi.evaluation import match

INSIDE = 0.5  # a detection this much inside a truth box belongs to that object


@dataclass(frozen=True)
class ClassScore:
    objects: int
    detections: int
    matched: int  # one-to-one at IoU 0.5
    duplicates: int
    seam_objects: int
    seam_duplicates: int

    @property
    def recall(self) -> float:
        return self.matched / self.objects if self.objects else 0.0

    @property
    def precision(self) -> float:
        return self.matched / self.detections if self.detections else 0.0


def inner_edges(starts: Iterable[float], tile: float, extent: float) -> np.ndarray:
    """The tile sides along one axis that are not the slide's border: every start but 0, every end before
    ``extent``."""
    edges = {float(s) for s in starts if s > 0} | {float(s) + tile for s in starts if s + tile < extent}
    return np.array(sorted(edges), dtype=float)


def on_seam(truth: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: does each truth box (class, x0, y0, x1, y1) cross an inner tile edge."""
    def crosses(lo: np.ndarray, hi: np.ndarray, edges: np.ndarray) -> np.ndarray:
        if not len(edges):
            return np.zeros(len(lo), bool)
        out: np.ndarray = np.any((lo[:, None] < edges[None, :]) & (edges[None, :] < hi[:, None]), axis=1)
        return out

    seam: np.ndarray = crosses(truth[:, 1], truth[:, 3], x_edges) | crosses(truth[:, 2], truth[:, 4], y_edges)
    return seam


def owners(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(k,)`` index of the truth object (same class) covering most of each detection, or -1 for none."""
    if not len(pred) or not len(truth):
        return np.full(len(pred), -1)
    ix0 = np.maximum(pred[:, None, 0], truth[None, :, 1])
    iy0 = np.maximum(pred[:, None, 1], truth[None, :, 2])
    ix1 = np.minimum(pred[:, None, 2], truth[None, :, 3])
    iy1 = np.minimum(pred[:, None, 3], truth[None, :, 4])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = np.maximum((pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1]), 1e-9)
    inside = inter / area[:, None] * (pred[:, None, 5] == truth[None, :, 0])
    best = inside.argmax(1)
    found: np.ndarray = np.where(inside[np.arange(len(pred)), best] >= INSIDE, best, -1)
    return found


def _matched(pred: np.ndarray, truth: np.ndarray) -> int:
    order = np.argsort(-pred[:, 4], kind="stable")
    return int(match(pred[order], truth)[:, 0].sum())


def score(pred: np.ndarray, truth: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray,
          classes: Sequence[str]) -> dict[str, ClassScore]:
    """Per class name: objects, detections, matches, duplicates (all, and of objects on a seam)."""
    pred = pred.reshape(-1, 6)
    truth = truth.reshape(-1, 5)
    seam = on_seam(truth, x_edges, y_edges)
    per_object = np.bincount(owners(pred, truth) + 1, minlength=len(truth) + 1)[1:]
    extra = np.maximum(per_object - 1, 0)
    out = {}
    for c, name in enumerate(classes):
        p, t = pred[pred[:, 5] == c], truth[truth[:, 0] == c]
        of_class = truth[:, 0] == c
        out[name] = ClassScore(
            objects=len(t),
            detections=len(p),
            matched=_matched(p, t),
            duplicates=int(extra[of_class].sum()),
            seam_objects=int((seam & of_class).sum()),
            seam_duplicates=int(extra[seam & of_class].sum()),
        )
    return out
