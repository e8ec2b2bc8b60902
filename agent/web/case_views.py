"""What the worklist and the case pages show of a case, as plain JSON-ready data.

Who sees what: pathologists the slide pipelines' cases, radiologists the MR pipelines', viewers both (without
deciding), admins everything. A slide case's counts follow the reviewer: the AI's detections count as the AI
classed them until rejected or reclassed, plus the cells the reviewer added.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from agent.config import Priority
from agent.progress import JobProgress, eta_s
from agent.review_records import Decision, DecisionKind, Role
from agent.store.cases import CaseRow

PATHOLOGY_PIPELINES = ("wsi-ctc",)
RADIOLOGY_PIPELINES = ("mri-tumour",)
SLIDE_CLASSES = ("CTC", "CTM")
LESION_CLASSES = ("malignant", "benign")


def visible_pipelines(role: Role) -> tuple[str, ...] | None:
    """The pipelines whose cases ``role`` sees; None: all."""
    if role is Role.ADMIN:
        return None
    if role is Role.PATHOLOGIST:
        return PATHOLOGY_PIPELINES
    if role is Role.RADIOLOGIST:
        return RADIOLOGY_PIPELINES
    return PATHOLOGY_PIPELINES + RADIOLOGY_PIPELINES


def may_see(role: Role, case: CaseRow) -> bool:
    pipelines = visible_pipelines(role)
    return pipelines is None or case.pipeline in pipelines


def may_decide(role: Role, case: CaseRow) -> bool:
    return role is not Role.VIEWER and may_see(role, case)


def is_slide_case(case: CaseRow) -> bool:
    return case.pipeline in PATHOLOGY_PIPELINES


def priority_name(value: int) -> str:
    try:
        return Priority(value).name.lower()
    except ValueError:
        return str(value)


def context(case: CaseRow) -> tuple[str | None, str | None]:
    """(accession, patient ID) where known: a slide's context, a DICOM series' header (accession only)."""
    slide_context = case.attrs.get("context") or {}
    accession = slide_context.get("accession_number") or case.attrs.get("AccessionNumber")
    return (str(accession) if accession else None,
            str(slide_context["patient_id"]) if slide_context.get("patient_id") else None)


def display_name(case: CaseRow) -> str:
    return str(case.attrs.get("file_name") or case.attrs.get("SeriesDescription") or Path(case.input_key).name)


def ai_score(case: CaseRow) -> float | None:
    summary = case.summary or {}
    if "priority_score" in summary:
        return float(summary["priority_score"])
    series = summary.get("series_summary") or {}
    value = series.get("max_malignancy_probability")
    return None if value is None else float(value)


def finding(case: CaseRow) -> str:
    summary = case.review_result or case.summary or {}
    if case.job_status in {"failed", "cancelled"}:
        return case.last_error or "failed"
    if "counts" in summary:
        counts = summary["counts"]
        words = ", ".join(f"{counts.get(c, 0)} {c}" for c in SLIDE_CLASSES)
        density = (summary.get("density_per_mm2") or {}).get("CTC")
        return words + (f" ({density:.1f} CTC/mm²)" if density is not None and case.review_result is None else "")
    if case.review_result is not None and "lesions" in summary:
        kept = [lesion for lesion in summary["lesions"] if lesion.get("accepted", True)]
        malignant = sum(1 for lesion in kept if lesion.get("label") == "malignant")
        return f"{len(kept)} lesion(s) confirmed, {malignant} malignant"
    series = summary.get("series_summary") or {}
    return str(series.get("finding") or summary.get("finding") or "")


def status_text(case: CaseRow, now: float | None = None) -> str:
    """``analysing, 45 % (tiles 450/1000), about 2 min 05 s left`` while it runs; the status otherwise."""
    status = case.status
    if status != "analysing":
        return status.replace("_", " ")
    done, total, stage, at = case.progress
    if done is None or not total or at is None:
        return "analysing" + (f" ({stage})" if stage else "")
    progress = JobProgress(done, total, stage, at, min(100, 100 * done // total),
                           eta_s(case.started_at, at, done, total, time.time() if now is None else now))
    return f"analysing, {progress.text()}"


def row_json(case: CaseRow, validation_mark: str | None = None) -> dict[str, Any]:
    """A worklist row; ``validation_mark`` is the "model not validated at this site" text while the result's
    models have no acceptance record here (:mod:`agent.site_marks`), else None."""
    accession, patient = context(case)
    return {
        "job_id": case.job_id, "pipeline": case.pipeline, "kind": case.input_kind, "name": display_name(case),
        "accession": accession, "patient_id": patient, "priority": priority_name(case.priority),
        "ai_score": ai_score(case), "ai_priority": (case.summary or {}).get("priority"),
        "finding": finding(case), "status": case.status,
        "status_text": status_text(case), "received_at": case.created_at, "analysed_at": case.finished_at,
        "holder": case.holder, "signed_by": case.signed_by, "signed_at": case.signed_at,
        "discordant": case.discordant, "no_context": case.unsent_reason is not None,
        "validation_mark": validation_mark,
        "thumbnail": f"/api/cases/{case.job_id}/thumbnail" if case.result_path else None,
    }


def detections(case: CaseRow) -> list[dict[str, Any]]:
    """The AI's detections of a slide case (class, confidence, level-0 box), indexed as the result lists them."""
    found = (case.summary or {}).get("detections")
    if found is None and case.result_path:
        path = Path(case.result_path) / "detections.json"
        if path.is_file():
            data = json.loads(path.read_text())
            found = data.get("detections", data) if isinstance(data, dict) else data
    return list(found or [])


