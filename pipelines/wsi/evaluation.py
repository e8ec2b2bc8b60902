"""Detector accuracy on a labelled split: mAP50, mAP50-95 and precision/recall/F1 against confidence.

Detections come from :class:`~pipelines.wsi.detector.Detector`, the same inference code the pipeline runs;
matching and average precision follow the COCO/ultralytics convention (greedy matching in descending
confidence at IoU 0.50, 0.55, …, 0.95; AP by 101-point interpolation of the precision envelope).

Two views are scored: the model's raw output, and what the pipeline reports, where CTMs are the model's
CTM boxes joined with groups of close CTCs (:func:`~pipelines.wsi.merge.combine_clusters`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipelines.wsi.dataset import load_rgb, read_label_boxes
from pipelines.wsi.detector import Detector
from pipelines.wsi.labels import CLASS_NAMES, CTC
from pipelines.wsi.merge import Detection, combine_clusters

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
EVAL_CONFIDENCE = 0.001  # keep nearly every detection; the curves choose the operating point
EVAL_NMS_IOU = 0.6


@dataclass(frozen=True)
class Evaluation:
    images: int
    objects: dict[str, int]
    map50: float
    map50_95: float
    ap50: dict[str, float]
    ap50_95: dict[str, float]
    best_confidence: float  # where the mean F1 over classes peaks on this split
    operating_confidence: float  # where precision, recall and F1 are read: chosen elsewhere, or best_confidence
    precision: dict[str, float]  # at operating_confidence
    recall: dict[str, float]
    f1: dict[str, float]
    confidence_grid: list[float]
    precision_curve: dict[str, list[float]]
    recall_curve: dict[str, list[float]]
    f1_curve: dict[str, list[float]]

    def headline(self) -> dict[str, float]:
        return {"mAP50": round(self.map50, 4), "mAP50-95": round(self.map50_95, 4),
                "operating_confidence": round(self.operating_confidence, 3),
                "mean_f1": round(float(np.mean(list(self.f1.values()))) if self.f1 else 0.0, 4)}

    def save(self, target: Path) -> None:
        target.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (n, 4) with every box in ``b`` (m, 4), x0 y0 x1 y1."""
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    out: np.ndarray = inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
    return out


