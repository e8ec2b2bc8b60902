# mypy: disable-error-code="no-untyped-call"
# (SimpleITK ships without type annotations.)
"""``oncoagent evaluate segmenter|classifier|mri``: the MRI models on a lab's NIfTI case folders.

* segmenter: the U-Net on every case (:class:`~pipelines.mri.segmentation.Segmenter`, the pipeline's own
  loading and threshold) → Dice per case, lesion-level sensitivity, false lesions per case;
* classifier: radiomics on the *truth* masks → the SVM → accuracy, AUC with its ROC curve, sensitivity,
  specificity, confusion matrix (the figure the model card publishes);
* mri: the chain a patient's series goes through — U-Net masks → radiomics → SVM — with each predicted
  lesion matched to the truth lesion it overlaps most and scored against that lesion's label, beside the
  segmenter's and the truth-mask classifier's figures on the same cases. As in the pipeline, a predicted
  lesion the plausibility check flags (a thin sheet, fluid signal) gets no malignancy call: it is counted,
  left out of the chain's accuracy/AUC, and not called malignant. Also: malignant lesions found *and*
  called malignant, of all malignant truth lesions; false lesions called malignant per case.

Intervals resample cases (a case's lesions go together, since they share a patient and a scan).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from pipelines.evaluation.bootstrap import Bootstrap, Estimate, Indices
from pipelines.evaluation.figures import confusion_png, per_case_png
from pipelines.evaluation.lesions import CaseScore, score_case
from pipelines.evaluation.outcome import EvaluationOutcome, Section
from pipelines.models.registry import resolve
from pipelines.mri.cases import Case
from pipelines.mri.classifier import POSITIVE
from pipelines.mri.figures import roc_png
from pipelines.mri.metrics import binary_metrics
from pipelines.mri.pipeline import MriTumourOptions, MriTumourPipeline
from pipelines.mri.plausibility import implausible_labels
from pipelines.mri.radiomics import RadiomicsError

log = logging.getLogger(__name__)

BINARY = ("accuracy", "auc", "sensitivity", "specificity")


@dataclass
class LesionCalls:
    """Lesions with a truth label and a probability of malignancy, and the case each belongs to."""

    case: list[int] = field(default_factory=list)
    y: list[int] = field(default_factory=list)
    probability: list[float] = field(default_factory=list)
    unclassified: int = 0  # radiomics could not describe the lesion
    implausible: int = 0  # the predicted lesion was flagged implausible: no malignancy call

    def add(self, case: int, label: str, probability: float) -> None:
        self.case.append(case)
        self.y.append(1 if label == POSITIVE else 0)
        self.probability.append(probability)

    def arrays(self) -> tuple[npt.NDArray[np.int_], npt.NDArray[np.int_], npt.NDArray[np.float64]]:
        return np.array(self.case, int), np.array(self.y, int), np.array(self.probability, np.float64)


def _by_case(case_of: npt.NDArray[np.int_], n_cases: int) -> list[npt.NDArray[np.intp]]:
    return [np.flatnonzero(case_of == i) for i in range(n_cases)]


def binary_estimates(calls: LesionCalls, n_cases: int, boot: Bootstrap, threshold: float,
                     prefix: str = "") -> dict[str, Estimate]:
    """Accuracy, AUC, sensitivity and specificity of the lesion calls, resampling cases."""
    case_of, y, p = calls.arrays()
    groups = _by_case(case_of, n_cases)

    def statistics(idx: Indices) -> dict[str, float]:
        rows = np.concatenate([groups[i] for i in idx]) if len(idx) else np.zeros(0, np.intp)
        if not len(rows):
            return {}
        m = binary_metrics(y[rows], p[rows], threshold)
        out = {"accuracy": m.accuracy, "auc": m.auc}
        if (y[rows] == 1).any():
            out["sensitivity"] = m.sensitivity
        if (y[rows] == 0).any():
            out["specificity"] = m.specificity
        return out

    return {prefix + k: v for k, v in boot.estimate_many(statistics).items()}


def _binary_section(title: str, calls: LesionCalls, threshold: float, out: Path, stem: str) -> Section:
    _, y, p = calls.arrays()
    m = binary_metrics(y, p, threshold)
    figures = [confusion_png(m.tp, m.fp, m.tn, m.fn, out / f"{stem}-confusion.png", title)]
    if 0 < y.sum() < len(y):
        figures.insert(0, roc_png(y, p, out / f"{stem}-roc.png", title).name)
    text = [f"{m.n} lesions at threshold {threshold:g}: TP {m.tp}, FP {m.fp}, TN {m.tn}, FN {m.fn}."]
    if calls.unclassified:
        text.append(f"{calls.unclassified} lesion(s) radiomics could not describe are left out.")
    if calls.implausible:
        text.append(f"{calls.implausible} lesion(s) matched a predicted lesion flagged implausible (no malignancy "
                    "call, for review) and are left out.")
    return Section(title, text=text, columns=["accuracy", "AUC", "sensitivity", "specificity"],
                   rows=[[round(m.accuracy, 4), None if np.isnan(m.auc) else round(m.auc, 4),
                          round(m.sensitivity, 4), round(m.specificity, 4)]],
                   figures=figures)


class MriEvaluation:
    """The pipeline's models, loaded as the pipeline loads them, run over a list of cases."""

    def __init__(self, options: MriTumourOptions, cases: Sequence[Case], boot_of: Callable[[int], Bootstrap],
                 out: Path) -> None:
        self.options, self.cases, self.out = options, list(cases), out
        self.pipeline = MriTumourPipeline(options)
        self.boot = boot_of(len(self.cases))

    def _entry(self, name: str) -> Any:
        return resolve(name, self.options.manifest)

    # -------------------------------------------------------------------------------- segmenter

    def segment(self) -> tuple[list[Any], list[CaseScore]]:
        segmenter = self.pipeline.segmenter(self._entry(self.options.segmenter_model))
        segmentations, scores = [], []
        for n, case in enumerate(self.cases, start=1):
            seg = segmenter.segment(case.image, self.options.min_lesion_ml)
            segmentations.append(seg)
            scores.append(score_case(case.case_id, seg, case.labels))
            log.info("case %d/%d %s: Dice %.3f", n, len(self.cases), case.case_id, scores[-1].dice)
        return segmentations, scores

    def segmenter_part(self, scores: list[CaseScore], outcome: EvaluationOutcome) -> None:
        boot = self.boot
        outcome.headline.update({
            "mean_dice": boot.mean([s.dice for s in scores]),
            "lesion_sensitivity": boot.ratio([s.found for s in scores], [s.truth_lesions for s in scores]),
            "false_lesions_per_case": boot.mean([s.false_lesions for s in scores]),
        })
        figure = per_case_png([s.case_id for s in scores], [s.dice for s in scores], self.out / "dice-per-case.png",
                              "Dice per case", "Dice")
        truth = sum(s.truth_lesions for s in scores)
        found = sum(s.found for s in scores)
        outcome.sections.append(Section(
            "Segmentation (U-Net)",
            text=[f"{found} of {truth} truth lesions found; {sum(s.false_lesions for s in scores)} false lesions "
                  f"in {len(scores)} cases (minimum lesion volume {self.options.min_lesion_ml:g} ml)."],
            columns=["case", "Dice", "truth lesions", "found", "false lesions"],
            rows=[[s.case_id, round(s.dice, 4), s.truth_lesions, s.found, s.false_lesions] for s in scores],
            figures=[figure],
        ))

    # -------------------------------------------------------------------------------- classifier

    def _classifier(self) -> Any:
        return self.pipeline.classifier(self._entry(self.options.classifier_model))

    def _probability(self, case: Case, labels: Any, label: int) -> float | None:
        try:
            vector = self.pipeline.extractor().extract(case.image, labels, label)
        except RadiomicsError as exc:
            log.warning("case %s lesion %d: %s", case.case_id, label, exc)
            return None
        return float(self._classifier().predict(vector).probability)

    def truth_mask_calls(self) -> LesionCalls:
        calls = LesionCalls()
        for i, case in enumerate(self.cases):
            for lesion, label in sorted(case.lesion_classes.items()):
                probability = self._probability(case, case.labels, lesion)
                if probability is None:
                    calls.unclassified += 1
                else:
                    calls.add(i, label, probability)
        return calls

    def classifier_part(self, calls: LesionCalls, outcome: EvaluationOutcome, prefix: str = "") -> None:
        threshold = float(self._classifier().threshold)
        outcome.headline.update(binary_estimates(calls, len(self.cases), self.boot, threshold, prefix))
        outcome.sections.append(_binary_section("Classification on the truth masks (radiomics → SVM)", calls,
                                                threshold, self.out, "truth-masks"))

    # -------------------------------------------------------------------------------- chain

    def chain_part(self, segmentations: list[Any], scores: list[CaseScore], outcome: EvaluationOutcome) -> None:
        threshold = float(self._classifier().threshold)
        calls = LesionCalls()
        malignant_truth = malignant_called = 0
        false_malignant: list[int] = []
        for i, (case, seg, score) in enumerate(zip(self.cases, segmentations, scores, strict=True)):
            flagged = implausible_labels(sitk.GetArrayViewFromImage(case.image), seg)
            cache: dict[int, float | None] = {}

            def probability(label: int, case: Case = case, seg: Any = seg, cache: dict[int, float | None] = cache,
                            ) -> float | None:
                if label not in cache:
                    cache[label] = self._probability(case, seg.labels, label)
                return cache[label]

            for truth_lesion, label in sorted(case.lesion_classes.items()):
                malignant_truth += label == POSITIVE
                predicted = score.matches.get(truth_lesion)
                if predicted in flagged:
                    calls.implausible += 1
                    continue
                chance = probability(predicted) if predicted is not None else None
                if predicted is not None and chance is None:
                    calls.unclassified += 1
                if chance is not None:
                    calls.add(i, label, chance)
                    malignant_called += label == POSITIVE and chance >= threshold
            matched = set(score.matches.values())
            false_malignant.append(sum(
                1 for lesion in seg.lesions
                if lesion.label not in matched | flagged and (probability(lesion.label) or 0.0) >= threshold
            ))
        outcome.headline.update(binary_estimates(calls, len(self.cases), self.boot, threshold, "chain_"))
        case_of, y, p = calls.arrays()
        per_case_malignant = [sum(1 for lesion, lab in c.lesion_classes.items() if lab == POSITIVE)
                              for c in self.cases]
        found_called = [int(np.sum((case_of == i) & (y == 1) & (p >= threshold))) for i in range(len(self.cases))]
        outcome.headline["chain_malignant_found_and_called"] = self.boot.ratio(found_called, per_case_malignant)
        outcome.headline["chain_false_malignant_per_case"] = self.boot.mean(false_malignant)
        section = _binary_section("The chain: U-Net masks → radiomics → SVM", calls, threshold, self.out, "chain")
        section.text.append(
            f"Each truth lesion is scored with the predicted lesion that overlaps it most. {malignant_called} of "
            f"{malignant_truth} malignant truth lesions were found and called malignant; "
            f"{sum(false_malignant)} false lesions were called malignant."
        )
        outcome.sections.append(section)
        outcome.details["chain"] = {"malignant_truth": malignant_truth, "malignant_found_and_called":
                                    malignant_called, "false_malignant": sum(false_malignant),
                                    "matched_to_implausible": calls.implausible}


