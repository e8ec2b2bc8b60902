"""Scaling out (issue 12): jobs on one Dask worker against two, the Dask path's cost per job against the local
executor, and how fast concurrent claimers take jobs from the store, PostgreSQL against SQLite.

Not a test: prints figures measured in one run on this machine.

Jobs on Dask (``--part dask``, see benchmarks/dask_jobs.py): ``--series`` generated MR series (128x128x24, one or
two lesions) analysed by mri-tumour on one Dask worker, on two (a real ``dask scheduler`` and ``dask worker``
processes, one thread each), and by the local executor with one worker process and with two; the ratio one/two
Dask workers (goal >= 1.7, the limit being 2.0) beside the same ratio for local workers (what the machine allows
two workers), and Dask on one worker against local (goal <= 1.1).

Claims (``--part claims``): ``--jobs`` queued jobs (one slide input
each) are claimed by 1 and by ``--claimers`` concurrent claimers, each a process of its own with its own
store connection (as executors of several daemons are), until none is left; every job must be taken exactly
once (the run fails otherwise). Both stores are durable as deployed: SQLite in WAL mode with synchronous
commits (the embedded default), and a real PostgreSQL server (Debian's, started here in a temporary folder on
a Unix socket, with its default fsync and synchronous_commit on). A claim is one write transaction: on SQLite
an immediate transaction (one writer at a time), on PostgreSQL ``SELECT … FOR UPDATE SKIP LOCKED`` (claimers
pass over each other's locked rows).

    .venv/bin/python benchmarks/scale_out.py [--part all|dask|claims] [--series 24] [--jobs 2000] [--claimers 8]
                                             [--repeat 1]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.records import InputKind  # noqa: E402
from agent.store import Store  # noqa: E402
from tests.support.postgres import PostgresServer, PostgresUnavailable  # noqa: E402

_ctx = mp.get_context("spawn")


def queue_jobs(url: str, count: int) -> list[int]:
    store = Store.open(url)
    try:
        ids = []
        for n in range(count):
            inp, _ = store.upsert_file_input(InputKind.SLIDE, Path(f"/bench/{n}.svs"), f"f{n}", {})
            ids.append(store.enqueue(inp.id, "bench", "1")[0].id)
        return ids
    finally:
        store.close()


def _claimer(url: str, start: object, results: object) -> None:
    store = Store.open(url, migrate=False)
    try:
        store.ping()  # connected before the clock starts
        start.wait(timeout=120)  # type: ignore[attr-defined]
        taken = []
        while (job := store.claim()) is not None:
            taken.append(job.id)
        results.put(taken)  # type: ignore[attr-defined]
    finally:
        store.close()


def claims_per_second(url: str, jobs: list[int], claimers: int) -> float:
    start = _ctx.Barrier(claimers + 1)
    results = _ctx.Queue()
    procs = [_ctx.Process(target=_claimer, args=(url, start, results)) for _ in range(claimers)]
    for proc in procs:
        proc.start()
    start.wait(timeout=120)
    began = time.perf_counter()
    taken = [job_id for _ in procs for job_id in results.get(timeout=600)]
    elapsed = time.perf_counter() - began
    for proc in procs:
        proc.join(timeout=60)
    if sorted(taken) != sorted(jobs):
        raise RuntimeError(f"{len(taken)} claims for {len(jobs)} jobs, {len(set(taken))} distinct: not exactly once")
    return len(jobs) / elapsed


def dask_part(series: int, repeat: int) -> None:
    from benchmarks.dask_jobs import run_dask_comparison

    print(f"{os.cpu_count()} CPUs; {series} generated MR series through mri-tumour, fresh workers per run")
    seconds = run_dask_comparison(series, repeat, print)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    runs = f"median of {repeat} runs" if repeat > 1 else "one run"
    print(f"\njobs on Dask ({runs})")
    for name, value in median.items():
        print(f"  {name:<10}{value:>8.1f} s{value / series:>8.2f} s/job")
    print(f"  one Dask worker / two (goal >= 1.7):   {median['dask 1'] / median['dask 2']:.2f}")
    print(f"  peer: one local worker / two:          {median['local 1'] / median['local 2']:.2f}")
    print(f"  Dask on one worker / local (goal <= 1.1): {median['dask 1'] / median['local 1']:.2f}")
    print(f"  Dask's overhead per job: {(median['dask 1'] - median['local 1']) / series * 1000:.0f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["all", "dask", "claims"], default="all")
    parser.add_argument("--series", type=int, default=24)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--claimers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if args.part in ("all", "dask"):
        dask_part(args.series, args.repeat)
    if args.part == "dask":
        return 0
    try:
        server = PostgresServer.start(durable=True)
    except PostgresUnavailable as exc:
        print(f"PostgreSQL is needed: {exc}", file=sys.stderr)
        return 2
    rates: dict[tuple[str, int], list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="oncoagent-scale-") as tmp:
            backends: dict[str, Callable[[str], str]] = {
                "sqlite": lambda name: f"sqlite:///{Path(tmp) / name}.db",
                "postgresql": server.new_database,
            }
            for run in range(args.repeat):
                for count in (1, args.claimers):
                    for backend, make_url in backends.items():
                        url = make_url(f"claims{run}x{count}")
                        jobs = queue_jobs(url, args.jobs)
                        rates.setdefault((backend, count), []).append(claims_per_second(url, jobs, count))
    finally:
        server.stop()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {args.jobs} queued jobs, claimed until "
          f"none is left (each exactly once), each claimer a process; durable commits on both")
    runs = f"median of {args.repeat} runs" if args.repeat > 1 else "one run"
    print(f"\njob claims per second ({runs})")
    print(f"  {'claimers':<10}{'sqlite':>12}{'postgresql':>14}{'postgresql/sqlite':>20}")
    for count in (1, args.claimers):
        sqlite, postgres = (statistics.median(rates[b, count]) for b in ("sqlite", "postgresql"))
        print(f"  {count:<10}{sqlite:>12.1f}{postgres:>14.1f}{postgres / sqlite:>20.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
