"""Scaling out (issue 12): how fast concurrent claimers take jobs from the store, PostgreSQL against SQLite.

Not a test: prints figures measured in one run on this machine. ``--jobs`` queued jobs (one slide input
each) are claimed by 1 and by ``--claimers`` concurrent claimers, each a process of its own with its own
store connection (as executors of several daemons are), until none is left; every job must be taken exactly
once (the run fails otherwise). Both stores are durable as deployed: SQLite in WAL mode with synchronous
commits (the embedded default), and a real PostgreSQL server (Debian's, started here in a temporary folder on
a Unix socket, with its default fsync and synchronous_commit on). A claim is one write transaction: on SQLite
an immediate transaction (one writer at a time), on PostgreSQL ``SELECT … FOR UPDATE SKIP LOCKED`` (claimers
pass over each other's locked rows).

    .venv/bin/python benchmarks/scale_out.py [--jobs 2000] [--claimers 8] [--repeat 1]

The Dask executor's comparison (one worker against two, and its overhead per job against the local executor)
belongs here too once that backend exists.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--claimers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
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
