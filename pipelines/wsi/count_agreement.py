"""Count agreement across slides: held-out generated slides that span smear fractions and both modes.

Counts within 5 % must hold across slides, not on one. :func:`count_set_specs` gives a set of slides at a
typical (not training-rich) CTC density: about 3.5 single CTCs and 0.6 clusters per mm² of smear among
~900 leukocytes, red cells and look-alikes per mm², the density of ``benchmarks/wsi_throughput.py``'s slide,
so that false positives among leukocytes weigh on the count as they do on a real smear. Smear fractions are
spread evenly over ``fractions``; modes alternate. Seeds are ``seed * 1000 + i`` and must stay outside every
training and validation range (the shipped detector's training slides are 1000–1029).

:func:`agreement` summarises predicted against true counts per class: the relative error per slide, its mean
(the bias) and the 95 % limits of agreement (mean ± 1.96 SD, Bland–Altman on relative differences), and the
share of slides whose count is within ±5 %.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.evaluation.agreement import Agreement, bland_altman
from pipelines.synthetic.slides import SlideSpec

CTC_PER_MM2 = 3.5  # single CTCs per mm² of smear
CTM_PER_MM2 = 0.63


def count_set_specs(count: int, seed: int, side: int = 12288, mpp: float = 0.5,
                    fractions: tuple[float, float] = (0.1, 0.7)) -> list[SlideSpec]:
    """``count`` slides of ``side``² px, smear fractions evenly over ``fractions``, modes alternating."""
    rng = np.random.default_rng(seed)
    area_mm2 = (side * mpp / 1000) ** 2
    specs = []
    for i, fraction in enumerate(np.linspace(fractions[0], fractions[1], count)):
        smear = area_mm2 * float(fraction)
        specs.append(SlideSpec(
            width=side, height=side, mpp=mpp, mode="brightfield" if i % 2 == 0 else "fluorescence",
            ctc=max(1, round(CTC_PER_MM2 * smear)), ctm=max(1, round(CTM_PER_MM2 * smear)),
            leukocytes_per_mm2=float(rng.uniform(700, 1100)), red_cells_per_mm2=float(rng.uniform(200, 400)),
            hard_negatives_per_mm2=float(rng.uniform(30, 60)), tissue_fraction=round(float(fraction), 3),
            seed=seed * 1000 + i,
        ))
    return specs


@dataclass(frozen=True)
class ClassAgreement:
    relative_errors: tuple[float, ...]  # (predicted - true) / true, per slide

    def _bland_altman(self) -> Agreement:
        # Bland–Altman of the relative differences: each slide's difference is its relative error
        if not self.relative_errors:  # no slide with this class: nothing to agree on
            return Agreement(float("nan"), float("nan"), float("nan"), float("nan"))
        return bland_altman(self.relative_errors, np.zeros(len(self.relative_errors)))

    @property
    def bias(self) -> float:
        return self._bland_altman().bias

    @property
    def limits(self) -> tuple[float, float]:
        a = self._bland_altman()
        return a.lower, a.upper

    @property
    def within_5_percent(self) -> float:
        return float(np.mean([abs(e) <= 0.05 for e in self.relative_errors]))

    def as_dict(self) -> dict[str, Any]:
        lo, hi = self.limits
        return {"slides": len(self.relative_errors), "mean_relative_error": round(self.bias, 4),
                "limits_of_agreement": [round(lo, 4), round(hi, 4)],
                "mean_absolute_relative_error": round(float(np.mean(np.abs(self.relative_errors))), 4),
                "share_within_5_percent": round(self.within_5_percent, 3),
                "relative_errors": [round(e, 4) for e in self.relative_errors]}


def agreement(predicted: Sequence[dict[str, int]], truth: Sequence[dict[str, int]],
              classes: Sequence[str] = ("CTC", "CTM")) -> dict[str, ClassAgreement]:
    """Per class, the relative count errors of ``predicted`` against ``truth`` (one dict per slide)."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predicted counts for {len(truth)} slides")
    out = {}
    for name in classes:
        errors = tuple((p[name] - t[name]) / t[name] for p, t in zip(predicted, truth, strict=True) if t[name])
        out[name] = ClassAgreement(errors)
    return out
