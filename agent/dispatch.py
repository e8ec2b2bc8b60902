"""From inputs to jobs: route every ready input once, queue its job or record why it was ignored."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Set

from agent.config import Priority, Settings
from agent.logs import job_context
from agent.records import Input, Job
from agent.router import Ignored, Router
from agent.store import Store
from dicom_node.assembly import is_ready, waiting_for
from pipelines import registry
from pipelines.errors import PipelineError

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self, store: Store, settings: Settings, receiving: Callable[[], Set[str]] = frozenset
    ) -> None:
        self.store = store
        self.router = Router(settings.routing.rules)
        self.quiet_seconds = settings.ingest.quiet_seconds
        self.max_wait_s = settings.ingest.max_wait_s
        self.max_attempts = settings.executor.max_attempts
        self.receiving = receiving

    def route_ready(self, now: float | None = None) -> list[Job]:
        """Route inputs that finished arriving; return the jobs queued now."""
        now = time.time() if now is None else now
        queued = []
        receiving = self.receiving()
        for inp in self.store.receiving_inputs(quiet_before=now):
            if is_ready(inp, now, self.quiet_seconds, receiving, self.max_wait_s):
                waits = waiting_for(inp, receiving)
                if waits:
                    log.info("series %s: ingest.max_wait_s (%.0f s) passed; processed without waiting longer for %s",
                             inp.series_uid, self.max_wait_s, " and ".join(waits))
                job = self.route(inp)
                if job is not None:
                    queued.append(job)
        return queued

    def route(self, inp: Input, *, force: bool = False, priority: Priority | None = None) -> Job | None:
        """Queue the job the routing rules call for (at ``priority`` instead of the rule's, when given)."""
        with job_context(input=inp.id, series=inp.series_uid):
            decision = self.router.route(inp)
            if isinstance(decision, Ignored):
                self.store.mark_ignored(inp.id, decision.reason)
                log.info("input %d ignored: %s", inp.id, decision.reason)
                return None
            try:
                version = registry.version(decision.pipeline)
            except PipelineError as exc:
                self.store.mark_ignored(inp.id, f"rule {decision.rule}: {exc}")
                log.error("input %d: %s", inp.id, exc)
                return None
            job, new = self.store.enqueue(
                inp.id,
                decision.pipeline,
                version,
                priority=decision.priority if priority is None else priority,
                max_attempts=self.max_attempts,
                rule=decision.rule,
                force=force,
            )
            if new:
                log.info("input %d -> job %d (%s, rule %s)", inp.id, job.id, decision.pipeline, decision.rule)
            else:
                log.info("input %d: job %d exists (%s), not queued again", inp.id, job.id, job.status.value)
            return job if new else None
