"""How a slide run's detections are scored: grouped as the pipeline reports them, points leave mAP out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.evaluation.bootstrap import Bootstrap
from pipelines.evaluation.detection import as_reported, operating_figures, score_section
from pipelines.wsi.evaluation import score_predictions
from pipelines.wsi.labels import CTC, CTM


def det(cls: str, box: list[float], confidence: float, source: str | None = None) -> dict[str, object]:
    d: dict[str, object] = {"class": cls, "confidence": confidence, "l0_box": box}
    if source:
        d["source"] = source
    return d


def test_a_low_confidence_run_is_grouped_as_the_pipeline_would_report_it() -> None:
    summary = {
        "slide": {"mpp_um": [0.5, 0.5]},
        "detections": [
            det("CTC", [100, 100, 140, 140], 0.9),
            det("CTC", [144, 100, 184, 140], 0.8),  # 4 px = 2 µm from the first: the two form a CTM
            det("CTC", [188, 100, 228, 140], 0.05),  # weak: kept as a CTC, never grouped
            det("CTM", [100, 100, 228, 140], 0.6, "grouping"),  # the low-confidence run's own grouping: dropped
            det("CTM", [1000, 1000, 1100, 1100], 0.7, "model"),
        ],
    }
    out = as_reported(summary, grouping_um=5.0, confidence=0.5)
    ctms = out[out[:, 5] == CTM]
    assert (out[:, 5] == CTC).sum() == 3
    assert sorted(map(tuple, ctms[:, :4].tolist())) == [(100, 100, 184, 140), (1000, 1000, 1100, 1100)]


def test_point_annotations_leave_map_out_and_figures_are_read_at_the_operating_confidence(tmp_path: Path) -> None:
    # ten cells found exactly; five above the operating confidence 0.5, five below
    boxes = np.array([[40 * i, 0, 40 * i + 20, 20] for i in range(10)], float)
    truth = np.c_[np.zeros(10), boxes]
    confidence = np.r_[np.linspace(0.95, 0.51, 5), np.linspace(0.49, 0.05, 5)]
    found = np.c_[boxes, confidence, np.zeros(10)]
    pairs = [(found, truth), (found.copy(), truth.copy())]
    # ultralytics interpolates the curves between detections' confidences: within a few hundredths
    assert operating_figures(score_predictions(pairs, None, 0.5))["recall"] == pytest.approx(0.5, abs=0.03)
    assert operating_figures(score_predictions(pairs, None, 0.02))["recall"] == pytest.approx(1.0, abs=0.01)
    with_map, section, _ = score_section(pairs, None, 0.5, Bootstrap(2, 50), tmp_path, with_map=True)
    without, _, _ = score_section(pairs, None, 0.5, Bootstrap(2, 50), tmp_path, with_map=False)
    assert "mAP50" in with_map and "mAP50" not in without
    assert without["recall"].value == pytest.approx(0.5, abs=0.03)
    assert without["recall"].low == without["recall"].high == without["recall"].value  # two identical slides
    assert section.rows[0][:2] == ["CTC", 20] and section.rows[0][5] == pytest.approx(0.5, abs=0.03)
    assert (tmp_path / "detector-curves.png").stat().st_size > 10_000
