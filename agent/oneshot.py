"""``oncoagent process``: the router and pipelines on given paths, without a daemon or a store.

Each input (a slide file, or a DICOM series gathered from the files and folders given) gets a folder under
``--out`` with ``result.json`` and its reports. Failures are reported per input with their reason.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from agent.config import Settings
from agent.errors import InputError, OncoAgentError
from agent.ingest import SLIDE_SUFFIXES, files_under
from agent.logs import job_context
from agent.records import Input, InputKind, InputState
from agent.results import execute
from agent.router import Ignored, Router
from dicom_node.storage import routing_attrs, validate_uid
from pipelines import registry
from pipelines.base import PipelineInput
from pipelines.errors import PipelineError
from pipelines.progress import Progress, no_progress
from pipelines.wsi.slide_files import sidecar_for, slide_context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    name: str
    ok: bool
    detail: str  # result folder, or the reason it failed
    pipeline: str | None = None


@dataclass
class _Series:
    study_uid: str
    series_uid: str
    attrs: dict[str, object]
    files: list[Path]


def collect(paths: Iterable[Path], filename_regex: re.Pattern[str] | None = None, sidecar: bool = True,
            ) -> tuple[list[tuple[Input, tuple[Path, ...]]], list[Outcome]]:
    """Turn paths into inputs: slides one by one (with the context the accession mapping gives them, as in the
    watched folders), DICOM files grouped by series. Bad paths become outcomes."""
    inputs: list[tuple[Input, tuple[Path, ...]]] = []
    bad: list[Outcome] = []
    series: dict[str, _Series] = {}
    now = time.time()
    for root in paths:
        if not root.exists():
            bad.append(Outcome(str(root), False, "no such file or folder"))
            continue
        files = [root] if root.is_file() else list(files_under(root))
        if not files:
            bad.append(Outcome(str(root), False, "folder holds no files"))
        for path in files:
            if path.suffix.lower() in SLIDE_SUFFIXES:
                attrs: dict[str, object] = {"file_name": path.name, "suffix": path.suffix.lower()}
                context, source = slide_context(path, filename_regex, sidecar_for(path) if sidecar else None)
                if context:
                    attrs |= {"context": context, "context_source": source}
                inp = Input(
                    id=0, kind=InputKind.SLIDE, key=str(path.resolve()), path=path.resolve(), fingerprint="",
                    attrs=attrs, instance_count=1,
                    state=InputState.RECEIVING, reason=None, created_at=now, updated_at=now,
                )
                inputs.append((inp, (path,)))
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                series_uid = validate_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID")
                study_uid = validate_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID")
            except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
                if root.is_file():
                    bad.append(Outcome(str(path), False, f"neither DICOM nor a known slide format ({exc})"))
                else:
                    log.info("skipping %s: not DICOM and not a slide", path)
                continue
            except InputError as exc:
                bad.append(Outcome(str(path), False, str(exc)))
                continue
            entry = series.setdefault(series_uid, _Series(study_uid, series_uid, routing_attrs(ds), []))
            entry.files.append(path)
    for entry in series.values():
        inp = Input(
            id=0, kind=InputKind.DICOM_SERIES, key=entry.series_uid, path=entry.files[0].parent,
            fingerprint="", attrs=entry.attrs, instance_count=len(entry.files), state=InputState.RECEIVING,
            reason=None, created_at=now, updated_at=now, study_uid=entry.study_uid, series_uid=entry.series_uid,
        )
        inputs.append((inp, tuple(entry.files)))
    return inputs, bad


def content_fingerprint(files: Iterable[Path]) -> str:
    """Identifies what was processed (paths, sizes, mtimes): output UIDs change when the input does."""
    digest = hashlib.sha256()
    for path in sorted(files):
        st = path.stat()
        digest.update(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}|".encode())
    return digest.hexdigest()[:32]


def output_name(inp: Input) -> str:
    if inp.kind is InputKind.SLIDE:
        return re.sub(r"[^A-Za-z0-9._-]", "_", inp.path.stem)
    return f"series-{inp.series_uid}"


Watch = Callable[[str], AbstractContextManager[Progress]]
"""Given an input's output name, a context for its run that yields the run's progress callback."""


def _unwatched(name: str) -> AbstractContextManager[Progress]:
    return nullcontext(no_progress)


def process(
    settings: Settings,
    router: Router,
    paths: Iterable[Path],
    out: Path,
    pipeline_name: str | None = None,
    progress: Callable[[Iterable[tuple[Input, tuple[Path, ...]]]], Iterable[tuple[Input, tuple[Path, ...]]]] = iter,
    watch: Watch | None = None,
) -> list[Outcome]:
    """Run each input's pipeline into ``out``; ``progress`` wraps the inputs (a bar over them), ``watch`` gives
    each run, by its output name, the callback that hears how far it is (a bar over a slide's tiles)."""
    pattern = settings.ingest.filename_regex  # checked by the settings
    inputs, outcomes = collect(paths, re.compile(pattern) if pattern else None, settings.ingest.sidecar)
    for inp, files in progress(inputs):
        name = output_name(inp)
        if pipeline_name is not None:
            pipeline_to_use: str = pipeline_name
        else:
            decision = router.route(inp)
            if isinstance(decision, Ignored):
                outcomes.append(Outcome(name, False, f"not processed: {decision.reason}"))
                continue
            pipeline_to_use = decision.pipeline
        with job_context(input=name, series=inp.series_uid):
            try:
                pipeline = registry.get(pipeline_to_use, settings.pipelines.get(pipeline_to_use))
                log.info("processing %s with %s %s", name, pipeline.name, pipeline.version)
                with (watch or _unwatched)(name) as shown:
                    doc = execute(
                        pipeline,
                        PipelineInput(inp.kind.value, inp.key, files, inp.attrs, inp.study_uid, inp.series_uid,
                                      fingerprint=content_fingerprint(files), progress=shown),
                        out / name,
                        out / ".staging",
                        data_dir=settings.data_dir,
                    )
            except (OncoAgentError, PipelineError) as exc:
                outcomes.append(Outcome(name, False, str(exc), pipeline_to_use))
                continue
            except Exception as exc:
                log.exception("pipeline %s failed on %s", pipeline_to_use, name)
                outcomes.append(Outcome(name, False, f"{type(exc).__name__}: {exc}", pipeline_to_use))
                continue
            log.info("done in %.1f s", doc["seconds"])
        outcomes.append(Outcome(name, True, str(out / name), pipeline_to_use))
    return outcomes
