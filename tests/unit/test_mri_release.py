"""The release evaluation's set checks and the card section it writes (which set chose what, the goals)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.mri.release import ReleaseSets, SeedRange, write_card_section

METRICS = {"n": 61, "accuracy": 0.9, "sensitivity": 0.8, "specificity": 0.95, "auc": 0.97, "threshold": 0.3}
FIGURES = {
    "selection": {"seeds": "80000..80029", "cases": 30, "threshold": 0.4,
                  "mean_dice_by_threshold": {"0.3": 0.84, "0.4": 0.85}},
    "classifier_selection": {"operating_threshold": 0.3, "balanced_accuracy": 0.9, "saved_threshold": 0.5,
                             "at_saved_threshold": {**METRICS, "sensitivity": 0.55}},
    "test": {"seeds": "81000..81029", "cases": 30, "mean_dice": 0.87, "min_dice": 0.6, "lesions_found": 61,
             "lesions_true": 61, "false_lesions": 6},
    "chain_test": {**METRICS, "lesions_found": 61, "lesions_true": 61, "false_lesions": 6,
                   "false_lesions_called_malignant": 0, "implausible": 1},
    "test_truth_masks": {**METRICS, "accuracy": 0.93},
}


def test_overlapping_sets_are_refused() -> None:
    ReleaseSets(SeedRange(80_000, 30), SeedRange(81_000, 30), (SeedRange(10_000, 100),)).check()
    with pytest.raises(ValueError, match=r"test seeds 80020\.\.80049 overlap 80000\.\.80029"):
        ReleaseSets(SeedRange(80_000, 30), SeedRange(80_020, 30)).check()
    with pytest.raises(ValueError, match=r"validation seeds 10050\.\.10079 overlap training seeds"):
        ReleaseSets(SeedRange(10_050, 30), SeedRange(81_000, 30), (SeedRange(10_000, 100),)).check()


def test_the_card_section_says_which_set_chose_what_and_reports_shortfalls(tmp_path: Path) -> None:
    card = tmp_path / "card.md"
    card.write_text("# Model card\n\n## Evaluation\n\nold\n\n## Limitations\n\n- x\n", encoding="utf-8")
    write_card_section(card, FIGURES)
    write_card_section(card, FIGURES)  # written again: replaced, not repeated
    text = card.read_text(encoding="utf-8")
    assert text.count("## Release evaluation: three sets") == 1
    assert text.index("## Release evaluation") < text.index("## Limitations")
    assert "seeds 80000..80029 (30): chose the U-Net's probability threshold 0.4" in text
    assert "the classifier's malignancy threshold 0.3" in text and "scored once" in text
    assert "Dice **not met** (0.8700 < 0.89)" in text and "truth-mask accuracy met" in text
    assert "| the chain (U-Net mask -> radiomics -> SVM) | 61 | 0.9000 | 0.8000 |" in text
