"""What a Dask worker runs for one OncoAgent job (submitted by :mod:`agent.dask_executor`).

The worker imports this module by name, so OncoAgent (and any plugin the daemon's config names) must be installed
on every worker, and the paths a job names (its input files, ``results/``) must be the same on every worker as
on the daemon: a shared file system. Pipelines and their models stay cached in the worker process between jobs,
as in a local worker. A job's progress goes to the daemon as Dask events (the worker need not reach the store).
Nothing here loads torch before a pipeline does.

Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.pre-spawn-environ``), which
also pins glibc's mmap threshold at 128 KiB: every array a pipeline allocates is then a fresh ``mmap`` whose
pages fault in one by one. That made mri-tumour 1.7 times slower per series (3.5 s against 6.0 s, measured on
one generated series); :func:`_allocate_as_glibc_would` sets the thresholds back to glibc's own ceilings once per
worker process.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.runtime import prepare_libraries
from agent.worker import progress_message, run_payload
from pipelines.progress import Progress, no_progress

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling for its dynamic mmap threshold on 64-bit
_allocator_set: list[bool] = []  # once per worker process


def run_job(payload: dict[str, Any], pipeline_options: dict[str, dict[str, Any]],
            plugins: Iterable[str] = ()) -> dict[str, Any]:
    """Run one job on this worker; the outcome as :func:`agent.worker.run_payload` reports it."""
    if not _allocator_set:
        _allocator_set.append(_allocate_as_glibc_would())
    prepare_libraries(plugins)  # cheap after the first job: imports are cached
    _remove_earlier_staging(Path(payload["staging_dir"]), Path(payload["result_dir"]).name)
    return run_payload(payload, pipeline_options, {"dask_worker": _worker_address()}, _progress_events(payload))


def _progress_events(payload: dict[str, Any]) -> Progress:
    """The job's progress as Dask events on the topic the daemon subscribed to (``progress_topic``): through
    the scheduler to the daemon's client, which records them in the store (a task need not reach the store)."""
    topic = payload.get("progress_topic")
    if not topic:
        return no_progress
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not on a Dask worker (a test calling run_job directly)
        return no_progress
    job_id = payload["job_id"]

    def send(done: int, total: int, stage: str) -> None:
        try:
            worker.log_event(topic, progress_message(job_id, done, total, stage))
        except (OSError, RuntimeError, TypeError) as exc:  # the worker is closing: the outcome will tell
            log.debug("job %d: progress not sent: %s", job_id, exc)

    return send


def _allocate_as_glibc_would() -> bool:
    """Where ``MALLOC_TRIM_THRESHOLD_`` fixed glibc's thresholds (see the module's note), raise them to the
    values glibc's dynamic thresholds grow to; True when that was done."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX))
    if done:
        log.info("malloc thresholds raised for pipelines (mmap %d MiB; MALLOC_TRIM_THRESHOLD_ was %s)",
                 MMAP_THRESHOLD_MAX >> 20, os.environ["MALLOC_TRIM_THRESHOLD_"])
    return done


def _remove_earlier_staging(staging_root: Path, result_name: str) -> None:
    """A run of this job cut off on a worker that died left its staging folder on the shared file system."""
    for leftover in staging_root.glob(f"{result_name}.*.partial"):
        shutil.rmtree(leftover, ignore_errors=True)


def _worker_address() -> str:
    from distributed import get_worker

    try:
        return str(get_worker().address)
    except ValueError:  # not on a Dask worker (a test calling this directly)
        return ""
