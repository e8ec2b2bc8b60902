# mypy: disable-error-code="no-untyped-call"
# (SimpleITK ships without type annotations.)
"""One case's segmentation against its truth: Dice, lesions found and false, and which predicted lesion is which.

A truth lesion is *found* when a predicted lesion overlaps it; it is matched to the predicted lesion that
overlaps it most. A predicted lesion that overlaps no truth lesion is a *false lesion*. Dice is over all
lesions together, on the case's own grid (as :func:`pipelines.mri.segmentation.dice` computes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from pipelines.mri.segmentation import Segmentation, dice


@dataclass(frozen=True)
class CaseScore:
    case_id: str
    dice: float
    truth_lesions: int
    found: int
    false_lesions: int
    matches: dict[int, int] = field(default_factory=dict)  # truth lesion label -> predicted lesion label

    def as_dict(self) -> dict[str, Any]:
        return {"case": self.case_id, "dice": round(self.dice, 4), "truth_lesions": self.truth_lesions,
                "found": self.found, "false_lesions": self.false_lesions}


def score_case(case_id: str, predicted: Segmentation, truth_labels: sitk.Image) -> CaseScore:
    pred = sitk.GetArrayViewFromImage(predicted.labels)
    truth = sitk.GetArrayViewFromImage(truth_labels)
    matches: dict[int, int] = {}
    truth_ids = [int(v) for v in np.unique(truth) if v]
    for t in truth_ids:
        under = pred[truth == t]
        under = under[under > 0]
        if len(under):
            values, counts = np.unique(under, return_counts=True)
            matches[t] = int(values[np.argmax(counts)])
    false = sum(1 for lesion in predicted.lesions if not np.any(truth[pred == lesion.label] > 0))
    return CaseScore(case_id, dice(pred, truth), len(truth_ids), len(matches), false, matches)
