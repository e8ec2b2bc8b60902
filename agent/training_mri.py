"""Reviewed MR series as case folders for ``oncoagent train segmenter|classifier`` (part of ``oncoagent export
training-data``).

The layout is :mod:`pipelines.mri.cases`' own, written by its :func:`~pipelines.mri.cases.write_case_folder`:
one folder per case with ``image.nii.gz`` (the series as the pipeline loads it,
:func:`pipelines.mri.volume.load_series`) and ``mask.nii.gz`` (the AI's ``lesions.nii.gz`` with the lesions the
reviewer rejected set to background), and ``labels.csv`` naming the class of each lesion kept (after the
review; a lesion nobody decided on keeps the AI's class).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.records import Job
from agent.review_records import Decision, DecisionKind, Review

log = logging.getLogger(__name__)

LABEL_MAP = "lesions.nii.gz"  # the mri-tumour pipeline's label map in its result folder


@dataclass(frozen=True)
class MRCase:
    """A signed-off MR review ready to write: the job, its review, the series' files and the AI's lesions."""

    review: Review
    job: Job
    paths: list[Path]
    lesions: list[dict[str, Any]]
    decided: list[Decision]
    model_version: str

    @property
    def case_id(self) -> str:
        return f"job{self.job.id:06d}-v{self.review.version}"


def lesion_outcomes(case: MRCase) -> dict[int, tuple[str, str | None]]:
    """Each AI lesion's index: (what the reviewer did, its class after the review; None when rejected)."""
    by_target = {d.target: d for d in case.decided}
    out: dict[int, tuple[str, str | None]] = {}
    for lesion in case.lesions:
        index, ai_label = int(lesion["index"]), str(lesion.get("label"))
        decision = by_target.get(f"l:{index}")
        if decision is None:
            out[index] = ("undecided", ai_label)
        elif decision.decision is DecisionKind.REJECTED:
            out[index] = ("rejected", None)
        else:
            label = decision.label or ai_label
            out[index] = ("confirmed" if label == ai_label else "reclassed", label)
    return out


def _cases(cases: list[MRCase], entries: list[dict[str, Any]]) -> Iterator[Any]:
    """The pipelines' :class:`~pipelines.mri.cases.Case` of each review, one at a time (a volume is large);
    the manifest entry of each goes to ``entries``."""
    import numpy as np
    import SimpleITK as sitk

    from pipelines.mri.cases import CLASSES, Case
    from pipelines.mri.volume import load_series

    for case in cases:
        assert case.job.result_path is not None
        outcomes = lesion_outcomes(case)
        volume = load_series(case.paths)
        found = sitk.ReadImage(str(case.job.result_path / LABEL_MAP))
        labels = sitk.GetArrayFromImage(found).astype(np.uint16)
        rejected = [index for index, (what, _) in outcomes.items() if what == "rejected"]
        labels[np.isin(labels, rejected)] = 0
        mask = sitk.GetImageFromArray(labels)
        mask.CopyInformation(volume.image)  # type: ignore[no-untyped-call]
        classes: dict[int, str] = {index: str(label) for index, (_, label) in outcomes.items() if label in CLASSES}
        counts = [what for what, _ in outcomes.values()]
        entries.append({
            "case": case.case_id, "job_id": case.job.id, "pipeline": case.job.pipeline,
            "review_version": case.review.version, "reviewer": case.review.signed_by_name,
            "signed_at": case.review.signed_at, "model_version": case.model_version,
            **{k: counts.count(k) for k in ("confirmed", "reclassed", "rejected", "undecided")},
            "added": sum(1 for d in case.decided if d.decision is DecisionKind.ADDED),
            "lesions": {str(index): label for index, label in sorted(classes.items())},
        })
        log.info("job %d (review version %d): case %s, %d lesion(s) kept, %d rejected", case.job.id,
                 case.review.version, case.case_id, len(classes), len(rejected))
        image = sitk.Cast(volume.image, sitk.sitkFloat32)  # type: ignore[no-untyped-call]
        yield Case(case.case_id, image, mask, classes)


def write_mr_cases(cases: list[MRCase], root: Path, extra: dict[str, Any]) -> Path:
    """Write the case folders, ``labels.csv`` and ``manifest.json`` under ``root``."""
    from pipelines.mri.cases import write_case_folder

    entries: list[dict[str, Any]] = []
    write_case_folder(_cases(cases, entries), root)
    totals = {k: sum(e[k] for e in entries) for k in ("confirmed", "reclassed", "rejected", "undecided", "added")}
    (root / "manifest.json").write_text(json.dumps({**extra, "totals": totals, "cases": entries}, indent=1),
                                        encoding="utf-8")
    return root
