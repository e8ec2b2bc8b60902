"""Bootstrap intervals and count agreement (Bland–Altman, share within ±5 %) of ``oncoagent evaluate``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.evaluation.agreement import agreement_estimates, bland_altman, within
from pipelines.evaluation.bootstrap import Bootstrap


def test_the_interval_is_reproducible_for_a_seed_and_holds_the_value() -> None:
    values = np.random.default_rng(3).normal(0.8, 0.05, size=30)
    first = Bootstrap(30, 500, seed=11).mean(values)
    again = Bootstrap(30, 500, seed=11).mean(values)
    other = Bootstrap(30, 500, seed=12).mean(values)
    assert first == again
    assert first != other
    assert first.value == pytest.approx(values.mean())
    assert first.low is not None and first.high is not None
    assert first.low < first.value < first.high
    # the percentile interval of a mean is about ±1.96 standard errors wide
    se = values.std(ddof=1) / math.sqrt(len(values))
    assert first.high - first.low == pytest.approx(2 * 1.96 * se, rel=0.25)
    assert first.resamples == 500 and first.n == 30


def test_constant_figures_have_no_spread_and_more_cases_narrow_the_interval() -> None:
    assert Bootstrap(8, 200).mean(np.ones(8)).as_dict() == {"value": 1.0, "ci95": [1.0, 1.0], "n": 8,
                                                           "resamples": 200}
    rng = np.random.default_rng(5)
    few, many = rng.random(10), rng.random(400)
    narrow, wide = Bootstrap(400, 400).mean(many), Bootstrap(10, 400).mean(few)
    assert narrow.high - narrow.low < wide.high - wide.low  # type: ignore[operator]


def test_resamples_where_a_figure_is_undefined_are_left_out_and_counted() -> None:
    # a pooled sensitivity over cases: resamples holding only the case without lesions are undefined
    est = Bootstrap(2, 400, seed=1).ratio([3, 0], [4, 0])
    assert est.value == 0.75
    assert 0 < est.resamples < 400  # about a quarter of the draws hold case 2 twice
    assert est.low == est.high == 0.75
    assert Bootstrap(0, 100).mean([]).as_dict() == {"value": None, "ci95": [None, None], "n": 0, "resamples": 0}


def test_several_figures_share_the_draws() -> None:
    values = np.arange(20, dtype=float)
    both = Bootstrap(20, 300).estimate_many(lambda idx: {"mean": values[idx].mean(), "twice": 2 * values[idx].mean()})
    assert both["twice"].low == pytest.approx(2 * both["mean"].low)  # type: ignore[operator]
    assert both["twice"].high == pytest.approx(2 * both["mean"].high)  # type: ignore[operator]


def test_bland_altman_bias_and_limits_of_agreement() -> None:
    a = bland_altman([10, 12, 9, 21], [10, 10, 10, 20])
    diffs = np.array([0, 2, -1, 1], float)
    assert a.bias == pytest.approx(0.5)
    assert a.sd == pytest.approx(diffs.std(ddof=1))
    assert a.lower == pytest.approx(0.5 - 1.96 * diffs.std(ddof=1))
    assert a.upper == pytest.approx(0.5 + 1.96 * diffs.std(ddof=1))
    with pytest.raises(ValueError):
        bland_altman([1, 2], [1])


def test_within_five_percent_is_relative_to_the_truth_and_exact_at_zero() -> None:
    assert within([105, 106, 95, 0, 1, 20], [100, 100, 100, 0, 0, 19]).tolist() == [
        True, False, True, True, False, False]
    est = agreement_estimates([105, 106, 95, 0], [100, 100, 100, 0], Bootstrap(4, 300, seed=2))
    assert est["within_5pct"].value == 0.75
    assert est["mean_difference"].value == pytest.approx(1.5)
    assert est["loa_lower"].value < est["mean_difference"].value < est["loa_upper"].value  # type: ignore[operator]
    assert est["within_5pct"].low is not None and 0 <= est["within_5pct"].low <= 0.75 <= est["within_5pct"].high
