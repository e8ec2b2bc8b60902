"""Review statistics per model version (agent.store.review_stats) from seeded reviews and decisions.

Backend-neutral: tests/integration/test_review_stats_postgres.py collects them again on PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.records import InputKind
from agent.review_records import DecisionKind, Role
from agent.store import Store

T0 = 1_800_000_000.0
SLIDE_MODELS = [{"name": "ctc-yolo", "version": "1.2"}]
MR_MODELS = [{"name": "seg", "version": "3"}, {"name": "clf", "version": "1"}]


def case(store: Store, n: int, pipeline: str, summary: dict[str, Any], models: list[dict[str, str]]) -> int:
    """A succeeded job of ``pipeline`` on an input of its own, with ``summary`` as its result."""
    inp, _ = store.upsert_file_input(InputKind.SLIDE, Path(f"/slides/{n}.svs"), f"f{n}", {})
    job = store.enqueue(inp.id, pipeline, "1")[0].id
    claimed = store.claim()
    assert claimed is not None and claimed.id == job
    store.succeed(job, Path(f"/results/{n}"), summary, models)
    return job


def slide(classes: list[str]) -> dict[str, Any]:
    return {"counts": {"CTC": classes.count("CTC"), "CTM": classes.count("CTM")},
            "detections": [{"class": c, "confidence": 0.9} for c in classes]}


def review(store: Store, job: int, reviewer: int, decisions: list[tuple[str, str, str | None]], version: str | None,
           sign: bool = True) -> int:
    started = store.start_review(job, reviewer, T0)
    for target, kind, label in decisions:
        geometry = [0, 0, 10, 10] if kind == "added" else None
        store.decide(started.id, target, DecisionKind(kind), label, geometry, version, reviewer, T0 + 1)
    if sign:
        store.sign_off(started.id, reviewer, {}, None, T0 + 2)
    return started.id


@pytest.fixture
def reviewer(store: Store) -> int:
    return store.add_user("alice", Role.PATHOLOGIST, None, T0).id


def test_slides_count_confirmed_rejected_reclassed_and_added_per_model_version(store: Store, reviewer: int) -> None:
    v1, v2 = "ctc-yolo@1.2", "ctc-yolo@2.0"
    a = case(store, 1, "wsi-ctc", slide(["CTC", "CTC", "CTM", "CTC"]), SLIDE_MODELS)
    review(store, a, reviewer, [("d:0", "confirmed", "CTC"), ("d:1", "rejected", None),
                                ("d:2", "confirmed", "CTC"),  # CTM → CTC: reclassed
                                ("a:1", "added", "CTC"), ("a:2", "added", "CTM")], v1)
    b = case(store, 2, "wsi-ctc", slide(["CTC", "CTC"]), SLIDE_MODELS)
    review(store, b, reviewer, [("d:1", "confirmed", "CTM")], v1)  # one reclassed, one left as the AI found it
    c = case(store, 3, "wsi-ctc", slide(["CTC"] * 5), SLIDE_MODELS)
    review(store, c, reviewer, [("d:0", "rejected", None), ("d:1", "rejected", None)], v2)

    stats = {s.model_version: s for s in store.review_stats()}
    assert set(stats) == {v1, v2}
    first = stats[v1]
    assert (first.pipeline, first.cases, first.shown, first.confirmed, first.rejected, first.reclassed,
            first.added) == ("wsi-ctc", 2, 6, 3, 1, 2, 2)
    assert first.precision == pytest.approx(5 / 6) and first.added_per_case == pytest.approx(1.0)
    second = stats[v2]
    assert (second.cases, second.shown, second.rejected, second.added) == (1, 5, 2, 0)
    assert second.precision == pytest.approx(3 / 5) and second.added_per_case == 0


def test_only_signed_off_reviews_count_and_a_case_without_decisions_takes_its_jobs_models(
        store: Store, reviewer: int) -> None:
    signed = case(store, 1, "wsi-ctc", slide(["CTC", "CTC", "CTC"]), SLIDE_MODELS)
    review(store, signed, reviewer, [], None)  # every detection kept as the AI found it
    open_case = case(store, 2, "wsi-ctc", slide(["CTC"]), SLIDE_MODELS)
    review(store, open_case, reviewer, [("d:0", "rejected", None)], "ctc-yolo@1.2", sign=False)

    [stats] = store.review_stats()
    assert (stats.model_version, stats.cases, stats.shown, stats.rejected, stats.precision) == (
        "ctc-yolo@1.2", 1, 3, 0, 1.0)


def test_a_reopened_case_counts_once_with_its_signed_version(store: Store, reviewer: int) -> None:
    job = case(store, 1, "wsi-ctc", slide(["CTC", "CTC"]), SLIDE_MODELS)
    review(store, job, reviewer, [("d:0", "rejected", None)], "m@1")
    again = store.reopen_review(job, reviewer, T0 + 10)
    store.decide(again.id, "d:1", DecisionKind.REJECTED, None, None, "m@1", reviewer, T0 + 11)
    assert [(s.cases, s.rejected) for s in store.review_stats()] == [(1, 1)]  # version 2 is not signed yet
    store.sign_off(again.id, reviewer, {}, None, T0 + 12)
    assert [(s.cases, s.rejected, s.precision) for s in store.review_stats()] == [(1, 2, 0.0)]


def test_mr_lesions_accepted_and_rejected_and_since(store: Store, reviewer: int) -> None:
    job = case(store, 1, "mri-tumour", {"lesion_count": 3, "lesions": [{}, {}, {}]}, MR_MODELS)
    review(store, job, reviewer, [("l:1", "confirmed", "malignant"), ("l:2", "rejected", None)], None)
    [stats] = store.review_stats()
    assert (stats.pipeline, stats.model_version, stats.shown, stats.confirmed, stats.rejected, stats.reclassed) == (
        "mri-tumour", "seg@3,clf@1", 3, 1, 1, 0)
    assert stats.precision == pytest.approx(2 / 3)
    assert store.review_stats(since=T0 + 3) == []
    assert len(store.review_stats(since=T0)) == 1
