"""Running one pipeline on one input into a result folder: ``result.json`` plus the pipeline's files.

The folder is built under a staging name and renamed into place only when complete, so a result folder is
either absent or whole; a re-run replaces it instead of adding a second one.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from agent.durable import replace_dir, write_bytes_durably
from pipelines.base import Pipeline, PipelineInput

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
REPORTS_MODULE = "reports.render"


def _write_reports(doc: dict[str, Any], inp: PipelineInput, out_dir: Path) -> list[str]:
    """Reports (HTML, PDF, DICOM SR/SEG/annotations) for a finished analysis; their failure is a warning on
    the result, never the loss of the analysis itself."""
    if importlib.util.find_spec(REPORTS_MODULE) is None:
        return []
    render = importlib.import_module(REPORTS_MODULE)
    try:
        outcome = render.write_reports(doc, inp, out_dir)
    except Exception as exc:
        log.exception("reports failed")
        doc["warnings"].append(f"reports could not be written: {type(exc).__name__}: {exc}")
        return []
    doc["warnings"].extend(outcome.warnings)
    return list(outcome.files)


def execute(
    pipeline: Pipeline,
    inp: PipelineInput,
    target: Path,
    staging_root: Path,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``pipeline`` on ``inp`` and leave its complete result folder at ``target``; return result.json."""
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = staging_root / f"{target.name}.{uuid.uuid4().hex[:8]}.partial"
    staging.mkdir()
    try:
        started = time.time()
        t0 = time.monotonic()
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
            "warnings": list(result.warnings),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(elapsed, 3),
            **(extra or {}),
        }
        doc["reports"] = _write_reports(doc, inp, staging)
        write_bytes_durably(staging / RESULT_FILE, json.dumps(doc, indent=2, default=str).encode())
        replace_dir(staging, target)
        return doc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
