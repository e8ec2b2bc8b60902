"""The contract between the executor and a pipeline.

A pipeline is a class with a ``name``, a ``version`` and a ``run`` method. ``run`` gets a
:class:`PipelineInput` and an empty output folder, writes its files there and returns a
:class:`PipelineResult`; it reports how far it is through the input's ``progress`` callback
(:mod:`pipelines.progress`). It raises :class:`~pipelines.errors.InputError` for bad input (no retry) and
:class:`~pipelines.errors.TransientError` for failures worth retrying. Models are loaded lazily inside ``run``
(and cached per worker process), never at import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pipelines.progress import Progress, no_progress


@dataclass(frozen=True)
class ModelRef:
    """A model used for a result: recorded with every output."""

    name: str
    version: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True)
class PipelineInput:
    kind: str  # "dicom-series" or "slide"
    key: str  # series instance UID or slide path
    paths: tuple[Path, ...]  # the instance files of the series, or the slide file
    attrs: dict[str, Any] = field(default_factory=dict)
    study_uid: str | None = None
    series_uid: str | None = None
    job_id: int | None = None
    previous_result: Path | None = None  # result folder this run supersedes (same input, earlier content)
    fingerprint: str = ""  # identifies the input's content (changes when a series gains an instance)
    progress: Progress = field(default=no_progress, compare=False, repr=False)  # (done, total, stage) as it runs


@dataclass(frozen=True)
class PipelineResult:
    summary: dict[str, Any]
    files: tuple[str, ...] = ()  # names relative to the output folder
    models: tuple[ModelRef, ...] = ()
    warnings: tuple[str, ...] = ()


class Pipeline(Protocol):
    name: ClassVar[str]
    version: ClassVar[str]

    def run(self, inp: PipelineInput, out_dir: Path) -> PipelineResult: ...
