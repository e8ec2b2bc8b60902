"""Batch (re)processing of archives: every slide and DICOM series under some paths becomes a job.

Used by ``oncoagent batch`` and by the nightly schedules. Files are read in place (a DICOM file is copied into
storage unless its instance is stored already); nothing in the archive is moved or deleted. A scheduled batch
may also read the store's history (:mod:`agent.batch_sources`). Each run is a record in the store
(:class:`HeldRun`): the inputs it took, the figures of each one's previous result (what the new result is
compared with: :mod:`agent.batch_verdicts`) and the job it queued for each, so that a run cut off by a crash is
resumed by whoever holds it next without queueing anything twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from agent import failpoints
from agent.batch_sources import pacs_inputs, store_inputs
from agent.batch_verdicts import previous_figures
from agent.config import PacsSource, Priority, Settings, StoreSource
from agent.dispatch import Dispatcher
from agent.errors import OncoAgentError
from agent.ingest import FolderWatcher, files_under
from agent.records import BatchRun, BatchRunStatus, Input, Job
from agent.store import Store

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    files: int = 0
    inputs: int = 0
    queued: list[int] = field(default_factory=list)  # jobs queued for the batch's inputs while it ran
    missing: list[str] = field(default_factory=list)
    already_taken: int = 0  # inputs a resumed run had taken before it was cut off (not queued again)
    problems: list[str] = field(default_factory=list)  # what a source could not read (a study not retrieved)


class HeldRun:
    """A batch run this process holds: it records each input the run takes (renewing its lease there, and at
    least every third of the lease while it reads files) and the job it queued for it."""

    def __init__(self, store: Store, run: BatchRun, owner: str, lease_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.run, self.owner, self.lease_s, self.clock = store, run, owner, lease_s, clock
        self.taken = store.batch_run_taken(run.id)  # what it took before it was cut off, if it was
        self._renew_at = clock() + lease_s / 3

    def keep(self) -> None:
        """Renew the lease when a third of it has passed (LeaseLost when another holder took the run over)."""
        now = self.clock()
        if now >= self._renew_at:
            self.store.batch_run_renew(self.run.id, self.owner, now + self.lease_s)
            self._renew_at = now + self.lease_s / 3

    def take(self, input_id: int) -> bool:
        """Take an input for the run, keeping the figures of its previous result to compare the new one with."""
        previous = previous_figures(self.store, input_id)
        now = self.clock()
        self._renew_at = now + self.lease_s / 3
        return self.store.batch_run_take(self.run.id, self.owner, input_id, until=now + self.lease_s, now=now,
                                         previous=previous)

    def queued(self, input_id: int, job_id: int) -> None:
        self.store.batch_run_set_job(self.run.id, input_id, job_id)

    def finish(self, status: BatchRunStatus, error: str | None = None) -> BatchRun:
        self.run = self.store.batch_run_finish(self.run.id, self.owner, status, error, self.clock())
        return self.run


def run_held(store: Store, settings: Settings, held: HeldRun) -> BatchReport:
    """Run (or resume) a held run over its sources, and record how it ended: done, or failed with the reason (a
    path missing, a file unreadable). LeaseLost propagates: another holder has the run, and records its end."""
    run = held.run
    try:
        report = enqueue_paths(store, settings, run.paths, reprocess=run.reprocess, held=held)
        source = run.options.get("store")
        if source is not None:
            chosen = store_inputs(store, settings, StoreSource.model_validate(source), run.slot)
            log.info("batch %s: run %d: the store source selects %d input(s)", run.batch, run.id, len(chosen))
            queue_inputs(store, settings, chosen, reprocess=True, held=held, report=report)
        pacs = run.options.get("pacs")
        if pacs is not None:
            retrieved = pacs_inputs(store, settings, PacsSource.model_validate(pacs), run.slot, held.keep)
            report.problems.extend(retrieved.problems)
            queue_inputs(store, settings, retrieved.inputs, reprocess=run.reprocess, held=held, report=report)
    except (OncoAgentError, OSError) as exc:
        held.finish(BatchRunStatus.FAILED, str(exc))
        raise
    problems = (["missing: " + ", ".join(report.missing)] if report.missing else []) + report.problems
    if problems:
        held.finish(BatchRunStatus.FAILED, "; ".join(problems))
    else:
        held.finish(BatchRunStatus.DONE)
    return report


def enqueue_paths(store: Store, settings: Settings, paths: Iterable[Path], *, reprocess: bool = False,
                  held: HeldRun | None = None) -> BatchReport:
    """Record every input under ``paths`` and route it. ``reprocess`` runs again what already had a job for the
    same content before this batch; content new to the store is routed once, by whoever comes first: this
    batch, or a running daemon's own loop, which routes a slide as soon as it is recorded. With ``held``, each
    input is recorded as taken by the run before it is routed, and one the run took before is not routed again."""
    watcher = FolderWatcher(store, settings)
    report = BatchReport()
    keys: dict[str, None] = {}
    for root in paths:
        if not root.exists():
            report.missing.append(str(root))
            log.error("batch path %s does not exist", root)
            continue
        for path in [root] if root.is_file() else files_under(root):
            if held is not None:
                held.keep()
            report.files += 1
            key = watcher.take(path, consumed=False)
            if key is not None:
                keys[key] = None
    found = [inp for inp in map(store.find_input, keys) if inp is not None]
    return queue_inputs(store, settings, found, reprocess=reprocess, held=held, report=report)


def queue_inputs(store: Store, settings: Settings, inputs: Iterable[Input], *, reprocess: bool,
                 held: HeldRun | None, report: BatchReport) -> BatchReport:
    """Route each input at batch priority (with ``reprocess``, again where it had a job before this batch)."""
    started = time.time() if held is None else held.run.started_at
    dispatcher = Dispatcher(store, settings)
    for inp in inputs:
        report.inputs += 1
        if held is not None and not _take(held, inp, started, report):
            continue
        done_before = any(j.created_at < started for j in _jobs_for_content(store, inp))
        job = dispatcher.route(inp, force=reprocess and done_before, priority=Priority.BATCH)
        if job is None:  # routed meanwhile by the daemon's loop, or earlier, or ignored
            job = next((j for j in _jobs_for_content(store, inp) if j.created_at >= started), None)
        if job is not None:
            report.queued.append(job.id)
            if held is not None:
                held.queued(inp.id, job.id)
                failpoints.reached("batch.after-queued")
    return report


def _take(held: HeldRun, inp: Input, started: float, report: BatchReport) -> bool:
    """Whether the run is to route the input now: not when it took it before and queued its job; an input it
    took but was cut off before recording a job for is routed only if no job was queued for it meanwhile."""
    if inp.id not in held.taken:
        if held.take(inp.id):
            return True
    elif held.taken[inp.id] is None:
        since = [j for j in _jobs_for_content(held.store, inp) if j.updated_at >= started]
        if not since:
            return True
        report.queued.append(since[0].id)
        held.queued(inp.id, since[0].id)
        return False
    report.already_taken += 1
    return False


def _jobs_for_content(store: Store, inp: Input) -> list[Job]:
    return [j for j in store.jobs_for_input(inp.id) if j.input_fingerprint == inp.fingerprint]
