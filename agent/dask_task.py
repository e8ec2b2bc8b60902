"""What a Dask worker runs for one OncoAgent job (submitted by :mod:`agent.dask_executor`).

The worker imports this module by name, so OncoAgent (and any plugin the daemon's config names) must be installed
on every worker, and the paths a job names (its input files, ``results/``) must be the same on every worker as
on the daemon: a shared file system. Pipelines and their models stay cached in the worker process between jobs,
as in a local worker. Nothing here loads torch before a pipeline does.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.runtime import prepare_libraries
from agent.worker import run_payload


def run_job(payload: dict[str, Any], pipeline_options: dict[str, dict[str, Any]],
            plugins: Iterable[str] = ()) -> dict[str, Any]:
    """Run one job on this worker; the outcome as :func:`agent.worker.run_payload` reports it."""
    prepare_libraries(plugins)  # cheap after the first job: imports are cached
    _remove_earlier_staging(Path(payload["staging_dir"]), Path(payload["result_dir"]).name)
    return run_payload(payload, pipeline_options, {"dask_worker": _worker_address()})


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
