"""Percentile bootstrap confidence intervals over cases (or slides, or images), seeded and reproducible.

Labs validate on tens of cases, so every headline figure carries the spread it would have on another draw of
as many cases: the statistic is recomputed on ``resamples`` samples of the case indices drawn with replacement,
and the interval is the 2.5th and 97.5th percentile of those values. A resample on which the statistic is
undefined (NaN: an AUC with one class only, a recall without positives) is left out, and how many were used
is recorded beside the interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 20_261_207
LEVEL = 0.95

Indices = npt.NDArray[np.intp]
Statistic = Callable[[Indices], float]
Statistics = Callable[[Indices], dict[str, float]]  # several figures from one costly computation


@dataclass(frozen=True)
class Estimate:
    """A figure measured on all ``n`` units with its bootstrap interval (None where it cannot be had)."""

    value: float | None
    low: float | None
    high: float | None
    n: int
    resamples: int  # resamples on which the statistic was defined

    def as_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {"value": r(self.value), "ci95": [r(self.low), r(self.high)], "n": self.n,
                "resamples": self.resamples}

    def text(self, digits: int = 3) -> str:
        if self.value is None:
            return "n/a"
        if self.low is None or self.high is None:
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} ({self.low:.{digits}f}–{self.high:.{digits}f})"


def _defined(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


@dataclass(frozen=True)
class Bootstrap:
    """Resampling of ``n`` units: the same index draws for every statistic of one evaluation."""

    n: int
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED

    def draws(self) -> npt.NDArray[np.intp]:
        """``(resamples, n)`` unit indices, drawn with replacement; the same for the same seed."""
        rng = np.random.default_rng(self.seed)
        draws: npt.NDArray[np.intp] = rng.integers(0, self.n, size=(self.resamples, self.n))
        return draws

    def estimate(self, statistic: Statistic) -> Estimate:
        """``statistic`` on every unit, with the percentile interval over the resamples."""
        return self.estimate_many(lambda idx: {"": statistic(idx)}).get("", Estimate(None, None, None, 0, 0))

    def estimate_many(self, statistics: Statistics) -> dict[str, Estimate]:
        """Several figures computed together on every unit and on each resample (the same draws)."""
        if self.n == 0:
            return {}
        full = statistics(np.arange(self.n))
        samples = [statistics(idx) for idx in self.draws()] if self.resamples else []
        out: dict[str, Estimate] = {}
        for name, raw in full.items():
            value = _defined(raw)
            values = np.array([s.get(name, math.nan) for s in samples], np.float64)
            values = values[~np.isnan(values)]
            if value is None or not len(values):
                out[name] = Estimate(value, None, None, self.n, len(values))
                continue
            tail = (1 - LEVEL) / 2 * 100
            low, high = np.percentile(values, [tail, 100 - tail])
            out[name] = Estimate(value, float(low), float(high), self.n, len(values))
        return out

    def mean(self, per_unit: npt.ArrayLike) -> Estimate:
        """The mean of a per-unit figure (a case's Dice, a slide's count error)."""
        values = np.asarray(per_unit, np.float64)
        return self.estimate(lambda idx: float(values[idx].mean()))

    def ratio(self, numerators: npt.ArrayLike, denominators: npt.ArrayLike) -> Estimate:
        """Σ numerator / Σ denominator over the units (a lesion-level sensitivity pooled over cases)."""
        num, den = np.asarray(numerators, np.float64), np.asarray(denominators, np.float64)

        def pooled(idx: Indices) -> float:
            total = den[idx].sum()
            return float(num[idx].sum() / total) if total > 0 else math.nan

        return self.estimate(pooled)