def slide_counts(found: list[dict[str, Any]], decided: list[Decision]) -> dict[str, Any]:
    by_target = {d.target: d for d in decided}
    ai = Counter(str(d["class"]) for d in found)
    result: Counter[str] = Counter()
    for index, detection in enumerate(found):
        decision = by_target.get(f"d:{index}")
        if decision is None:
            result[str(detection["class"])] += 1
        elif decision.decision is not DecisionKind.REJECTED:
            result[decision.label or str(detection["class"])] += 1
    added = [d for d in decided if d.decision is DecisionKind.ADDED]
    for d in added:
        result[d.label or "CTC"] += 1
    kinds = Counter(d.decision.value for d in decided if d.target.startswith("d:"))
    return {
        "ai": {c: ai.get(c, 0) for c in SLIDE_CLASSES},
        "result": {c: result.get(c, 0) for c in SLIDE_CLASSES},
        "confirmed": kinds.get("confirmed", 0), "rejected": kinds.get("rejected", 0), "added": len(added),
        "undecided": len(found) - sum(kinds.values()),
    }


def lesions(case: CaseRow) -> list[dict[str, Any]]:
    """The AI's lesions of an MR case (index = the lesion's value in the label map), as the result lists them."""
    return list((case.summary or {}).get("lesions") or [])


def mr_counts(found: list[dict[str, Any]], decided: list[Decision]) -> dict[str, Any]:
    """An MR case's tally: lesions accepted, rejected, undecided; and by class as the AI classed them and after
    the reviewer (a rejected lesion counts in no class, a confirmed one in the class it was confirmed as)."""
    by_target = {d.target: d for d in decided}
    ai = Counter(str(lesion.get("label")) for lesion in found)
    result: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for lesion in found:
        decision = by_target.get(f"l:{lesion['index']}")
        kinds[decision.decision.value if decision is not None else "undecided"] += 1
        if decision is None:
            result[str(lesion.get("label"))] += 1
        elif decision.decision is not DecisionKind.REJECTED:
            result[decision.label or str(lesion.get("label"))] += 1
    return {
        "ai": {c: ai.get(c, 0) for c in LESION_CLASSES},
        "result": {c: result.get(c, 0) for c in LESION_CLASSES},
        "accepted": kinds.get("confirmed", 0), "rejected": kinds.get("rejected", 0),
        "undecided": kinds.get("undecided", 0), "malignant": result.get("malignant", 0),
    }


def case_counts(case: CaseRow, decided: list[Decision]) -> dict[str, Any]:
    """The case's tally as the reviewer left it: a slide's (:func:`slide_counts`) or an MR series' (mr_counts)."""
    return slide_counts(detections(case), decided) if is_slide_case(case) else mr_counts(lesions(case), decided)


def decision_json(decision: Decision) -> dict[str, Any]:
    return {"target": decision.target, "decision": decision.decision.value, "label": decision.label,
            "geometry": decision.geometry, "by": decision.user_name, "at": decision.at}


def corrected_result(case: CaseRow, decided: list[Decision]) -> dict[str, Any]:
    """The case's result as the reviewer left it: a slide's counts and kept/added cells, an MR series' lesions
    each accepted or not, with its class after correction. This is what a sign-off makes final."""
    by_target = {d.target: d for d in decided}
    if is_slide_case(case):
        found = detections(case)
        kept: list[dict[str, Any]] = []
        for index, detection in enumerate(found):
            decision = by_target.get(f"d:{index}")
            if decision is not None and decision.decision is DecisionKind.REJECTED:
                continue
            label = (decision.label if decision is not None else None) or str(detection["class"])
            kept.append({"class": label, "confidence": detection.get("confidence"), "l0_box": detection["l0_box"],
                         "source": "ai"})
        kept += [{"class": d.label or "CTC", "confidence": None, "l0_box": d.geometry, "source": "added"}
                 for d in decided if d.decision is DecisionKind.ADDED]
        return {"counts": slide_counts(found, decided)["result"], "detections": kept}
    lesions = []
    for lesion in (case.summary or {}).get("lesions") or []:
        decision = by_target.get(f"l:{lesion.get('index')}")
        accepted = decision is None or decision.decision is not DecisionKind.REJECTED
        label = (decision.label if decision is not None else None) or lesion.get("label")
        lesions.append({**lesion, "accepted": accepted, "label": label})
    return {"lesions": lesions}
