"""Binary classification figures: accuracy, sensitivity, specificity, ROC AUC and the ROC curve."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class BinaryMetrics:
    n: int
    accuracy: float
    sensitivity: float  # true positive rate (malignant called malignant)
    specificity: float  # true negative rate (benign called benign)
    auc: float
    tp: int
    fp: int
    tn: int
    fn: int
    threshold: float

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def binary_metrics(y_true: npt.NDArray[np.int_], probability: npt.NDArray[np.float64],
                   threshold: float = 0.5) -> BinaryMetrics:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true).astype(int)
    predicted = (np.asarray(probability) >= threshold).astype(int)
    tp = int(np.sum((predicted == 1) & (y == 1)))
    tn = int(np.sum((predicted == 0) & (y == 0)))
    fp = int(np.sum((predicted == 1) & (y == 0)))
    fn = int(np.sum((predicted == 0) & (y == 1)))
    auc = float(roc_auc_score(y, probability)) if 0 < y.sum() < len(y) else float("nan")
    return BinaryMetrics(
        n=len(y),
        accuracy=(tp + tn) / max(len(y), 1),
        sensitivity=tp / max(tp + fn, 1),
        specificity=tn / max(tn + fp, 1),
        auc=auc,
        tp=tp, fp=fp, tn=tn, fn=fn,
        threshold=threshold,
    )
