# mypy: disable-error-code="no-untyped-call"
# (SimpleITK ships without type annotations.)
"""The MRI chain as a patient's series goes through it, measured end to end: U-Net mask → radiomics → SVM.

The classifier's own figures are measured on ground-truth masks; a series in use never has one. Here every
truth lesion is scored by what the chain makes of it: the predicted lesion that overlaps it most is
characterised on the *predicted* mask and classified; a truth lesion the segmenter missed gets no call, which
counts as "not malignant" (a missed malignant lesion is a false negative of the chain, as it is for the
patient). Predicted lesions that overlap no truth lesion are false lesions: counted, and those the classifier
calls malignant counted again as false alarms.
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
from pipelines.mri.radiomics import RadiomicsError, RadiomicsExtractor
from pipelines.mri.segmentation import Segmenter, lesions_from_probability


@dataclass(frozen=True)
class ChainEvaluation:
    cases: int
    lesions_true: int
    lesions_found: int
    false_lesions: int
    false_lesions_called_malignant: int
    not_characterised: int  # found lesions radiomics could not describe (no call)
    metrics: BinaryMetrics  # over every truth lesion with a class

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases, "lesions_true": self.lesions_true, "lesions_found": self.lesions_found,
            "false_lesions": self.false_lesions,
            "false_lesions_called_malignant": self.false_lesions_called_malignant,
            "not_characterised": self.not_characterised, **self.metrics.as_dict(),
        }


@dataclass(frozen=True)
class _CaseCalls:
    y: list[int]
    probability: list[float]
    found: int
    false_lesions: int
    false_malignant: int
    not_characterised: int


def _case_calls(case: Case, predicted: sitk.Image, classifier: MalignancyClassifier,
                extractor: RadiomicsExtractor) -> _CaseCalls:
    pred = sitk.GetArrayViewFromImage(predicted)
    truth = sitk.GetArrayViewFromImage(case.labels)
    probability: dict[int, float | None] = {}

    def call(label: int) -> float | None:
        if label not in probability:
            try:
                vector = extractor.extract(case.image, predicted, label)
                probability[label] = classifier.predict(vector).probability
            except RadiomicsError:
                probability[label] = None
        return probability[label]

    y: list[int] = []
    probs: list[float] = []
    found = not_characterised = 0
    for lesion, cls in sorted(case.lesion_classes.items()):
        overlap = pred[truth == lesion]
        overlap = overlap[overlap > 0]
        y.append(1 if cls == "malignant" else 0)
        if not overlap.size:
            probs.append(0.0)
            continue
        found += 1
        p = call(int(np.bincount(overlap).argmax()))
        if p is None:
            not_characterised += 1
        probs.append(0.0 if p is None else p)
    false = false_malignant = 0
    for label in (int(v) for v in np.unique(pred) if v):
        if np.any(truth[pred == label] > 0):
            continue
        false += 1
        p = call(label)
        false_malignant += int(p is not None and p >= classifier.threshold)
    return _CaseCalls(y, probs, found, false, false_malignant, not_characterised)


def evaluate_chain(segmenter: Segmenter, classifier: MalignancyClassifier, extractor: RadiomicsExtractor,
                   cases: Sequence[Case], min_lesion_ml: float,
                   probabilities: Sequence[sitk.Image] | None = None) -> ChainEvaluation:
    """Run the chain on ``cases`` (``probabilities``, one per case, skip the U-Net) and score every truth lesion."""
    y: list[int] = []
    probs: list[float] = []
    found = false = false_malignant = not_characterised = 0
    for i, case in enumerate(cases):
        prob = probabilities[i] if probabilities is not None else segmenter.probability(case.image)
        predicted = lesions_from_probability(prob, segmenter.config.threshold, min_lesion_ml).labels
        calls = _case_calls(case, predicted, classifier, extractor)
        y += calls.y
        probs += calls.probability
        found += calls.found
        false += calls.false_lesions
        false_malignant += calls.false_malignant
        not_characterised += calls.not_characterised
    metrics = binary_metrics(np.asarray(y, dtype=int), np.asarray(probs, dtype=float), classifier.threshold)
    return ChainEvaluation(len(cases), len(y), found, false, false_malignant, not_characterised, metrics)
