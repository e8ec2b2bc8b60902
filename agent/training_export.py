"""Training data from reviews: what reviewers signed off, in the forms the trainers read
(``oncoagent export training-data``).

Only signed-off reviews count, one per job: its newest signed version (a case reopened and not yet signed again
counts with the version it replaces). Slide cases (``wsi-ctc``) become a YOLO data set under ``OUT/yolo``
(:mod:`agent.training_slides`: ``oncoagent train detector --data OUT/yolo``); MR cases (``mri-tumour``) case
folders under ``OUT/mri-cases`` (:mod:`agent.training_mri`: ``oncoagent train segmenter|classifier --data
OUT/mri-cases``). Each has a ``manifest.json`` saying which job, review version, reviewer and model version
every tile or case came from and what the reviewers decided. A case whose input or result is gone (purged) is
skipped with a warning and listed in the manifest.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.records import InputKind, Job
from agent.review_records import Decision, Review
from agent.training_mri import LABEL_MAP, MRCase, write_mr_cases
from agent.training_slides import DEFAULT_TILE_PX, SlideCase, reviewed_cells, write_yolo_set

if TYPE_CHECKING:
    from agent.store import Store

log = logging.getLogger(__name__)

SLIDE_PIPELINES = ("wsi-ctc",)
MR_PIPELINES = ("mri-tumour",)
EXPORTABLE = SLIDE_PIPELINES + MR_PIPELINES
YOLO_DIR = "yolo"
MR_DIR = "mri-cases"


@dataclass
class ExportOutcome:
    """What an export wrote: the YOLO ``data.yaml`` and the MR case folder (None: no such cases), how many
    reviews went into each, and the ones skipped with the reason."""

    data_yaml: Path | None = None
    mr_cases: Path | None = None
    slide_reviews: int = 0
    mr_reviews: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)


def export_training_data(store: Store, out: Path, since: float | None, pipelines: Sequence[str] = EXPORTABLE,
                         tile_px: int | None = None) -> ExportOutcome:
    """Write the signed-off reviews of ``pipelines`` signed since ``since`` under ``out`` (which must not hold
    an earlier export). ``tile_px``: the tile side (default: the input size of the job's model)."""
    unknown = sorted(set(pipelines) - set(EXPORTABLE))
    if unknown:
        raise ValueError(f"no training export for {', '.join(unknown)}: only {', '.join(EXPORTABLE)}")
    for sub in (YOLO_DIR, MR_DIR):
        if (out / sub).exists():
            raise FileExistsError(f"{out / sub} exists: export into a new folder")
    outcome = ExportOutcome()
    slides: list[SlideCase] = []
    series: list[MRCase] = []
    for review, job in store.signed_reviews(since, list(pipelines)):
        try:
            if job.pipeline in SLIDE_PIPELINES:
                slides.append(_slide_case(store, review, job))
            else:
                series.append(_mr_case(store, review, job))
        except (OSError, KeyError, ValueError) as exc:
            log.warning("job %d (review version %d) skipped: %s", job.id, review.version, exc)
            outcome.skipped.append({"job_id": job.id, "review_version": review.version, "reason": str(exc)})
    extra = {"exported_at": time.time(), "since": since, "skipped": outcome.skipped}
    if slides:
        size = tile_px or _model_tile_px(slides[0].job)
        outcome.data_yaml = write_yolo_set(slides, out / YOLO_DIR, size, extra)
        outcome.slide_reviews = len(slides)
    if series:
        outcome.mr_cases = write_mr_cases(series, out / MR_DIR, extra)
        outcome.mr_reviews = len(series)
    return outcome


def _result(job: Job) -> dict[str, Any]:
    if job.result_path is None or not (job.result_path / "result.json").is_file():
        raise FileNotFoundError(f"job {job.id} has no result folder (purged?)")
    doc: dict[str, Any] = json.loads((job.result_path / "result.json").read_text(encoding="utf-8"))
    return doc


def _input_paths(store: Store, job: Job) -> list[Path]:
    """The input's files as the worker hands them to the pipeline; FileNotFoundError when they are gone."""
    inp = store.get_input(job.input_id)
    paths = store.instance_paths(inp.id) if inp.kind is InputKind.DICOM_SERIES else [inp.path]
    if not paths or not all(p.exists() for p in paths):
        raise FileNotFoundError(f"job {job.id}: the input's files are gone (purged?)")
    return paths


def _model_version(job: Job, decided: list[Decision]) -> str:
    """The model the reviewer judged (as the decisions record it), else the job's models as ``name@version``."""
    judged = sorted({d.model_version for d in decided if d.model_version})
    if judged:
        return ",".join(judged)
    return ",".join(f"{m.get('name')}@{m.get('version')}" for m in job.models)


def _slide_case(store: Store, review: Review, job: Job) -> SlideCase:
    summary = _result(job).get("summary") or {}
    detections = summary.get("detections")
    if detections is None:
        assert job.result_path is not None
        data = json.loads((job.result_path / "detections.json").read_text(encoding="utf-8"))
        detections = data.get("detections", []) if isinstance(data, dict) else data
    decided = store.decisions(review.id)
    declared = (summary.get("slide") or {}).get("mpp_um") or [None]
    return SlideCase(
        review=review, job=job, slide_key=store.get_input(job.input_id).key, paths=_input_paths(store, job),
        cells=reviewed_cells(list(detections), decided), mpp_um=float(summary["processing"]["mpp_um"]),
        fallback_mpp_um=None if declared[0] is None else float(declared[0]),
        model_version=_model_version(job, decided),
    )


def _mr_case(store: Store, review: Review, job: Job) -> MRCase:
    summary = _result(job).get("summary") or {}
    assert job.result_path is not None
    if not (job.result_path / LABEL_MAP).is_file():
        raise FileNotFoundError(f"job {job.id}: no {LABEL_MAP} in its result folder")
    decided = store.decisions(review.id)
    return MRCase(review, job, _input_paths(store, job), list(summary.get("lesions") or []), decided,
                  _model_version(job, decided))


def _model_tile_px(job: Job) -> int:
    """The input size of the job's model as its registry entry records it (``imgsz``); the cutter's default
    when the entry is gone or names none."""
    from pipelines.errors import PipelineError
    from pipelines.models.registry import entry

    for model in job.models:
        try:
            info = entry(str(model.get("name"))).info
        except (PipelineError, OSError, KeyError, ValueError):
            continue
        if info.get("imgsz"):
            return int(info["imgsz"])
    return DEFAULT_TILE_PX
