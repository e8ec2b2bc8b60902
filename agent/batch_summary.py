"""A batch run as plain data, and its HTML summary, written when the run's last job ends.

The summary (``results/batch-runs/run-NNNNNN.html``, laid out by :mod:`reports.batch_summary`) is written by
whichever daemon records the outcome of a run's last job, or by the run itself when it ends with nothing left
to run; written again if it is, so it always shows the run as it ended.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from agent.config import Priority, Settings
from agent.errors import OncoAgentError
from agent.records import BatchRunProgress, BatchRunStatus, Job, JobStatus, Verdict
from agent.store import Store
from agent.store_commands import _iso
from pipelines.durable import write_bytes_durably

log = logging.getLogger(__name__)

SUMMARY_FOLDER = "batch-runs"


def summary_path(settings: Settings, run_id: int) -> Path:
    return settings.paths.results / SUMMARY_FOLDER / f"run-{run_id:06d}.html"


def shown_status(progress: BatchRunProgress) -> str:
    """The run's status as users read it: a run that took all its inputs is ``processing`` until its jobs end."""
    if progress.run.status is BatchRunStatus.DONE and not progress.finished:
        return "processing"
    return progress.run.status.value


def run_document(progress: BatchRunProgress, workers: int | None = None) -> dict[str, Any]:
    """The run as plain data: ``oncoagent batch runs|show --json`` prints it, the HTML summary lays it out. With
    ``workers``: also the ETA, each failure and each discordant result."""
    run = progress.run
    doc: dict[str, Any] = {
        "id": run.id,
        "batch": run.batch,
        "slot": _iso(run.slot),
        "status": shown_status(progress),
        "run_status": run.status.value,
        "owner": run.owner,
        "resumed": run.resumed,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "paths": [str(p) for p in run.paths],
        "reprocess": run.reprocess,
        "error": run.error,
        "inputs": progress.inputs,
        "done": progress.done,
        "total": progress.total,
        "failed": progress.failed,
        "jobs": {status.value: progress.jobs.get(status, 0) for status in JobStatus},
        "options": run.options,
        "verdicts": {verdict.value: progress.verdicts.get(verdict, 0) for verdict in Verdict},
        "changed": progress.changed,
    }
    if workers is not None:
        doc["mean_job_s"] = progress.mean_job_s
        doc["eta_s"] = progress.eta_s(workers)
        doc["failures"] = [{"job_id": f.job_id, "input_id": f.input_id, "path": str(f.input_path),
                            "error": f.error} for f in progress.failures]
        doc["discordant"] = [{"job_id": d.job_id, "input_id": d.input_id, "path": str(d.input_path),
                              "reasons": list(d.reasons), "sent": d.sent} for d in progress.discordant]
    return doc


def write_summary(store: Store, settings: Settings, run_id: int) -> Path | None:
    """Write the run's summary if it has ended and every job of it has; the file, or None when not yet."""
    progress = store.batch_run_progress(run_id)
    if progress.run.status is BatchRunStatus.INTERRUPTED or not progress.finished:
        return None
    from reports.batch_summary import render_batch_summary

    target = summary_path(settings, run_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    html = render_batch_summary(run_document(progress, workers=settings.executor.workers))
    write_bytes_durably(target, html.encode("utf-8"))
    log.info("batch %s: run %d ended; summary %s", progress.run.batch, run_id, target)
    return target


def summarise_after(store: Store, settings: Settings, job: Job) -> None:
    """After a batch job finished: write the summary of its run if that was the run's last job."""
    if job.priority is not Priority.BATCH or not job.status.finished:
        return
    try:
        run_id = store.batch_run_of_job(job.id)
        if run_id is not None:
            write_summary(store, settings, run_id)
    except (OncoAgentError, OSError) as exc:
        log.error("job %d: could not write its batch run's summary: %s", job.id, exc)
