"""Detector scoring reads precision, recall and F1 at an operating point chosen elsewhere (on validation data)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.wsi.evaluation import score


def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # one class, three objects: hits at 0.9 and 0.8, a false box at 0.3, the third object found at 0.2
    tp = np.array([[True] * 10, [True] * 10, [False] * 10, [True] * 10])
    conf = np.array([0.9, 0.8, 0.3, 0.2])
    return tp, conf, np.zeros(4), np.zeros(3)


def test_figures_at_a_given_confidence_are_read_there_not_at_this_splits_best() -> None:
    tp, conf, pred_cls, true_cls = _split()
    at_high = score(tp, conf, pred_cls, true_cls, images=1, at_confidence=0.8)
    assert at_high.operating_confidence == pytest.approx(0.8, abs=0.001)
    assert at_high.precision["CTC"] == pytest.approx(1.0, abs=0.01)
    assert at_high.recall["CTC"] == pytest.approx(2 / 3, abs=0.01)
    own = score(tp, conf, pred_cls, true_cls, images=1)
    assert own.operating_confidence == own.best_confidence
    assert own.headline()["operating_confidence"] == round(own.best_confidence, 3)
    # the split's own F1 peak is elsewhere (all three found at 0.2, one false box) and does not move the read-out
    assert own.recall["CTC"] > at_high.recall["CTC"]
    assert at_high.best_confidence == own.best_confidence
