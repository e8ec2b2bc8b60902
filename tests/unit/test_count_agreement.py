"""The held-out count set's specs and the count-agreement summary (bias, limits of agreement, share within 5 %)."""

from __future__ import annotations

import pytest

from pipelines.wsi.count_agreement import agreement, count_set_specs


def test_count_set_spans_smear_fractions_and_both_modes_at_a_typical_density() -> None:
    specs = count_set_specs(10, 75)
    assert specs[0].tissue_fraction == 0.1 and specs[-1].tissue_fraction == 0.7
    assert {s.mode for s in specs} == {"brightfield", "fluorescence"}
    assert len({s.seed for s in specs}) == 10 and all(s.seed // 1000 == 75 for s in specs)
    # more smear, more CTCs, at the same density per mm² of smear
    assert specs[0].ctc < specs[-1].ctc and 6 < specs[-1].ctc / specs[0].ctc < 8
    assert specs == count_set_specs(10, 75)


def test_agreement_reports_bias_limits_and_share_within_5_percent() -> None:
    truth = [{"CTC": 100, "CTM": 10}, {"CTC": 200, "CTM": 20}, {"CTC": 50, "CTM": 0}, {"CTC": 80, "CTM": 8}]
    predicted = [{"CTC": 104, "CTM": 10}, {"CTC": 230, "CTM": 18}, {"CTC": 50, "CTM": 3}, {"CTC": 76, "CTM": 8}]
    result = agreement(predicted, truth)
    ctc = result["CTC"]
    assert ctc.relative_errors == pytest.approx((0.04, 0.15, 0.0, -0.05))
    assert ctc.bias == pytest.approx(0.035)
    lo, hi = ctc.limits
    assert lo < -0.05 and hi > 0.15 and (lo + hi) / 2 == pytest.approx(0.035)
    assert ctc.within_5_percent == 0.75
    # a slide without clusters cannot give a relative CTM error: it is left out, not divided by zero
    assert result["CTM"].as_dict()["slides"] == 3 and result["CTM"].within_5_percent == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="3 predicted counts for 4 slides"):
        agreement(predicted[:3], truth)
