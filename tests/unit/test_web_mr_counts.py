"""An MR case's tally (agent/web/case_views.py mr_counts): the AI's classes, then the reviewer's corrections."""

from __future__ import annotations

from agent.review_records import Decision, DecisionKind
from agent.web.case_views import mr_counts

LESIONS = [{"index": 1, "label": "malignant"}, {"index": 2, "label": "benign"}, {"index": 3, "label": "malignant"},
           {"index": 4, "label": "not classified"}]


def decision(target: str, kind: DecisionKind, label: str | None = None) -> Decision:
    return Decision(target, kind, label, None, "unet@1,svm@1", 1, "rita", 0.0)


def test_undecided_lesions_count_as_the_ai_classed_them() -> None:
    assert mr_counts(LESIONS, []) == {"ai": {"malignant": 2, "benign": 1}, "result": {"malignant": 2, "benign": 1},
                                      "accepted": 0, "rejected": 0, "undecided": 4, "malignant": 2}


def test_rejected_lesions_leave_the_result_and_reclassed_ones_move() -> None:
    decided = [decision("l:1", DecisionKind.REJECTED), decision("l:2", DecisionKind.CONFIRMED, "malignant"),
               decision("l:4", DecisionKind.CONFIRMED, "benign"), decision("d:0", DecisionKind.REJECTED),
               decision("l:9", DecisionKind.REJECTED)]  # not a lesion of this case: ignored
    assert mr_counts(LESIONS, decided) == {"ai": {"malignant": 2, "benign": 1},
                                           "result": {"malignant": 2, "benign": 1},
                                           "accepted": 2, "rejected": 1, "undecided": 1, "malignant": 2}
    accepted_as_is = [decision("l:3", DecisionKind.CONFIRMED)]
    assert mr_counts(LESIONS, accepted_as_is)["result"] == {"malignant": 2, "benign": 1}
