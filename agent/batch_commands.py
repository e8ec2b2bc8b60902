"""``oncoagent batch PATHS`` (queue an archive by hand: a run recorded like a scheduled one), ``oncoagent batch
runs`` (the latest runs and how far their jobs are) and ``oncoagent batch show RUN`` (one run: its inputs, jobs
by status, each failure with its reason, and an ETA)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from agent.batch_summary import run_document, shown_status, summary_path
from agent.config import LoadedSettings
from agent.errors import EXIT_CONFIG, EXIT_FAILED
from agent.progress import duration_text
from agent.records import MANUAL_BATCH, BatchRunStatus, Verdict
from agent.store_commands import _iso, _opened_store


def add_parser(sub: Any) -> None:
    batch = sub.add_parser(
        "batch", help="queue every slide and DICOM series under PATHs for the daemon; or list (runs) or show "
                      "(show RUN) batch runs",
        usage="oncoagent batch [--reprocess] [--wait] [--wait-timeout S] PATH... | runs [--limit N] [--json] | "
              "show RUN [--json]",
        description="oncoagent batch PATH... queues an archive (a run recorded like a scheduled one); "
                    "oncoagent batch runs lists the latest runs; oncoagent batch show RUN shows one. "
                    "(A folder named 'runs' or 'show' is queued as ./runs or ./show.)")
    batch.add_argument("words", nargs="+", metavar="PATH", help="slides, DICOM files or folders; or runs; or show RUN")
    batch.add_argument("--reprocess", action="store_true", help="run again where a result already exists")
    batch.add_argument("--wait", action="store_true",
                       help="then follow the run's jobs until all have ended; exit 1 if any did not succeed")
    batch.add_argument("--wait-timeout", type=float, metavar="S",
                       help="wait, but give up after S seconds (exit 1; the jobs go on)")
    batch.add_argument("--limit", type=int, default=50, help="runs: how many, newest first")
    batch.add_argument("--json", action="store_true", help="runs, show: machine-readable output")
    batch.set_defaults(handler=cmd_batch)


def cmd_batch(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    words: list[str] = args.words
    if words == ["runs"]:
        return cmd_batch_runs(args, loaded)
    if words[0] == "show":
        if len(words) != 2 or not words[1].isdigit():
            print("oncoagent: usage: oncoagent batch show RUN (a run id, as oncoagent batch runs lists them)",
                  file=sys.stderr)
            return EXIT_CONFIG
        return cmd_batch_show(int(words[1]), args, loaded)
    return cmd_batch_queue(args, loaded)


def cmd_batch_queue(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from agent.batch import HeldRun, run_held
    from agent.batch_follow import ShownRun, wait_for_run
    from agent.job_outcomes import node_name
    from agent.router import Router
    from agent.store import Store
    from pipelines import registry

    settings = loaded.settings
    Router(settings.routing.rules).check_pipelines(registry.names())
    settings.paths.create()
    paths = [Path(word).absolute() for word in args.words]
    owner = f"{node_name(settings)}:batch-{os.getpid()}"  # not the daemon's name: its start does not touch this
    lease_s = settings.executor.lease_s
    store = Store.open(settings.database_url)
    try:
        now = time.time()
        run = store.batch_run_begin(MANUAL_BATCH, now, paths, args.reprocess, owner=owner, lease_s=lease_s, now=now)
        if run is None:  # a new slot of its own: another hand-run batch started at the very same instant
            print("oncoagent: another batch run started at this instant; try again", file=sys.stderr)
            return EXIT_FAILED
        held = (ShownRun(store, run, owner, lease_s, sys.stderr) if sys.stderr.isatty()  # bars on a terminal
                else HeldRun(store, run, owner, lease_s))
        try:
            report = run_held(store, settings, held)
        except KeyboardInterrupt:
            held.finish(BatchRunStatus.FAILED, "stopped by the user")
            raise
        finally:
            if isinstance(held, ShownRun):
                held.close()
    finally:
        store.close()
    for missing in report.missing:
        print(f"missing: {missing}", file=sys.stderr)
    print(f"{report.files} file(s), {report.inputs} input(s), {len(report.queued)} job(s) queued "
          f"(batch run {run.id}: oncoagent batch show {run.id})")
    wait = args.wait or args.wait_timeout is not None
    waited = wait_for_run(settings, run.id, args.wait_timeout) if wait else 0
    return EXIT_FAILED if report.missing and not waited else waited


def cmd_batch_runs(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    with _opened_store(loaded.settings) as store:
        runs = store.batch_runs(max(1, args.limit))
    if args.json:
        print(json.dumps([run_document(p) for p in runs], indent=2))
        return 0
    if not runs:
        print("no batch runs recorded")
        return 0
    print(f"{'id':>6}  {'batch':<20} {'slot (UTC)':<20}  {'status':<11} {'done/total':>10} {'failed':>6} "
          f"{'changed':>7} {'discordant':>10}")
    for p in runs:
        print(f"{p.run.id:>6}  {p.run.batch:<20} {_iso(p.run.slot):<20}  {shown_status(p):<11} "
              f"{f'{p.done}/{p.total}':>10} {p.failed:>6} {p.changed:>7} {p.verdicts.get(Verdict.DISCORDANT, 0):>10}")
    return 0


def cmd_batch_show(run_id: int, args: argparse.Namespace, loaded: LoadedSettings) -> int:
    with _opened_store(loaded.settings) as store:
        progress = store.batch_run_progress(run_id)
    doc = run_document(progress, workers=loaded.settings.executor.workers)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    run = progress.run
    print(f"batch run {run.id}: {run.batch}, slot {doc['slot']}")
    print(f"status      {doc['status']}" + (f" ({run.error})" if run.error else ""))
    print(f"held by     {run.owner or '-'}" + (f", resumed {run.resumed} time(s)" if run.resumed else ""))
    print(f"started     {doc['started_at']}   finished {doc['finished_at'] or '-'}")
    print(f"paths       {', '.join(doc['paths'])}" + ("   (reprocess)" if run.reprocess else ""))
    print(f"inputs      {progress.inputs}")
    print(f"jobs        done {progress.done}/{progress.total}: "
          + ", ".join(f"{status} {count}" for status, count in doc["jobs"].items()))
    eta = doc["eta_s"]
    if progress.done < progress.total:
        print("ETA         " + ("unknown (no job finished yet)" if eta is None else
                                f"{duration_text(eta)} (mean job {progress.mean_job_s:.1f} s, "
                                f"{loaded.settings.executor.workers} worker(s))"))
    if progress.verdicts or run.options:
        send = run.options.get("send_results", "always")
        print(f"compared    {', '.join(f'{v.value} {progress.verdicts.get(v, 0)}' for v in Verdict)}"
              f"   (send_results {send})")
    for failure in progress.failures:
        print(f"FAILED  job {failure.job_id}  {failure.input_path}: {failure.error or 'no reason recorded'}")
    if summary_path(loaded.settings, run.id).exists():
        print(f"summary     {summary_path(loaded.settings, run.id)}")
    for found in progress.discordant:
        print(f"DISCORDANT  job {found.job_id}  {found.input_path}: {'; '.join(found.reasons)}"
              + ("" if found.sent else "   (not sent)"))
    return 0
