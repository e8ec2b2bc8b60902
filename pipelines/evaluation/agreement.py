"""Count agreement between a method and the truth over slides: Bland–Altman, and the share within ±5 %.

Bland–Altman (1986): the differences ``method − truth`` per slide, their mean (the bias) and the 95 % limits
of agreement, bias ± 1.96 standard deviations (sample SD, ``ddof=1``). A slide's count is *within 5 %* when
``|method − truth| ≤ 0.05 × truth`` (with truth 0, only an exact 0 is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipelines.evaluation.bootstrap import Bootstrap, Estimate, Indices, Statistic

LOA_Z = 1.96
TOLERANCE = 0.05


@dataclass(frozen=True)
class Agreement:
    bias: float  # mean difference, method − truth
    sd: float
    lower: float  # limits of agreement
    upper: float

    def as_dict(self) -> dict[str, float]:
        return {"mean_difference": round(self.bias, 4), "sd": round(self.sd, 4),
                "loa_lower": round(self.lower, 4), "loa_upper": round(self.upper, 4)}


def bland_altman(method: npt.ArrayLike, truth: npt.ArrayLike) -> Agreement:
    m, t = np.asarray(method, np.float64), np.asarray(truth, np.float64)
    if m.shape != t.shape or not len(m):
        raise ValueError("Bland–Altman needs paired values, at least one pair")
    diff = m - t
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    return Agreement(bias, sd, bias - LOA_Z * sd, bias + LOA_Z * sd)


def within(method: npt.ArrayLike, truth: npt.ArrayLike, tolerance: float = TOLERANCE) -> npt.NDArray[np.bool_]:
    """Per pair: is the method within ``tolerance`` (a share of the truth) of the truth."""
    m, t = np.asarray(method, np.float64), np.asarray(truth, np.float64)
    result: npt.NDArray[np.bool_] = np.abs(m - t) <= tolerance * t + 1e-9
    return result


def agreement_estimates(method: npt.ArrayLike, truth: npt.ArrayLike, boot: Bootstrap) -> dict[str, Estimate]:
    """Bias, limits of agreement and the share within ±5 %, each with its bootstrap interval over slides."""
    m, t = np.asarray(method, np.float64), np.asarray(truth, np.float64)
    ok = within(m, t).astype(np.float64)

    def part(name: str) -> Statistic:
        def statistic(idx: Indices) -> float:
            if len(idx) < 2 and name != "bias":
                return math.nan
            a = bland_altman(m[idx], t[idx])
            return float({"bias": a.bias, "lower": a.lower, "upper": a.upper}[name])

        return statistic

    return {
        "mean_difference": boot.estimate(part("bias")),
        "loa_lower": boot.estimate(part("lower")),
        "loa_upper": boot.estimate(part("upper")),
        "within_5pct": boot.mean(ok),
    }
