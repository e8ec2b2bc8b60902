"""Nightly (or any cron) batches from ``scheduler.batches``, run by apscheduler inside the daemon."""

from __future__ import annotations

import logging
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler

from agent.batch import enqueue_paths
from agent.config import BatchSettings, Settings
from agent.crontab import crontab_trigger
from agent.errors import OncoAgentError
from agent.store import Store

log = logging.getLogger(__name__)

class BatchScheduler:
    def __init__(self, store: Store, settings: Settings, on_queued: Callable[[], None]) -> None:
        self.store = store
        self.settings = settings
        self.on_queued = on_queued
        self._scheduler = BackgroundScheduler(daemon=True)
        for batch in settings.scheduler.batches:
            self._scheduler.add_job(
                self.run_batch,
                crontab_trigger(batch.cron),
                args=[batch],
                id=batch.name,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=3600,
            )

    def start(self) -> None:
        if self.settings.scheduler.batches:
            self._scheduler.start()
            for job in self._scheduler.get_jobs():
                log.info("batch %s next runs at %s", job.id, job.next_run_time)

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def run_batch(self, batch: BatchSettings) -> None:
        try:
            report = enqueue_paths(self.store, self.settings, batch.paths, reprocess=batch.reprocess)
        except (OncoAgentError, OSError) as exc:
            log.error("batch %s failed: %s", batch.name, exc)
            return
        log.info(
            "batch %s: %d file(s), %d input(s), %d job(s) queued",
            batch.name, report.files, report.inputs, len(report.queued),
        )
        if report.queued:
            self.on_queued()
