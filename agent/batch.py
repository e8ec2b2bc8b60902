"""Batch (re)processing of archives: every slide and DICOM series under some paths becomes a job.

Used by ``oncoagent batch`` and by the nightly schedules. Files are read in place (copied into storage for
DICOM); nothing in the archive is moved or deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import Settings
from agent.dispatch import Dispatcher
from agent.ingest import FolderWatcher, files_under
from agent.records import Input, Job
from agent.store import Store

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    files: int = 0
    inputs: int = 0
    queued: list[int] = field(default_factory=list)  # jobs queued for the batch's inputs while it ran
    missing: list[str] = field(default_factory=list)


def enqueue_paths(store: Store, settings: Settings, paths: Iterable[Path], *, reprocess: bool = False) -> BatchReport:
    """Record every input under ``paths`` and route it. ``reprocess`` runs again what already had a job for the
    same content before this batch; content new to the store is routed once, by whoever comes first: this
    batch, or a running daemon's own loop, which routes a slide as soon as it is recorded."""
    started = time.time()
    watcher = FolderWatcher(store, settings)
    dispatcher = Dispatcher(store, settings)
    report = BatchReport()
    keys: dict[str, None] = {}
    for root in paths:
        if not root.exists():
            report.missing.append(str(root))
            log.error("batch path %s does not exist", root)
            continue
        for path in [root] if root.is_file() else files_under(root):
            report.files += 1
            key = watcher.take(path, consumed=False)
            if key is not None:
                keys[key] = None
    for key in keys:
        inp = store.find_input(key)
        if inp is None:
            continue
        report.inputs += 1
        done_before = any(j.created_at < started for j in _jobs_for_content(store, inp))
        job = dispatcher.route(inp, force=reprocess and done_before)
        if job is None:  # routed meanwhile by the daemon's loop, or earlier, or ignored
            job = next((j for j in _jobs_for_content(store, inp) if j.created_at >= started), None)
        if job is not None:
            report.queued.append(job.id)
    return report


def _jobs_for_content(store: Store, inp: Input) -> list[Job]:
    return [j for j in store.jobs_for_input(inp.id) if j.input_fingerprint == inp.fingerprint]
