"""A reprocessed result against the previous result of the same input: concordant, or discordant and why.

:func:`figures` keeps what a comparison needs of a result (its pipeline, version, models and the findings a
reviewer acts on), small enough to store with the batch run that took the input; :func:`compare` judges a new
result's figures against the previous ones with the batch's thresholds (``scheduler.batches[].compare``):

* slides (``ctc_count``/``ctm_count`` in the summary): a count that moves by at least ``count_abs`` and by at
  least ``count_rel`` of the previous count; a triage priority that changes level;
* MR series (``lesions`` in the summary): a lesion found (no previous lesion within ``lesion_match_mm`` of its
  centroid) or lost, a lesion whose malignancy class flipped, the series' finding (any lesion malignant) flipped;
* any pipeline: a change of the ``priority`` level its summary names.

A result whose counts moved within the thresholds is ``changed`` (concordant, with what moved); one whose
figures are the same is ``concordant``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from agent.config import CompareSettings
from agent.records import Verdict

COUNTS = ("ctc_count", "ctm_count")


def figures(pipeline: str, pipeline_version: str, models: Sequence[Mapping[str, str]], job_id: int,
            summary: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a comparison needs of one result (JSON-ready)."""
    summary = summary or {}
    out: dict[str, Any] = {
        "job_id": job_id, "pipeline": pipeline, "pipeline_version": pipeline_version,
        "models": [f"{m.get('name')} {m.get('version')}" for m in models],
    }
    for key in (*COUNTS, "priority"):
        if key in summary:
            out[key] = summary[key]
    if isinstance(summary.get("lesions"), list):
        out["lesions"] = [
            {"index": les.get("index"), "centroid_mm": les.get("centroid_lps_mm"), "label": les.get("label"),
             "probability": les.get("malignancy_probability")}
            for les in summary["lesions"] if isinstance(les, Mapping)
        ]
    return out


def compare(previous: Mapping[str, Any] | None, new: Mapping[str, Any], limits: CompareSettings
            ) -> tuple[Verdict, tuple[str, ...]]:
    """The verdict on ``new`` given ``previous`` (None: the input had no result before), with what changed."""
    if previous is None:
        return Verdict.NEW, ()
    reasons = _differences(previous, new, limits)
    if reasons:
        return Verdict.DISCORDANT, reasons
    moved = _differences(previous, new, limits.model_copy(update={"count_abs": 1, "count_rel": 0.0}))
    return (Verdict.CHANGED if moved else Verdict.CONCORDANT), moved


def _differences(previous: Mapping[str, Any], new: Mapping[str, Any], limits: CompareSettings) -> tuple[str, ...]:
    reasons = [*_counts(previous, new, limits), *_priority(previous, new)]
    if "lesions" in previous or "lesions" in new:
        reasons += _lesions(previous.get("lesions") or [], new.get("lesions") or [], limits.lesion_match_mm)
    return tuple(reasons)


def _counts(previous: Mapping[str, Any], new: Mapping[str, Any], limits: CompareSettings) -> list[str]:
    reasons = []
    for key in COUNTS:
        old, now = previous.get(key), new.get(key)
        if not isinstance(old, int) or not isinstance(now, int):
            continue
        moved = abs(now - old)
        if moved and moved >= limits.count_abs and moved >= limits.count_rel * old:
            name = key.removesuffix("_count").upper()
            reasons.append(f"{name} count {old} → {now} ({now - old:+d})")
    return reasons


def _priority(previous: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    old, now = previous.get("priority"), new.get("priority")
    if old is not None and now is not None and old != now:
        return [f"priority {old} → {now}"]
    return []


def _lesions(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]], match_mm: float) -> list[str]:
    reasons = []
    unmatched = list(old)
    for lesion in new:
        twin = _nearest(lesion, unmatched, match_mm)
        if twin is None:
            reasons.append(f"lesion found at {_where(lesion)}" + _class(lesion))
            continue
        unmatched.remove(twin)
        if twin.get("label") != lesion.get("label") and lesion.get("label") in ("malignant", "benign"):
            reasons.append(f"lesion at {_where(lesion)}: {twin.get('label')} → {lesion.get('label')}")
    reasons += [f"lesion lost at {_where(lesion)}" + _class(lesion) for lesion in unmatched]
    was = any(les.get("label") == "malignant" for les in old)
    now = any(les.get("label") == "malignant" for les in new)
    if was != now:
        reasons.append("series finding: " + ("malignant lesion → none malignant" if was else
                                             "none malignant → malignant lesion"))
    return reasons


def _nearest(lesion: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]], within_mm: float
             ) -> Mapping[str, Any] | None:
    here = lesion.get("centroid_mm")
    best, best_d = None, within_mm
    for other in candidates:
        there = other.get("centroid_mm")
        if not here or not there:
            continue
        d = math.dist(here, there)
        if d <= best_d:
            best, best_d = other, d
    return best


def _where(lesion: Mapping[str, Any]) -> str:
    centroid = lesion.get("centroid_mm")
    return "(" + ", ".join(f"{v:.0f}" for v in centroid) + ") mm" if centroid else "an unknown place"


def _class(lesion: Mapping[str, Any]) -> str:
    label = lesion.get("label")
    return f" ({label})" if label in ("malignant", "benign") else ""
