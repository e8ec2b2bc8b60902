"""Nightly reprocessing (issue 11): generated MR series reprocessed through the batch path of a running daemon,
against a shell loop of ``oncoagent process`` over the same series. Goal: the daemon >= 1.5x the loop (it loads
the models once per worker, not once per case).

``--series`` (default 200) MR series of 128x128x24 voxels (2.8 mm pixels, 4 mm slices, one or two lesions; the
series of benchmarks/dask_jobs.py: mri-tumour takes a few seconds of CPU on one each) are written as DICOM files
into an archive folder. Both sides run with the same environment and the shipped defaults (one torch thread per
pipeline run).

(a) Daemon: ``oncoagent run`` with the mri-tumour routing and the default number of executor workers (or
``--workers``) is started (not timed: a daemon runs all along), then the archive is processed once by
``oncoagent batch --wait ARCHIVE`` (its DICOM files are copied into the daemon's storage: timed and reported, but
not the figure compared), then reprocessed by ``oncoagent batch --reprocess --wait ARCHIVE``: the nightly case the
issue names, on inputs the store already holds, as a lab's archive is. Each is timed from the command's start to
the last of its run's jobs recorded as finished (the store's clock, so the command's one-second polling is not
counted). Scheduling overhead per job: the workers' time not spent inside a job (claims, dispatch, recording the
outcome, a worker waiting at the end) divided by the jobs: (seconds x workers - sum of job durations) / jobs.

(b) Shell loop: ``for s in ARCHIVE/*/; do oncoagent process "$s" --out OUT; done`` run by bash, one series after
another as a cron script would, timed whole.

The loop runs one case at a time (about one core); the daemon's default is two workers: ``--workers 1`` shows
what loading the models once per worker gains alone. Prints seconds, cases per hour and the ratio loop /
reprocess; ``--json`` writes them. On a shared or small
machine the figures are indicative: quote them with the CPU count and the load average printed.

    .venv/bin/python benchmarks/batch_reprocess.py [--series 200 | --quick] [--workers N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.config import load_settings  # noqa: E402
from agent.store import Store  # noqa: E402
from benchmarks.dask_jobs import ROUTING, write_series  # noqa: E402
from tests.support.daemon import DaemonProcess  # noqa: E402

QUICK_SERIES = 4
GOAL = 1.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=200, help="MR series to reprocess (default 200)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SERIES} series: checks the script runs")
    parser.add_argument("--workers", type=int, help="the daemon's executor workers (default: the configuration's)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    count = QUICK_SERIES if args.quick else args.series
    config: dict[str, Any] = {"routing": {"rules": ROUTING},  # log at INFO: the daemon says when it is ready
                              "ingest": {"inbox": False}}
    if args.workers:
        config["executor"] = {"workers": args.workers}
    env = {"PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="oncoagent-batch-bench-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        archive = write_series(root / "archive", count)
        print(f"{count} MR series (128x128x24) written in {time.perf_counter() - t:.1f} s", flush=True)
        (root / "daemon").mkdir()
        daemon = DaemonProcess(root / "daemon", config, env=env)
        workers = load_settings(daemon.config_file).settings.executor.workers  # as the daemon reads it
        t = time.perf_counter()
        daemon.start()
        print(f"daemon ready in {time.perf_counter() - t:.1f} s", flush=True)
        try:
            first = timed_batch(daemon, archive, reprocess=False)
            print(f"first processing (batch --wait): {first['jobs']} jobs in {first['seconds']:.1f} s", flush=True)
            again = timed_batch(daemon, archive, reprocess=True)
            print(f"reprocessing (batch --reprocess --wait): {again['jobs']} jobs in {again['seconds']:.1f} s",
                  flush=True)
        finally:
            daemon.stop()
        loop_s = shell_loop(daemon, archive, root / "loop-out", count)
        print(f"shell loop of oncoagent process: {count} series in {loop_s:.1f} s", flush=True)
    for figures in (first, again):
        figures["overhead_per_job_s"] = (figures["seconds"] * workers - figures["job_seconds"]) / figures["jobs"]
    ratio = loop_s / again["seconds"]
    per_hour = {"reprocess": 3600 * count / again["seconds"], "first": 3600 * count / first["seconds"],
                "loop": 3600 * count / loop_s}
    print()
    print(f"{count} series, daemon with {workers} worker(s); {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"  daemon, reprocess   {again['seconds']:8.1f} s  {per_hour['reprocess']:7.0f} cases/h  "
          f"mean job {again['job_seconds'] / again['jobs']:.2f} s, overhead {again['overhead_per_job_s']:.3f} s/job")
    print(f"  daemon, first pass  {first['seconds']:8.1f} s  {per_hour['first']:7.0f} cases/h  "
          f"mean job {first['job_seconds'] / first['jobs']:.2f} s, overhead {first['overhead_per_job_s']:.3f} s/job")
    print(f"  shell loop          {loop_s:8.1f} s  {per_hour['loop']:7.0f} cases/h  "
          f"({loop_s / count:.2f} s per case)")
    print(f"ratio loop / daemon reprocess: {ratio:.2f} (goal >= {GOAL})")
    if args.json:
        args.json.write_text(json.dumps({
            "series": count, "workers": workers, "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
            "reprocess": again, "first": first, "loop_seconds": loop_s, "cases_per_hour": per_hour,
            "ratio": ratio, "goal": GOAL}, indent=2))
    return 0


def timed_batch(daemon: DaemonProcess, archive: Path, *, reprocess: bool) -> dict[str, Any]:
    """Run ``oncoagent batch [--reprocess] --wait ARCHIVE``; seconds from its start to its run's last job
    finished, the jobs and the sum of their durations. Fails unless every job succeeded."""
    command = [sys.executable, "-m", "agent.cli", "--config", str(daemon.config_file), "--data-dir",
               str(daemon.data_dir), "batch", *(["--reprocess"] if reprocess else []), "--wait", str(archive)]
    began = time.time()
    proc = subprocess.run(command, env=daemon.env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"oncoagent batch exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    found = re.search(r"\(batch run (\d+):", proc.stdout)
    if found is None:
        raise RuntimeError(f"no batch run in the output:\n{proc.stdout}")
    store = Store.open(f"sqlite:///{daemon.data_dir / 'oncoagent.db'}", migrate=False)
    try:
        jobs = [store.get_job(job_id) for job_id in store.batch_run_taken(int(found.group(1))).values()
                if job_id is not None]
    finally:
        store.close()
    ended = [j.finished_at for j in jobs if j.finished_at is not None]
    durations = [j.finished_at - j.started_at for j in jobs if j.finished_at is not None and j.started_at is not None]
    if not jobs or len(ended) != len(jobs):
        raise RuntimeError(f"{len(jobs)} jobs, {len(ended)} finished:\n{proc.stdout}")
    return {"seconds": max(ended) - began, "command_seconds": time.time() - began, "jobs": len(jobs),
            "job_seconds": sum(durations)}


def shell_loop(daemon: DaemonProcess, archive: Path, out: Path, count: int) -> float:
    """``oncoagent process`` on each series in turn, from a bash loop; its seconds. Fails unless every series
    got its result."""
    process = shlex.join([sys.executable, "-m", "agent.cli", "--config", str(daemon.config_file), "--data-dir",
                          str(daemon.root / "loop-data"), "process"])
    script = f'for s in {shlex.quote(str(archive))}/*/; do {process} "$s" --out {shlex.quote(str(out))} || exit 1; done'
    began = time.perf_counter()
    proc = subprocess.run(["bash", "-c", script], env=daemon.env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    results = list(out.glob("*/result.json"))
    if proc.returncode != 0 or len(results) != count:
        raise RuntimeError(f"the loop exited {proc.returncode} with {len(results)} results:\n{proc.stderr[-3000:]}")
    return seconds


if __name__ == "__main__":
    sys.exit(main())
