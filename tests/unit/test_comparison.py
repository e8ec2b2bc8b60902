"""A reprocessed result against the previous one (agent.comparison): the thresholds, priorities, MR lesions."""

from __future__ import annotations

from typing import Any

import pytest

from agent.comparison import compare, figures
from agent.config import CompareSettings
from agent.records import Verdict

LIMITS = CompareSettings(count_abs=3, count_rel=0.2, lesion_match_mm=10)


def slide(ctc: int, ctm: int = 0, priority: str = "medium") -> dict[str, Any]:
    return figures("wsi-ctc", "1.0.0", [], 1, {"ctc_count": ctc, "ctm_count": ctm, "priority": priority,
                                               "detections": [{"x": 1}] * ctc})


def mr(*lesions: tuple[tuple[float, float, float], str]) -> dict[str, Any]:
    items = [{"index": i + 1, "centroid_lps_mm": list(c), "label": label, "malignancy_probability": 0.5}
             for i, (c, label) in enumerate(lesions)]
    return figures("mri-tumour", "1.0.0", [{"name": "unet", "version": "1"}], 2, {"lesions": items})


def test_figures_keep_what_a_comparison_needs_and_not_the_detections() -> None:
    kept = slide(5)
    assert kept == {"job_id": 1, "pipeline": "wsi-ctc", "pipeline_version": "1.0.0", "models": [],
                    "ctc_count": 5, "ctm_count": 0, "priority": "medium"}
    assert mr(((0, 0, 0), "benign"))["models"] == ["unet 1"]


def test_a_first_result_is_new() -> None:
    assert compare(None, slide(3), LIMITS) == (Verdict.NEW, ())


@pytest.mark.parametrize(("before", "after", "discordant"), [
    (10, 12, False),  # moved by 2 < count_abs
    (10, 13, True),  # 3 ≥ count_abs and 3 ≥ 20 % of 10
    (100, 115, False),  # 15 < 20 % of 100
    (100, 120, True),
    (0, 3, True),  # from none: the absolute threshold decides
    (5, 5, False),
])
def test_counts_are_discordant_beyond_both_thresholds(before: int, after: int, discordant: bool) -> None:
    verdict, reasons = compare(slide(before), slide(after), LIMITS)
    assert verdict is (Verdict.DISCORDANT if discordant else Verdict.CHANGED if after != before else
                       Verdict.CONCORDANT)
    assert reasons == ((f"CTC count {before} → {after} ({after - before:+d})",) if after != before else ())


def test_a_priority_change_is_discordant_even_when_counts_agree() -> None:
    assert compare(slide(4, priority="medium"), slide(5, priority="high"), LIMITS) == (
        Verdict.DISCORDANT, ("priority medium → high",))


def test_lesions_found_lost_and_flipped() -> None:
    before = mr(((0, 0, 0), "benign"), ((50, 0, 0), "benign"))
    same = mr(((2, 1, 0), "benign"), ((51, 0, 0), "benign"))  # moved a little: the same lesions
    assert compare(before, same, LIMITS) == (Verdict.CONCORDANT, ())

    after = mr(((1, 0, 0), "malignant"), ((0, 80, 0), "benign"))
    verdict, reasons = compare(before, after, LIMITS)
    assert verdict is Verdict.DISCORDANT
    assert reasons == ("lesion at (1, 0, 0) mm: benign → malignant", "lesion found at (0, 80, 0) mm (benign)",
                       "lesion lost at (50, 0, 0) mm (benign)", "series finding: none malignant → malignant lesion")


def test_an_unrelated_pipeline_compares_by_its_priority_only() -> None:
    old = figures("other", "1", [], 3, {"score": 0.1})
    assert compare(old, figures("other", "1", [], 3, {"score": 0.9}), LIMITS) == (Verdict.CONCORDANT, ())
