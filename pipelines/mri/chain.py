# mypy: disable-error-code="no-untyped-call"
# (SimpleITK ships without type annotations.)
"""The MRI chain as a patient's series goes through it, measured end to end: U-Net mask → radiomics → SVM.

The classifier's own figures are measured on ground-truth masks; a series in use never has one. Here every
truth lesion is scored by what the chain makes of it: the predicted lesion that overlaps it most is
characterised on the *predicted* mask and classified; a truth lesion the segmenter missed gets no call, which
counts as "not malignant" (a missed malignant lesion is a false negative of the chain, as it is for the
patient). As in ``mri-tumour``, a predicted lesion the plausibility check flags (a thin sheet, fluid signal)
gets no malignancy call either: counted as ``implausible``, scored as "not malignant". Predicted lesions that
overlap no truth lesion are false lesions: counted, and those the classifier calls malignant counted again as
false alarms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from pipelines.mri.cases import Case
from pipelines.mri.classifier import MalignancyClassifier
from pipelines.mri.metrics import BinaryMetrics, binary_metrics
from pipelines.mri.plausibility import implausible_labels
from pipelines.mri.radiomics import RadiomicsError, RadiomicsExtractor
from pipelines.mri.segmentation import Segmentation, Segmenter, lesions_from_probability


@dataclass(frozen=True)
class ChainEvaluation:
    cases: int
    lesions_true: int
    lesions_found: int
    false_lesions: int
    false_lesions_called_malignant: int
    not_characterised: int  # found lesions radiomics could not describe (no call)
    implausible: int  # found lesions whose predicted lesion the plausibility check flags (no call)
    metrics: BinaryMetrics  # over every truth lesion with a class
    y: tuple[int, ...] = ()  # per truth lesion: 1 malignant
    probabilities: tuple[float, ...] = ()  # the chain's malignancy probability (0 when missed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases, "lesions_true": self.lesions_true, "lesions_found": self.lesions_found,
            "false_lesions": self.false_lesions,
            "false_lesions_called_malignant": self.false_lesions_called_malignant,
            "not_characterised": self.not_characterised, "implausible": self.implausible,
            **self.metrics.as_dict(),
        }


@dataclass(frozen=True)
class _CaseCalls:
    y: list[int]
    probability: list[float]
    found: int
    false_lesions: int
    false_malignant: int
    not_characterised: int
    implausible: int


def _case_calls(case: Case, segmentation: Segmentation, classifier: MalignancyClassifier,
                extractor: RadiomicsExtractor) -> _CaseCalls:
    predicted = segmentation.labels
    flagged = implausible_labels(sitk.GetArrayViewFromImage(case.image), segmentation)
    pred = sitk.GetArrayViewFromImage(predicted)
    truth = sitk.GetArrayViewFromImage(case.labels)
    probability: dict[int, float | None] = {}

    def call(label: int) -> float | None:
        if label in flagged:
            return None
        if label not in probability:
            try:
                vector = extractor.extract(case.image, predicted, label)
                probability[label] = classifier.predict(vector).probability
            except RadiomicsError:
                probability[label] = None
        return probability[label]

    y: list[int] = []
    probs: list[float] = []
    found = not_characterised = implausible = 0
    for lesion, cls in sorted(case.lesion_classes.items()):
        overlap = pred[truth == lesion]
        overlap = overlap[overlap > 0]
        y.append(1 if cls == "malignant" else 0)
        if not overlap.size:
            probs.append(0.0)
            continue
        found += 1
        matched = int(np.bincount(overlap).argmax())
        p = call(matched)
        if matched in flagged:
            implausible += 1
        elif p is None:
            not_characterised += 1
        probs.append(0.0 if p is None else p)
    false = false_malignant = 0
    for label in (int(v) for v in np.unique(pred) if v):
        if np.any(truth[pred == label] > 0):
            continue
        false += 1
        p = call(label)
        false_malignant += int(p is not None and p >= classifier.threshold)
    return _CaseCalls(y, probs, found, false, false_malignant, not_characterised, implausible)


def evaluate_chain(segmenter: Segmenter, classifier: MalignancyClassifier, extractor: RadiomicsExtractor,
                   cases: Sequence[Case], min_lesion_ml: float,
                   probabilities: Sequence[sitk.Image] | None = None) -> ChainEvaluation:
    """Run the chain on ``cases`` (``probabilities``, one per case, skip the U-Net) and score every truth lesion."""
    y: list[int] = []
    probs: list[float] = []
    found = false = false_malignant = not_characterised = implausible = 0
    for i, case in enumerate(cases):
        prob = probabilities[i] if probabilities is not None else segmenter.probability(case.image)
        segmentation = lesions_from_probability(prob, segmenter.config.threshold, min_lesion_ml)
        calls = _case_calls(case, segmentation, classifier, extractor)
        y += calls.y
        probs += calls.probability
        found += calls.found
        false += calls.false_lesions
        false_malignant += calls.false_malignant
        not_characterised += calls.not_characterised
        implausible += calls.implausible
    metrics = binary_metrics(np.asarray(y, dtype=int), np.asarray(probs, dtype=float), classifier.threshold)
    return ChainEvaluation(len(cases), len(y), found, false, false_malignant, not_characterised, implausible,
                           metrics, tuple(y), tuple(probs))


def choose_operating_threshold(chain: ChainEvaluation, candidates: Sequence[float]) -> tuple[float, float]:
    """The candidate malignancy threshold with the best balanced accuracy (mean of sensitivity and
    specificity) over ``chain``'s lesions (validation series), ties to the one nearest 0.5; and that accuracy."""
    y = np.asarray(chain.y, dtype=int)
    p = np.asarray(chain.probabilities, dtype=float)

    def balanced(t: float) -> float:
        m = binary_metrics(y, p, t)
        return (m.sensitivity + m.specificity) / 2

    scores = {float(t): balanced(float(t)) for t in candidates}
    best = max(scores, key=lambda t: (round(scores[t], 9), -abs(t - 0.5)))
    return best, scores[best]
