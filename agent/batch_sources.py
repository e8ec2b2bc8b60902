"""What a batch run reads besides archive folders: the store's own history (and the model-version trigger), and
a PACS.

``store`` (``scheduler.batches[].store``): the inputs whose latest result finished within ``days`` of the run's
slot, and with ``older_models`` only those whose latest result comes from another version of its pipeline or of
one of its models than the one installed now. After a model is replaced (its manifest names a new version), the
next run of such a batch reprocesses exactly what the old version produced; the run after that finds nothing.

``pacs``: the destination is asked by C-FIND for the studies dated within the last ``days`` (the slot's day
included, local time) of the ``modalities``, and each is retrieved by C-MOVE to this node's own SCP, which
records its series as any push (or, with ``retrieve: get``, by C-GET into a private folder whose files are
taken in as an inbox's are); the run then takes the study's series of those modalities (a study holds our
own results too, once they were sent: they come back with it, and are left alone). A study that cannot be
retrieved is reported and the others go on.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from agent.config import PacsSource, Settings, StoreSource
from agent.dicom_wiring import destination_config
from agent.errors import ConfigError, InputError, OncoAgentError
from agent.ingest.dicom_files import DicomFileIntake
from agent.records import Input, Job
from agent.store import Store
from dicom_node.errors import DicomNodeError
from dicom_node.query_retrieve import RetrieveOutcome, find_studies, get_study, move_study
from dicom_node.settings import DestinationConfig
from pipelines import registry
from pipelines.errors import PipelineError

log = logging.getLogger(__name__)

DAY_S = 86400.0


class BatchSourceError(OncoAgentError):
    """A batch source could not be read (the PACS refused or did not answer the query)."""


@dataclass
class Retrieved:
    inputs: list[Input] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def pacs_inputs(store: Store, settings: Settings, source: PacsSource, slot: float,
                keep: Callable[[], None] = lambda: None) -> Retrieved:
    """Find the source's studies on its PACS, retrieve each to this node, and return their series; ``keep``
    is called between studies (the run renews its lease)."""
    if source.retrieve == "move" and not settings.scp.enabled:
        raise ConfigError("a pacs batch source retrieves by C-MOVE to this node's DICOM port: scp.enabled is false")
    dest = destination_config(next(d for d in settings.destinations if d.name == source.destination))
    until = source.until or date.fromtimestamp(slot)
    since = until - timedelta(days=source.days - 1)
    own = settings.scp.ae_title
    wanted = {m.upper() for m in source.modalities}
    out = Retrieved()
    try:
        studies = find_studies(dest, since=since, until=until, modalities=source.modalities,
                               timeout_s=source.timeout_s, calling_ae_title=own)
    except DicomNodeError as exc:
        raise BatchSourceError(f"pacs {source.destination}: C-FIND failed: {exc}") from exc
    log.info("batch: pacs %s has %d stud(ies) from %s to %s", source.destination, len(studies), since, until)
    for study in studies:
        keep()
        uid = study.study_instance_uid
        try:
            moved = _retrieve(store, settings, source, dest, uid)
        except DicomNodeError as exc:
            out.problems.append(f"study {uid}: C-{source.retrieve.upper()} failed: {exc}")
            log.error("batch: pacs %s: study %s not retrieved: %s", source.destination, uid, exc)
            continue
        if moved.failed:
            out.problems.append(f"study {uid}: {moved.failed} instance(s) not retrieved (status 0x{moved.status:04X})")
        series = [inp for inp in store.inputs_of_study(uid)  # not the study's other series (our own results)
                  if not wanted or str(inp.attrs.get("Modality", "")).upper() in wanted]
        log.info("batch: pacs %s: study %s: %d instance(s) retrieved, %d series", source.destination, uid,
                 moved.completed, len(series))
        out.inputs.extend(series)
    return out


def _retrieve(store: Store, settings: Settings, source: PacsSource, dest: DestinationConfig, study_uid: str
              ) -> RetrieveOutcome:
    """C-MOVE the study to this node's SCP, or C-GET it into a private folder and take its files in as an
    inbox does (stored, recorded, the copies removed)."""
    own = settings.scp.ae_title
    if source.retrieve == "move":
        return move_study(dest, study_uid, own, timeout_s=source.timeout_s, calling_ae_title=own)
    folder = settings.paths.tmp / f"pacs-get-{uuid.uuid4().hex[:12]}"
    try:
        got = get_study(dest, study_uid, folder, timeout_s=source.timeout_s, calling_ae_title=own)
        intake = DicomFileIntake(store, settings.paths)
        for path in got.stored:
            try:
                intake.take(path, consumed=True)
            except InputError as exc:
                log.error("batch: pacs %s: %s from study %s not taken in: %s", source.destination, path.name,
                          study_uid, exc)
        return got
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def store_inputs(store: Store, settings: Settings, source: StoreSource, slot: float) -> list[Input]:
    """The inputs a store source selects for the run of ``slot``, in input order."""
    since = None if source.days is None else slot - source.days * DAY_S
    latest = store.latest_results(since, source.pipelines)
    if source.older_models:
        installed = InstalledVersions(settings)
        latest = [job for job in latest if installed.outdated(job)]
    return [store.get_input(job.input_id) for job in latest]


class InstalledVersions:
    """The version of each pipeline and of the models it would run with now (its configured options)."""

    def __init__(self, settings: Settings) -> None:
        self.options: Mapping[str, Mapping[str, Any]] = settings.pipelines
        self._known: dict[str, tuple[str, frozenset[tuple[str, str]]] | None] = {}

    def outdated(self, job: Job) -> bool:
        """Whether ``job``'s result comes from another pipeline or model version than the installed ones."""
        now = self.of(job.pipeline)
        if now is None:  # the pipeline is gone or its models cannot be named: nothing to reprocess it with
            return False
        version, models = now
        used = frozenset((str(m.get("name")), str(m.get("version"))) for m in job.models)
        return job.pipeline_version != version or (bool(models) and used != models)

    def of(self, pipeline: str) -> tuple[str, frozenset[tuple[str, str]]] | None:
        if pipeline not in self._known:
            self._known[pipeline] = self._look_up(pipeline)
        return self._known[pipeline]

    def _look_up(self, pipeline: str) -> tuple[str, frozenset[tuple[str, str]]] | None:
        try:
            version = registry.version(pipeline)
            instance = registry.make(pipeline, self.options.get(pipeline))  # as configured now, not as cached
            named = getattr(instance, "installed_models", None)
            refs: Sequence[Any] = named() if callable(named) else ()
        except PipelineError as exc:
            log.error("batch: cannot tell which version of %s is installed: %s", pipeline, exc)
            return None
        return version, frozenset((ref.name, ref.version) for ref in refs)
