"""The worker process: receives jobs from the executor over a pipe, runs them, sends back outcomes.

A worker dies with its parent (PR_SET_PDEATHSIG) so that a daemon killed by SIGKILL leaves no orphan
writing results nobody records. Pipelines, and the models they load, stay cached for the worker's life.

A worker given a GPU (``executor.gpus``) sees that device alone, as its ``cuda:0``: ``CUDA_VISIBLE_DEVICES`` is
set first thing in :func:`worker_main`, before plugins and pipelines load torch. Nothing this module imports
loads torch, nor does the daemon's main module (which a spawned child imports again first);
tests/unit/test_worker_imports.py checks both.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import signal
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from agent import failpoints, logs
from agent.results import execute
from agent.runtime import prepare_process
from pipelines import registry
from pipelines.base import PipelineInput
from pipelines.errors import InputError, TransientError
from pipelines.progress import Progress, Throttled, no_progress

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})  # a job failing on these is retried, not failed


@dataclass(frozen=True)
class WorkerConfig:
    index: int
    log_level: str
    log_format: str
    plugins: tuple[str, ...]
    parent_pid: int
    pipeline_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    gpu: int | None = None  # the physical GPU this worker is pinned to; None: not pinned


class Failure:
    """Outcome kinds a worker reports for a job that did not succeed."""

    INPUT = "input"  # bad input: fail now
    TRANSIENT = "transient"  # may pass: retry with backoff
    ERROR = "error"  # a bug or unexpected condition: fail now, reason recorded


def _die_with_parent(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        log.warning("cannot set PR_SET_PDEATHSIG; orphaned workers will exit on their next job")
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def pin_gpu(gpu: int | None) -> None:
    """Make ``gpu`` (numbered as nvidia-smi does, unless the environment orders devices otherwise) this
    process's only CUDA device. It must run before CUDA initialises: first thing in the process."""
    if gpu is None:
        return
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)


def worker_main(conn: Connection, config: WorkerConfig) -> None:
    pin_gpu(config.gpu)
    _die_with_parent(config.parent_pid)
    # Ctrl-C and a group-wide SIGTERM reach workers too; the daemon decides when they stop (None or SIGKILL).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    prepare_process(config.log_level, config.log_format, config.plugins)
    while True:
        try:
            payload = conn.recv()
        except EOFError:
            return
        if payload is None:
            return
        placement = {} if config.gpu is None else {"worker_gpu": config.gpu}
        conn.send(run_payload(payload, config.pipeline_options, placement, _progress_to(conn, payload["job_id"])))
        failpoints.reached("worker.after-outcome")


def _progress_to(conn: Connection, job_id: int) -> Progress:
    """A job's progress as messages to the executor over the job's pipe, ahead of its outcome (see
    :func:`progress_message`); the executor records them in the store."""

    def send(done: int, total: int, stage: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # the executor is gone: the job's end will show it
            conn.send(progress_message(job_id, done, total, stage))

    return send


def progress_message(job_id: int, done: int, total: int, stage: str) -> dict[str, Any]:
    """What a running job sends its executor about its progress (an outcome has ``ok`` instead)."""
    return {"job_id": job_id, "progress": [done, total, stage]}


def run_payload(payload: dict[str, Any], pipeline_options: dict[str, dict[str, Any]],
                placement: dict[str, Any] | None = None, progress: Progress = no_progress) -> dict[str, Any]:
    """Run one job description; never raises, the outcome says what happened. ``placement`` says where it runs
    (``worker_gpu``: the device a local worker is pinned to; ``dask_worker``: the Dask worker's address): it is
    logged and recorded in result.json. ``progress`` hears how far the pipeline is, at most once a second
    (besides its first and last report and each change of stage: :class:`~pipelines.progress.Throttled`).

    This is where failures become job outcomes: an :class:`~pipelines.errors.InputError` (from the pipeline or
    the daemon's own result stage) fails the job as bad input, which the executor quarantines; a
    :class:`~pipelines.errors.TransientError` or a full disk (``ENOSPC``, ``EDQUOT``) retries it; any other
    error (another ``PipelineError``, an ``OncoAgentError``, a bug) fails it with its reason.
    """
    job_id = payload["job_id"]
    inp = PipelineInput(
        kind=payload["kind"],
        key=payload["key"],
        paths=tuple(Path(p) for p in payload["paths"]),
        attrs=payload["attrs"],
        study_uid=payload.get("study_uid"),
        series_uid=payload.get("series_uid"),
        job_id=job_id,
        previous_result=Path(payload["previous_result"]) if payload.get("previous_result") else None,
        fingerprint=payload.get("fingerprint", ""),
        progress=no_progress if progress is no_progress else Throttled(progress),
    )
    with logs.job_context(job=job_id, study=inp.study_uid, series=inp.series_uid):
        try:
            pipeline = registry.get(payload["pipeline"], pipeline_options.get(payload["pipeline"]))
            where = ", ".join(f"{k} {v}" for k, v in (placement or {}).items())
            log.info("running %s %s%s", pipeline.name, pipeline.version, f" ({where})" if where else "")
            extra: dict[str, Any] = {"job_id": job_id, "supersedes_job_id": payload.get("previous_job_id"),
                                     **(placement or {})}
            doc = execute(pipeline, inp, Path(payload["result_dir"]), Path(payload["staging_dir"]), extra=extra,
                          data_dir=Path(payload["data_dir"]))
        except InputError as exc:
            log.warning("bad input: %s", exc)
            return {"job_id": job_id, "ok": False, "kind": Failure.INPUT, "error": str(exc)}
        except TransientError as exc:
            log.warning("transient failure: %s", exc)
            return {"job_id": job_id, "ok": False, "kind": Failure.TRANSIENT, "error": str(exc)}
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in DISK_FULL:  # space may be freed: not the job's fault
                log.warning("disk full, will retry: %s", exc)
                return {"job_id": job_id, "ok": False, "kind": Failure.TRANSIENT, "error": f"disk full: {exc}"}
            log.error("pipeline error: %s", exc, exc_info=True)
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return {"job_id": job_id, "ok": False, "kind": Failure.ERROR, "error": detail}
        log.info("done in %.1f s", doc["seconds"])
        failpoints.reached("worker.after-result")
        return {
            "job_id": job_id,
            "ok": True,
            "result_dir": payload["result_dir"],
            "summary": doc["summary"],
            "models": doc["models"],
            "dicom_outputs": doc["dicom_outputs"],
            "unsent_reason": doc["unsent_reason"],
        }
