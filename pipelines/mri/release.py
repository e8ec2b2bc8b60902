# mypy: disable-error-code="no-untyped-call"
# (SimpleITK ships without type annotations.)
"""Release evaluation of the MRI models: every choice on validation series, then the test series scored once.

Three disjoint sets, told apart by seed ranges recorded in the manifest: training (the seeds in each model's
card), validation (chooses the U-Net's probability threshold from the candidates) and test (scored once, after
the threshold is frozen). On the test series it measures the segmenter (Dice per case, lesion sensitivity, false
lesions), the classifier on the ground-truth masks, and the chain a patient's series goes through
(:mod:`pipelines.mri.chain`). The figures and the seed ranges are written into the models' manifest entries
(``selection``, ``test``, ``chain_test``, ``test_truth_masks``), which the cards and the suite's accuracy tests
read; the test seeds must not overlap any training or validation seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipelines.models.registry import ModelEntry, record, resolve
from pipelines.mri.cases import generated_cases
from pipelines.mri.chain import choose_operating_threshold, evaluate_chain
from pipelines.mri.classifier import MalignancyClassifier
from pipelines.mri.feature_table import extract_table
from pipelines.mri.metrics import binary_metrics
from pipelines.mri.radiomics import RadiomicsExtractor
from pipelines.mri.segmentation import Segmenter, SegmenterConfig
from pipelines.mri.segmenter_training import evaluate_segmenter, select_threshold


@dataclass(frozen=True)
class SeedRange:
    first: int
    count: int

    @property
    def seeds(self) -> range:
        return range(self.first, self.first + self.count)

    def __str__(self) -> str:
        return f"{self.first}..{self.first + self.count - 1}"


@dataclass(frozen=True)
class ReleaseSets:
    validation: SeedRange
    test: SeedRange
    training: Sequence[SeedRange] = ()  # every seed range any training stage used

    def check(self) -> None:
        used = [self.validation, *self.training]
        for other in used:
            if set(self.test.seeds) & set(other.seeds):
                raise ValueError(f"test seeds {self.test} overlap {other}")
        for other in self.training:
            if set(self.validation.seeds) & set(other.seeds):
                raise ValueError(f"validation seeds {self.validation} overlap training seeds {other}")


MALIGNANCY_CANDIDATES = tuple(round(0.05 * i, 2) for i in range(1, 20))


def evaluate_release(segmenter_entry: ModelEntry, classifier_entry: ModelEntry, sets: ReleaseSets,
                     candidates: Sequence[float], progress: Callable[[str], None] = print) -> dict[str, Any]:
    """On ``sets.validation`` choose the U-Net's threshold (mean Dice), then the classifier's malignancy
    threshold through the whole chain (balanced accuracy on the U-Net's masks, as in use); then score
    ``sets.test`` once; returns the figures."""
    sets.check()
    info = segmenter_entry.info
    min_ml = float(info["min_lesion_ml"])
    config = SegmenterConfig.from_dict(info["config"])
    segmenter = Segmenter.load(segmenter_entry.path, config)
    t0 = time.monotonic()
    validation = list(generated_cases(sets.validation.seeds))
    best, scores, val_probabilities = select_threshold(segmenter, validation, min_ml, candidates)
    progress(f"validation {sets.validation}: mean Dice by threshold "
             + ", ".join(f"{t:g}: {d:.4f}" for t, d in scores.items()) + f"; frozen at {best:g}")
    segmenter = Segmenter(segmenter.network, replace(config, threshold=best))
    classifier = MalignancyClassifier.load(classifier_entry.path)  # at its saved threshold: chosen below
    extractor = RadiomicsExtractor()
    val_chain = evaluate_chain(segmenter, classifier, extractor, validation, min_ml, val_probabilities)
    saved_threshold = classifier.threshold
    classifier.threshold, balanced = choose_operating_threshold(val_chain, MALIGNANCY_CANDIDATES)
    progress(f"validation chain at the saved threshold {saved_threshold:g}: {val_chain.metrics.as_dict()}; "
             f"malignancy threshold frozen at {classifier.threshold:g} (balanced accuracy {balanced:.4f})")
    del validation, val_probabilities
    test = list(generated_cases(sets.test.seeds))
    probabilities = [segmenter.probability(case.image) for case in test]
    seg = evaluate_segmenter(segmenter, test, min_ml, probabilities)
    progress(f"test {sets.test}: mean Dice {seg.mean_dice:.4f}, lesions {seg.lesions_found}/{seg.lesions_true}, "
             f"false {seg.false_lesions}")
    chain = evaluate_chain(segmenter, classifier, extractor, test, min_ml, probabilities)
    progress(f"chain on test: {chain.as_dict()}")
    table = extract_table(test, extractor)
    truth_masks = binary_metrics(table.y, classifier.probabilities(table.x), classifier.threshold)
    progress(f"classifier on the test series' truth masks: {truth_masks.as_dict()}")
    return {
        "selection": {"set": "validation", "seeds": str(sets.validation), "cases": sets.validation.count,
                      "chose": "threshold", "threshold": best,
                      "mean_dice_by_threshold": {f"{t:g}": round(d, 4) for t, d in scores.items()}},
        "classifier_selection": {
            "set": "validation", "seeds": str(sets.validation), "chose": "operating_threshold",
            "through": "the chain (U-Net masks at the frozen segmenter threshold)", "criterion": "balanced accuracy",
            "operating_threshold": classifier.threshold, "balanced_accuracy": round(balanced, 4),
            "saved_threshold": saved_threshold, "at_saved_threshold": val_chain.metrics.as_dict()},
        "test": {"seeds": str(sets.test), **{k: v for k, v in seg.as_dict().items() if k != "dice_per_case"}},
        "test_dice_per_case": [round(d, 4) for d in seg.dice_per_case],
        "chain_test": {"seeds": str(sets.test), **chain.as_dict()},
        "test_truth_masks": {"seeds": str(sets.test), **truth_masks.as_dict()},
        "seconds": round(time.monotonic() - t0, 1),
    }


def record_release(figures: dict[str, Any], segmenter: str, classifier: str, manifest: Path | None = None) -> None:
    """Write ``figures`` into both models' manifest entries (the U-Net's threshold included)."""
    seg = resolve(segmenter, manifest)
    seg_info = {k: v for k, v in seg.info.items() if k != "held_out"}
    seg_info["config"] = {**seg.info["config"], "threshold": figures["selection"]["threshold"]}
    seg_info.update(selection=figures["selection"], test=figures["test"], chain_test=figures["chain_test"])
    record(seg.name, seg.version, seg.path, seg_info, seg.manifest)
    clf = resolve(classifier, manifest)
    selection = figures["classifier_selection"]
    clf_info = {**clf.info, "operating_threshold": selection["operating_threshold"], "selection": selection,
                "test_truth_masks": figures["test_truth_masks"], "chain_test": figures["chain_test"]}
    record(clf.name, clf.version, clf.path, clf_info, clf.manifest)
