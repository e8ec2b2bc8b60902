"""Nightly (or any cron) batches from ``scheduler.batches``, run by apscheduler inside the daemon, each slot once.

A slot's run is a record in the store (:mod:`agent.store.batch_runs`): of the daemons sharing a store, the one
that records it runs it and the others skip it. A slot missed while the daemon was down runs once when it
starts: the latest slot due since the batch's last recorded run, not one per missed slot (apscheduler forgets
its schedule at exit, so this is worked out from the cron and the store). A run cut off by a stop or a crash is
resumed: at start for this daemon's own (``executor.node``), and, every half lease, any whose holder's lease
expired or that another daemon's stop interrupted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from agent.batch import HeldRun, run_held
from agent.batch_summary import write_summary
from agent.config import BatchSettings, Settings
from agent.crontab import crontab_trigger, last_fire
from agent.errors import LeaseLost, OncoAgentError
from agent.job_outcomes import node_name
from agent.records import BatchRun
from agent.store import Store

log = logging.getLogger(__name__)

RESUME_JOB = "resume-batch-runs"


class BatchScheduler:
    def __init__(self, store: Store, settings: Settings, on_queued: Callable[[], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self.on_queued = on_queued
        self.clock = clock
        self.node = node_name(settings)
        self.lease_s = settings.executor.lease_s
        self.triggers: dict[str, tuple[BatchSettings, BaseTrigger]] = {
            batch.name: (batch, crontab_trigger(batch.cron)) for batch in settings.scheduler.batches}
        self._scheduler = BackgroundScheduler(daemon=True)
        for name, (_, trigger) in self.triggers.items():
            self._scheduler.add_job(
                self.fire, trigger, args=[name], id=name, coalesce=True, max_instances=1, misfire_grace_time=3600)

    def start(self) -> None:
        interrupted = self.store.batch_runs_interrupt(self.node)  # cut off when this daemon stopped or crashed
        if interrupted:
            log.warning("batch run(s) %s were cut off when this daemon last stopped: resuming", interrupted)
        self._scheduler.add_job(self.catch_up, id="catch-up", max_instances=1)  # at once, on the scheduler's thread
        self._scheduler.add_job(self.resume, "interval", seconds=self.lease_s / 2, id=RESUME_JOB,
                                coalesce=True, max_instances=1)
        self._scheduler.start()
        for job in self._scheduler.get_jobs():
            if job.id in self.triggers:
                log.info("batch %s next runs at %s", job.id, job.next_run_time)

    def stop(self) -> None:
        """Stop scheduling; a run in progress is marked interrupted, for whichever daemon looks next to resume
        (its thread, which ends with the process, is refused its next input)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        try:
            interrupted = self.store.batch_runs_interrupt(self.node)
        except OncoAgentError as exc:  # the store is gone: the next start, or a lease expiry, finds the run
            log.warning("could not mark this daemon's batch runs interrupted: %s", exc)
            return
        if interrupted:
            log.info("batch run(s) %s interrupted by the stop: the next start resumes them", interrupted)

    # ------------------------------------------------------------------------------------------- when to run

    def fire(self, name: str) -> None:
        """The cron says ``name`` is due: run its slot (the latest due now), unless it ran or runs elsewhere."""
        now = self.clock()
        batch, trigger = self.triggers[name]
        self._run_slot(batch, last_fire(trigger, now) or now, now)

    def catch_up(self) -> None:
        """At start: resume the runs cut off, then run each batch's latest slot missed since its last run."""
        self.resume()
        now = self.clock()
        for batch, trigger in self.triggers.values():
            slot = self.missed_slot(batch.name, trigger, now)
            if slot is not None:
                log.info("batch %s missed its run at %s while the daemon was down: running it now",
                         batch.name, _when(slot))
                self._run_slot(batch, slot, now)

    def missed_slot(self, name: str, trigger: BaseTrigger, now: float) -> float | None:
        """The latest slot of the batch due at ``now`` after its last recorded run's; None when nothing was
        missed, or the batch never ran (its schedule starts with this daemon)."""
        latest = self.store.batch_run_latest(name)
        return None if latest is None else last_fire(trigger, now, after=latest.slot)

    def resume(self) -> None:
        """Take over and finish every run that was interrupted, or whose holder's lease expired."""
        for run in self.store.batch_runs_resumable(self.clock()):
            held = self.store.batch_run_take_over(run.id, self.node, self.lease_s, self.clock())
            if held is not None:
                log.info("batch %s: resuming run %d (slot %s), cut off after %d input(s)", held.batch, held.id,
                         _when(held.slot), len(self.store.batch_run_taken(held.id)))
                self._run(held)

    # ------------------------------------------------------------------------------------------- running

    def _run_slot(self, batch: BatchSettings, slot: float, now: float) -> None:
        run = self.store.batch_run_begin(batch.name, slot, batch.paths, batch.reprocess, owner=self.node,
                                         lease_s=self.lease_s, now=now, options=batch.options())
        if run is None:
            log.info("batch %s: the run at %s is done or held by another daemon; skipped", batch.name, _when(slot))
            return
        self._run(run)

    def _run(self, run: BatchRun) -> None:
        held = HeldRun(self.store, run, self.node, self.lease_s, self.clock)
        try:
            report = run_held(self.store, self.settings, held)
        except LeaseLost as exc:
            log.warning("batch %s: run %d is no longer this daemon's (%s)", run.batch, run.id, exc)
            return
        except (OncoAgentError, OSError) as exc:
            log.error("batch %s: run %d failed: %s", run.batch, run.id, exc)
            return
        log.info(
            "batch %s: %d file(s), %d input(s), %d job(s) queued",
            run.batch, report.files, report.inputs, len(report.queued),
        )
        log.info("batch %s: run %d %s (%d input(s) it took before it was resumed, not queued again)", run.batch,
                 run.id, held.run.status.value, report.already_taken)
        if report.queued:
            self.on_queued()
        try:
            write_summary(self.store, self.settings, run.id)  # when nothing is left to run: jobs write it else
        except (OncoAgentError, OSError) as exc:
            log.error("batch %s: run %d: could not write its summary: %s", run.batch, run.id, exc)

def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
