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


SECTION = "## Release evaluation: three sets"
GOALS = {"mean_dice": 0.89, "accuracy": 0.915, "auc": 0.96}


def card_section(figures: dict[str, Any]) -> str:
    """The Markdown section both MRI cards carry: which set chose what, and the test figures against the goals."""
    sel, clf, test = figures["selection"], figures["classifier_selection"], figures["test"]
    chain, truth = figures["chain_test"], figures["test_truth_masks"]

    def row(name: str, d: dict[str, Any]) -> str:
        return (f"| {name} | {d['n']} | {d['accuracy']:.4f} | {d['sensitivity']:.4f} | {d['specificity']:.4f} | "
                f"{d['auc']:.4f} | {d['threshold']:g} |")

    def short(value: float, goal: float) -> str:
        return "met" if value >= goal else f"**not met** ({value:.4f} < {goal})"

    return "\n".join([
        SECTION, "",
        "Every choice on validation series, then the test series scored once (`oncoagent train mri-release`):", "",
        f"- **validation**, generated series seeds {sel['seeds']} ({sel['cases']}): chose the U-Net's probability "
        f"threshold {sel['threshold']:g} (mean Dice by threshold: "
        + ", ".join(f"{k}: {v:.4f}" for k, v in sel["mean_dice_by_threshold"].items()) + "), then, through the "
        f"chain on the U-Net's masks, the classifier's malignancy threshold {clf['operating_threshold']:g} "
        f"(best balanced accuracy, {clf['balanced_accuracy']:.4f}; at the saved {clf['saved_threshold']:g} the "
        f"chain's sensitivity was {clf['at_saved_threshold']['sensitivity']:.4f}). The first 8 of these seeds also "
        "compared the U-Net's fine-tuning stages: they are validation data, not a test set.",
        f"- **test**, generated series seeds {test['seeds']} ({test['cases']}): never used for training or any "
        "choice, scored once after both thresholds were frozen.", "",
        f"Segmenter on test: mean Dice **{test['mean_dice']:.4f}** (min {test['min_dice']:.4f}), lesions found "
        f"{test['lesions_found']}/{test['lesions_true']}, false lesions {test['false_lesions']}.", "",
        "| classifier on test lesions | lesions | accuracy | sensitivity | specificity | AUC | threshold |",
        "|---|---|---|---|---|---|---|",
        row("ground-truth masks", truth),
        row("the chain (U-Net mask -> radiomics -> SVM)", chain), "",
        f"The chain: {chain['lesions_found']} of {chain['lesions_true']} lesions found, {chain['false_lesions']} false "
        f"lesions ({chain['false_lesions_called_malignant']} called malignant), {chain['implausible']} flagged "
        "implausible (no call); a missed or flagged lesion counts as not malignant.", "",
        f"Goals of the seed (Dice {GOALS['mean_dice']}, accuracy {GOALS['accuracy']}, AUC {GOALS['auc']}), on test: "
        f"Dice {short(test['mean_dice'], GOALS['mean_dice'])}; "
        f"chain accuracy {short(chain['accuracy'], GOALS['accuracy'])}, "
        f"AUC {short(chain['auc'], GOALS['auc'])}; truth-mask accuracy {short(truth['accuracy'], GOALS['accuracy'])}, "
        f"AUC {short(truth['auc'], GOALS['auc'])}.", "",
    ])


def write_card_section(card: Path, figures: dict[str, Any]) -> None:
    """Put :func:`card_section` into ``card`` before its Figures/Limitations, replacing an earlier one."""
    text = card.read_text(encoding="utf-8")
    if SECTION in text:
        start = text.index(SECTION)
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + text[end + 1:] if end >= 0 else text[:start]
    anchor = next((a for a in ("## Figures", "## Limitations") if a in text), None)
    section = card_section(figures) + "\n"
    text = text.replace(anchor, section + anchor, 1) if anchor else text.rstrip("\n") + "\n\n" + section
    card.write_text(text, encoding="utf-8")


def record_release(figures: dict[str, Any], segmenter: str, classifier: str, manifest: Path | None = None) -> None:
    """Write ``figures`` into both models' manifest entries (the thresholds included) and their cards."""
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
    for entry in (seg, clf):
        write_card_section(entry.path.parent / entry.info["card"], figures)