def match(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(k, 10)`` bool: is each prediction (sorted by falling confidence) a true positive at each IoU."""
    correct = np.zeros((len(pred), len(IOU_THRESHOLDS)), bool)
    if not len(pred) or not len(truth):
        return correct
    iou = box_iou(truth[:, 1:5], pred[:, :4]) * (truth[:, None, 0] == pred[None, :, 5])
    claimed = np.zeros((len(truth), len(IOU_THRESHOLDS)), bool)
    for j in np.flatnonzero((iou >= IOU_THRESHOLDS[0]).any(0)):
        available = np.where(claimed, 0, iou[:, j, None])
        k = available.argmax(0)
        correct[j] = available[k, range(len(IOU_THRESHOLDS))] >= IOU_THRESHOLDS
        claimed[k, range(len(IOU_THRESHOLDS))] |= correct[j]
    return correct


@dataclass(frozen=True)
class ClusterRule:
    """CTCs at least ``min_confidence`` and at most ``distance_px`` apart form a CTM, as in the pipeline."""

    distance_px: float
    min_confidence: float


def with_clusters(pred: np.ndarray, rule: ClusterRule) -> np.ndarray:
    """Tile detections ``(k, 6)`` with CTMs joined from groups of close CTCs (weak CTCs kept, not grouped)."""
    dets = [Detection(int(c), float(s), float(x0), float(y0), float(x1), float(y1)) for x0, y0, x1, y1, s, c in pred]
    strong = [d for d in dets if d.cls != CTC or d.confidence >= rule.min_confidence]
    weak = [d for d in dets if d.cls == CTC and d.confidence < rule.min_confidence]
    combined = combine_clusters(strong, rule.distance_px, (1.0, 1.0)) + weak
    return np.array([[d.l0_x0, d.l0_y0, d.l0_x1, d.l0_y1, d.confidence, d.cls] for d in combined]).reshape(-1, 6)


Predictions = list[tuple[np.ndarray, np.ndarray]]  # per image: detections (k, 6) and truth (n, 5)


def predict_split(detector: Detector, images: list[Path], *, batch: int = 16) -> Predictions:
    """Run ``detector`` on ``images`` (YOLO layout, labels beside): raw detections with the ground truth."""
    pairs: Predictions = []
    for start in range(0, len(images), batch):
        paths = images[start : start + batch]
        arrays = [load_rgb(p) for p in paths]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, arr in enumerate(arrays):
            by_shape.setdefault(arr.shape, []).append(i)
        outputs: dict[int, np.ndarray] = {}
        for indices in by_shape.values():
            stacked = np.stack([arrays[i] for i in indices])
            for i, out in zip(indices, detector.predict(stacked, confidence=EVAL_CONFIDENCE, iou=EVAL_NMS_IOU),
                              strict=True):
                outputs[i] = out
        for i, path in enumerate(paths):
            h, w = arrays[i].shape[:2]
            pairs.append((outputs[i], read_label_boxes(path, w, h)))
    return pairs


Matched = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # per image: tp (k, 10), conf, class, true class


def match_image(raw: np.ndarray, truth: np.ndarray, clusters: ClusterRule | None = None) -> Matched:
    """One image's detections (grouped with ``clusters`` when given) matched against its truth."""
    pred = raw if clusters is None else with_clusters(raw, clusters)
    pred = pred[np.argsort(-pred[:, 4])]
    return match(pred, truth), pred[:, 4], pred[:, 5], truth[:, 0]


def score_matched(images: list[Matched], at_confidence: float | None = None) -> Evaluation:
    """Score images matched by :func:`match_image` (a bootstrap resamples these instead of matching again)."""
    def joined(i: int, empty: np.ndarray) -> np.ndarray:
        return np.concatenate([m[i] for m in images]) if images else empty

    return score(joined(0, np.zeros((0, 10), bool)), joined(1, np.zeros(0)), joined(2, np.zeros(0)),
                 joined(3, np.zeros(0)), len(images), at_confidence)


def score_predictions(pairs: Predictions, clusters: ClusterRule | None = None,
                      at_confidence: float | None = None) -> Evaluation:
    """Score raw detections, or what the pipeline makes of them with ``clusters`` grouping; precision, recall
    and F1 at ``at_confidence`` (an operating point chosen on other data), else at this split's best."""
    return score_matched([match_image(raw, truth, clusters) for raw, truth in pairs], at_confidence)


def evaluate(
    detector: Detector, images: list[Path], *, batch: int = 16, clusters: ClusterRule | None = None
) -> Evaluation:
    """Run ``detector`` on ``images`` and score it, with ``clusters`` grouping when given."""
    return score_predictions(predict_split(detector, images, batch=batch), clusters)


def score(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, true_cls: np.ndarray, images: int,
          at_confidence: float | None = None) -> Evaluation:
    from ultralytics.utils.metrics import ap_per_class

    names = dict(enumerate(CLASS_NAMES))
    objects = {name: int((true_cls == i).sum()) for i, name in names.items()}
    if not len(true_cls):
        raise ValueError("the split has no labelled objects to evaluate against")
    result = ap_per_class(tp, conf, pred_cls, true_cls, plot=False, names=names)
    _, _, _, _, _, ap, classes, p_curve, r_curve, f1_curve, grid, _ = result
    present = [names[int(c)] for c in classes]
    best = int(np.argmax(f1_curve.mean(0))) if len(classes) else 0
    at = best if at_confidence is None else int(np.argmin(np.abs(grid - at_confidence)))
    return Evaluation(
        images=images,
        objects=objects,
        map50=float(ap[:, 0].mean()) if len(classes) else 0.0,
        map50_95=float(ap.mean()) if len(classes) else 0.0,
        ap50={n: float(ap[i, 0]) for i, n in enumerate(present)},
        ap50_95={n: float(ap[i].mean()) for i, n in enumerate(present)},
        best_confidence=float(grid[best]),
        operating_confidence=float(grid[at]),
        precision={n: float(p_curve[i][at]) for i, n in enumerate(present)},
        recall={n: float(r_curve[i][at]) for i, n in enumerate(present)},
        f1={n: float(f1_curve[i][at]) for i, n in enumerate(present)},
        confidence_grid=[round(float(v), 4) for v in grid[::10]],
        precision_curve={n: [round(float(v), 4) for v in p_curve[i][::10]] for i, n in enumerate(present)},
        recall_curve={n: [round(float(v), 4) for v in r_curve[i][::10]] for i, n in enumerate(present)},
        f1_curve={n: [round(float(v), 4) for v in f1_curve[i][::10]] for i, n in enumerate(present)},
    )


def plot_curves(evaluation: Evaluation, target: Path) -> None:
    """Precision, recall and F1 against confidence, one panel each, every class plus the mean F1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4), dpi=100)
    grid = evaluation.confidence_grid
    for ax, title, curves in zip(
        axes,
        ("Precision", "Recall", "F1"),
        (evaluation.precision_curve, evaluation.recall_curve, evaluation.f1_curve),
        strict=True,
    ):
        for name, values in curves.items():
            ax.plot(grid, values, label=name)
        if title == "F1" and curves:
            ax.plot(grid, np.mean(list(curves.values()), axis=0), "k--", label="mean")
            ax.axvline(evaluation.operating_confidence, color="grey", lw=0.8)
        ax.set_xlabel("confidence")
        ax.set_title(f"{title} vs confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
    fig.suptitle(f"test split: mAP50 {evaluation.map50:.3f}, mAP50-95 {evaluation.map50_95:.3f}")
    fig.tight_layout()
    fig.savefig(target)
    plt.close(fig)
