"""What a batch run reads besides archive folders: the store's own history (and the model-version trigger).

``store`` (``scheduler.batches[].store``): the inputs whose latest result finished within ``days`` of the run's
slot, and with ``older_models`` only those whose latest result comes from another version of its pipeline or of
one of its models than the one installed now. After a model is replaced (its manifest names a new version), the
next run of such a batch reprocesses exactly what the old version produced; the run after that finds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from agent.config import Settings, StoreSource
from agent.records import Input, Job
from agent.store import Store
from pipelines import registry
from pipelines.errors import PipelineError

log = logging.getLogger(__name__)

DAY_S = 86400.0


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
            instance = registry.get(pipeline, self.options.get(pipeline))
            named = getattr(instance, "installed_models", None)
            refs: Sequence[Any] = named() if callable(named) else ()
        except PipelineError as exc:
            log.error("batch: cannot tell which version of %s is installed: %s", pipeline, exc)
            return None
        return version, frozenset((ref.name, ref.version) for ref in refs)
