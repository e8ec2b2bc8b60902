"""The Dask half of ``benchmarks/scale_out.py``: generated MR series analysed by mri-tumour through the executor,
on one Dask worker, on two, and on the local executor with one worker process.

Each configuration gets a fresh data folder and store with the same series recorded and queued (the batch path,
``agent.batch.enqueue_paths``, not timed), fresh workers (so each loads its models once, as a deployment does),
and is timed from the executor's start to the last job's recorded outcome. Every worker runs one job at a time
on one thread: one Dask thread (``--nthreads 1``), one torch thread (``torch_threads``), and one thread for ITK
(SimpleITK, pyradiomics) and the BLAS libraries (the environment below, given to the local worker and the Dask
workers alike), so that on a 2-core machine two workers can at most double.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.batch import enqueue_paths
from agent.config import Settings
from agent.executors import JobExecutor, executor_for
from agent.records import JobStatus
from agent.store import Store
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.support.dask_cluster import DaskCluster
from tests.support.waiting import wait_for

ONE_THREAD = {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1"}
ROUTING = [{"name": "mri", "pipeline": "mri-tumour",
            "match": {"kind": "dicom-series", "dicom": {"Modality": "MR"}, "min_slices": 3}}]


def write_series(folder: Path, count: int) -> Path:
    for n in range(count):
        write_mr_series(folder / f"s{n:03d}", MRSeriesSpec(rows=128, columns=128, slices=24, pixel_spacing_mm=2.8,
                                                          slice_thickness_mm=4.0, lesions=1 + n % 2, seed=960_000 + n))
    return folder


def settings_for(data_dir: Path, executor: dict[str, Any]) -> Settings:
    return Settings.model_validate({
        "data_dir": str(data_dir),
        "routing": {"rules": ROUTING},
        "pipelines": {"mri-tumour": {"torch_threads": 1}},
        "executor": {"job_timeout_s": 3600, **executor},  # the executors wake on outcomes, not by polling
        "log": {"level": "WARNING"},
    })


def timed_run(settings: Settings, series: Path) -> tuple[float, int]:
    """Queue every series under ``series``, then run the executor until all jobs ended: (seconds, jobs)."""
    settings.paths.create()
    store = Store.open(settings.database_url)
    try:
        report = enqueue_paths(store, settings, [series])
        executor: JobExecutor = executor_for(store, settings)
        began = time.perf_counter()
        executor.start()
        thread = threading.Thread(target=executor.run, daemon=True)
        thread.start()
        jobs = report.queued
        pending = list(jobs)

        def all_ended() -> bool:  # one query per look, mostly: the harness must not take the workers' CPU
            while pending and store.get_job(pending[0]).status.finished:
                pending.pop(0)
            return not pending

        wait_for(all_ended, 3600, interval=0.1, what="every job to end")
        elapsed = time.perf_counter() - began
        failed = [j for j in jobs if store.get_job(j).status is not JobStatus.SUCCEEDED]
        executor.stop()
        thread.join(timeout=60)
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(jobs)} jobs did not succeed: {failed}")
        return elapsed, len(jobs)
    finally:
        store.close()


def run_dask_comparison(count: int, repeat: int, log: Callable[[str], None]) -> dict[str, list[float]]:
    """Seconds per configuration ('local 1', 'dask 1', 'dask 2', 'local 2'), one entry per repeat. The local
    executor with two workers is the peer of two Dask workers: what this machine allows two workers at all."""
    seconds: dict[str, list[float]] = {}
    os.environ.update(ONE_THREAD)  # the local worker is spawned from this process, with its environment
    with tempfile.TemporaryDirectory(prefix="oncoagent-scale-dask-") as tmp:
        root = Path(tmp)
        series = write_series(root / "series", count)
        for run in range(repeat):
            for name in ("local 1", "dask 1", "dask 2", "local 2"):
                data = root / f"{name.replace(' ', '')}-{run}"
                if name.startswith("local"):
                    workers = int(name.split()[1])
                    elapsed, jobs = timed_run(settings_for(data, {"workers": workers}), series)
                else:
                    (data / "dask").mkdir(parents=True)
                    cluster = DaskCluster(data / "dask", env=ONE_THREAD)
                    try:
                        cluster.start(workers=int(name.split()[1]))
                        settings = settings_for(data, {"backend": "dask", "dask": {"scheduler": cluster.address}})
                        elapsed, jobs = timed_run(settings, series)
                    finally:
                        cluster.stop()
                log(f"  run {run + 1}, {name}: {jobs} jobs in {elapsed:.1f} s")
                seconds.setdefault(name, []).append(elapsed)
                shutil.rmtree(data, ignore_errors=True)
    return seconds