def evaluate_mri(kind: str, data: Path, cases: Sequence[Case], options: MriTumourOptions,
                 boot_of: Callable[[int], Bootstrap], out: Path) -> EvaluationOutcome:
    """``kind`` is segmenter, classifier or mri (the chain beside both)."""
    ev = MriEvaluation(options, cases, boot_of, out)
    models = {"segmenter": [options.segmenter_model], "classifier": [options.classifier_model],
              "mri": [options.segmenter_model, options.classifier_model]}[kind]
    outcome = EvaluationOutcome(kind, str(data), "NIfTI case folders", "cases", len(ev.cases),
                                [ev._entry(name).ref for name in models], ev.boot)
    if kind in ("segmenter", "mri"):
        segmentations, scores = ev.segment()
        ev.segmenter_part(scores, outcome)
        outcome.per_case = [s.as_dict() for s in scores]
    if kind in ("classifier", "mri"):
        if not any(c.lesion_classes for c in ev.cases):
            from pipelines.errors import InputError

            raise InputError(f"{data}: no labelled lesions (labels.csv: case,lesion,label)")
        ev.classifier_part(ev.truth_mask_calls(), outcome, "truth_masks_" if kind == "mri" else "")
    if kind == "mri":
        ev.chain_part(segmentations, scores, outcome)
    return outcome
