"""Running one pipeline on one input into a result folder: ``result.json``, the pipeline's files, its reports.

The folder is built under a staging name and renamed into place only when complete, so a result folder is
either absent or whole; a re-run replaces it instead of adding a second one. The reports are the second stage
of every run (:func:`reports.render.write_reports`): an output the input calls for that could not be made
fails the run with :class:`OutputsMissingError` (or :class:`OutputsDelayedError` where the cause may pass),
so that no job succeeds while its findings cannot reach PACS.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from agent import failpoints
from agent.errors import OncoAgentError, TransientError
from agent.site_marks import result_mark
from pipelines.base import Pipeline, PipelineInput
from pipelines.durable import replace_dir, write_bytes_durably
from reports.outcome import DicomOutput, MissingOutput
from reports.render import write_reports
from reports.validation_mark import MARK_KEY

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"


class OutputsMissingError(OncoAgentError):
    """Outputs the input calls for (SR, SEG, PDF…) could not be made; the message lists each with its reason."""


class OutputsDelayedError(TransientError):
    """Like :class:`OutputsMissingError`, but every cause may pass (a full disk): the job is retried."""


def _missing_error(missing: tuple[MissingOutput, ...]) -> OutputsMissingError | OutputsDelayedError:
    text = "; ".join(str(m) for m in missing)
    if all(m.transient for m in missing):
        return OutputsDelayedError(f"outputs could not be written, will retry: {text}")
    return OutputsMissingError(f"outputs the input calls for could not be made: {text}")


def _pipeline_dicom(folder: Path, known: set[str]) -> tuple[list[DicomOutput], list[MissingOutput]]:
    """DICOM objects a pipeline wrote itself at the top of its result folder (the reports' own are ``known``):
    they go to PACS like the reports' objects. One that cannot be read is an output that could not be made."""
    found: list[DicomOutput] = []
    unreadable: list[MissingOutput] = []
    for path in sorted(folder.glob("*.dcm")):
        if path.name in known:
            continue
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
            found.append(DicomOutput(path.name, str(header.SOPClassUID), str(header.SOPInstanceUID)))
        except (OSError, InvalidDicomError, ValueError, AttributeError) as exc:
            unreadable.append(MissingOutput(path.name, f"the pipeline wrote it but it is not readable DICOM: {exc}"))
    return found, unreadable


def execute(
    pipeline: Pipeline,
    inp: PipelineInput,
    target: Path,
    staging_root: Path,
    extra: dict[str, Any] | None = None,
    *,
    data_dir: Path,
) -> dict[str, Any]:
    """Run ``pipeline`` on ``inp`` and leave its complete result folder at ``target``; return result.json.
    ``data_dir`` holds the site-validation records: while a model the pipeline used has none, result.json's
    ``validation_mark`` says so and so does every report (:mod:`agent.site_marks`)."""
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = staging_root / f"{target.name}.{uuid.uuid4().hex[:8]}.partial"
    staging.mkdir()
    try:
        started = time.time()
        t0 = time.monotonic()
        failpoints.reached("results.before-pipeline")
        result = pipeline.run(inp, staging)
        elapsed = time.monotonic() - t0
        doc: dict[str, Any] = {
            "pipeline": pipeline.name,
            "pipeline_version": pipeline.version,
            "input": {
                "kind": inp.kind,
                "key": inp.key,
                "study_uid": inp.study_uid,
                "series_uid": inp.series_uid,
                "files": len(inp.paths),
            },
            "summary": result.summary,
            "files": list(result.files),
            "models": [m.as_dict() for m in result.models],
            MARK_KEY: result_mark(data_dir, (m.as_dict() for m in result.models)),
            "warnings": list(result.warnings),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(elapsed, 3),
            **(extra or {}),
        }
        failpoints.reached("results.before-reports")
        outcome = write_reports(doc, inp, staging)
        own, unreadable = _pipeline_dicom(staging, {o.file for o in outcome.dicom})
        if outcome.missing or unreadable:
            raise _missing_error((*outcome.missing, *unreadable))
        doc["warnings"].extend(outcome.warnings)
        doc["reports"] = list(outcome.files)
        doc["dicom_outputs"] = [o.as_dict() for o in (*outcome.dicom, *own)]
        doc["unsent_reason"] = outcome.unsent_reason
        write_bytes_durably(staging / RESULT_FILE, json.dumps(doc, indent=2, default=str).encode())
        replace_dir(staging, target)
        return doc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
