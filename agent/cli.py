"""The ``oncoagent`` command: daemon, one-shot processing, status, jobs, batches and configuration.

Exit status: 0 success, 1 some work failed, 2 bad configuration or usage, 3 the data directory is in use.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from agent import __version__
from agent.config import LoadedSettings, Settings, load_settings, masked
from agent.errors import ConfigError, DataDirLockedError, OncoAgentError, StoreError
from agent.records import InputKind, Job, JobStatus, OutboxItem, OutboxStatus
from agent.runtime import prepare_process
from pipelines.errors import PipelineError, PipelineOptionsError
from pipelines.wsi.slide_files import sidecar_for, slide_context

log = logging.getLogger("agent.cli")

EXIT_FAILED, EXIT_CONFIG, EXIT_LOCKED = 1, 2, 3

# Each module defines add_parsers(subparsers): its `oncoagent train NAME` commands, each with a `trainer` default
# taking (args, TrainSettings) and returning an exit status (see pipelines.trainers). Heavy imports stay inside.
TRAINER_MODULES = ("pipelines.wsi.train_cli", "pipelines.mri.train_cli")


def _available(modules: Sequence[str]) -> list[str]:
    found = []
    for module in modules:
        try:
            if importlib.util.find_spec(module) is not None:
                found.append(module)
        except ModuleNotFoundError:
            continue
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oncoagent",
        description="OncoAgent: scans in (DICOM, scanner folders), CTC/CTM and MRI tumour findings out.",
    )
    parser.add_argument("--version", action="version", version=f"oncoagent {__version__}")
    parser.add_argument("--config", type=Path, help="YAML config file (default: config/oncoagent.yaml)")
    parser.add_argument("--data-dir", type=Path, help="folder for all state: database, files, results (./var)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", choices=["human", "json"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon: ingest, workers, schedules (SIGTERM stops it)")
    run.add_argument("--workers", type=int, help="number of worker processes")
    run.add_argument("--scp-port", type=int, help="DICOM port to listen on (scp.port)")
    run.add_argument("--scp-aet", help="our DICOM AE title (scp.ae_title)")
    run.set_defaults(handler=cmd_run)

    process = sub.add_parser("process", help="process files or folders once, without a daemon")
    process.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="slides, DICOM files or folders")
    process.add_argument("--out", type=Path, help="results folder (default: <data-dir>/results/process)")
    process.add_argument("--pipeline", help="use this pipeline instead of the routing rules")
    process.set_defaults(handler=cmd_process)

    status = sub.add_parser("status", help="instances, series, jobs by status, outbox")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)

    jobs = sub.add_parser("jobs", help="list, show, retry or cancel jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    jl = jobs_sub.add_parser("list", help="list recent jobs")
    jl.add_argument("--status", choices=[s.value for s in JobStatus])
    jl.add_argument("--limit", type=int, default=50)
    jl.add_argument("--unsent", action="store_true",
                    help="only succeeded jobs whose results were kept locally (no patient context), with what to do")
    jl.add_argument("--json", action="store_true")
    jl.set_defaults(handler=cmd_jobs_list)
    for name, handler, text in (
        ("show", cmd_jobs_show, "one job with its events"),
        ("retry", cmd_jobs_retry, "queue a failed or cancelled job again, or one whose results were not sent "
                                  "(a slide's context is read again from its sidecar and file name)"),
        ("cancel", cmd_jobs_cancel, "cancel a queued job"),
    ):
        p = jobs_sub.add_parser(name, help=text)
        p.add_argument("job_id", type=int)
        if name == "show":
            p.add_argument("--json", action="store_true")
        p.set_defaults(handler=handler)

    outbox = sub.add_parser("outbox", help="objects waiting for or sent to PACS destinations")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    ol = outbox_sub.add_parser("list", help="list recent outbox entries")
    ol.add_argument("--status", choices=[s.value for s in OutboxStatus])
    ol.add_argument("--limit", type=int, default=50)
    ol.add_argument("--json", action="store_true")
    ol.set_defaults(handler=cmd_outbox_list)
    for name, handler, text in (
        ("retry", cmd_outbox_retry, "send a failed or cancelled entry again"),
        ("cancel", cmd_outbox_cancel, "stop sending a pending entry"),
    ):
        p = outbox_sub.add_parser(name, help=text)
        p.add_argument("item_id", type=int)
        p.set_defaults(handler=handler)
    oa = outbox_sub.add_parser("add", help="queue DICOM files for a destination (the daemon sends them)")
    oa.add_argument("destination")
    oa.add_argument("files", nargs="+", type=Path, metavar="FILE")
    oa.set_defaults(handler=cmd_outbox_add)

    batch = sub.add_parser("batch", help="queue every slide and DICOM series under PATHs for the daemon")
    batch.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    batch.add_argument("--reprocess", action="store_true", help="run again where a result already exists")
    batch.set_defaults(handler=cmd_batch)

    config = sub.add_parser("config", help="check or show the configuration in force")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_sub.add_parser("check", help="validate and report").set_defaults(handler=cmd_config_check)
    show = config_sub.add_parser("show", help="print the merged settings (secrets masked)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_config_show)

    train = sub.add_parser("train", help="train a model on your own data or on generated data")
    train.set_defaults(handler=cmd_train)
    train_sub = train.add_subparsers(dest="train_command", required=True, metavar="MODEL")
    for module in _available(TRAINER_MODULES):
        importlib.import_module(module).add_parsers(train_sub)

    demo = sub.add_parser("demo", help="generate sample inputs and run them through the daemon")
    demo.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {
        "data_dir": args.data_dir,
        "log.level": args.log_level,
        "log.format": args.log_format,
        "executor.workers": getattr(args, "workers", None),
        "scp.port": getattr(args, "scp_port", None),
        "scp.ae_title": getattr(args, "scp_aet", None),
    }
    try:
        loaded = load_settings(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"oncoagent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        prepare_process(loaded.settings.log.level, loaded.settings.log.format, loaded.settings.plugins)
    except ConfigError as exc:
        print(f"oncoagent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    handler: Callable[[argparse.Namespace, LoadedSettings], int] = args.handler
    try:
        return handler(args, loaded)
    except (ConfigError, PipelineOptionsError) as exc:
        print(f"oncoagent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except DataDirLockedError as exc:
        print(f"oncoagent: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except (OncoAgentError, PipelineError) as exc:
        print(f"oncoagent: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


# ------------------------------------------------------------------------------------------ commands


def cmd_run(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from agent.daemon import Daemon

    return Daemon(loaded.settings).run()


def cmd_process(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from agent.oneshot import process
    from agent.router import Router
    from pipelines import registry

    settings = loaded.settings
    router = Router(settings.routing.rules)
    if args.pipeline is None:
        router.check_pipelines(registry.names())
    out: Path = args.out or settings.paths.results / "process"
    progress = _progress_bar if sys.stderr.isatty() else iter
    registry.validate_options(settings.pipelines)
    outcomes = process(settings, router, args.paths, out, args.pipeline, progress=progress)
    failed = 0
    for outcome in outcomes:
        if outcome.ok:
            print(f"ok      {outcome.name}: {outcome.detail}/result.json ({outcome.pipeline})")
        else:
            failed += 1
            print(f"FAILED  {outcome.name}: {outcome.detail}")
    print(f"{len(outcomes) - failed} succeeded, {failed} failed; results in {out}")
    return EXIT_FAILED if failed or not outcomes else 0


def _progress_bar(items: Any) -> Any:
    from tqdm import tqdm

    return tqdm(list(items), desc="processing", unit="input", file=sys.stderr)


@contextmanager
def _opened_store(settings: Settings) -> Iterator[Any]:
    """The job store of an existing data directory (commands that only read or adjust it)."""
    from agent.store import Store

    if settings.store.url is None and not (settings.data_dir / "oncoagent.db").exists():
        raise StoreError(f"no OncoAgent database in {settings.data_dir} (has the daemon run with this --data-dir?)")
    store = Store.open(settings.database_url)
    try:
        yield store
    finally:
        store.close()


def cmd_status(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    with _opened_store(loaded.settings) as store:
        counts = store.counts()
    counts["data_dir"] = str(loaded.settings.data_dir)
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    print(f"data directory  {counts['data_dir']}")
    print(f"instances       {counts['instances']}")
    print(f"series          {counts['series']}")
    print(f"slides          {counts['slides']}")
    print("inputs          " + _pairs(counts["inputs_by_state"]))
    print("jobs            " + _pairs(counts["jobs"]))
    print("outbox          " + (_pairs(counts["outbox"]) or "empty"))
    if counts["results_unsent"]:
        print(f"results not sent: no patient context  {counts['results_unsent']}   "
              "(oncoagent jobs list --unsent says what to do)")
    return 0


def _pairs(mapping: dict[str, int]) -> str:
    return "  ".join(f"{k} {v}" for k, v in mapping.items())


def _job_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "input_id": job.input_id,
        "pipeline": job.pipeline,
        "pipeline_version": job.pipeline_version,
        "status": job.status.value,
        "priority": job.priority.name.lower(),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "rule": job.rule,
        "last_error": job.last_error,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "result_path": str(job.result_path) if job.result_path else None,
        "models": job.models,
        "unsent_reason": job.unsent_reason,
    }


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def cmd_jobs_list(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    with _opened_store(loaded.settings) as store:
        if args.unsent:
            jobs = store.list_unsent(limit=args.limit)
            inputs = {job.id: store.get_input(job.input_id) for job in jobs}
        else:
            jobs = store.list_jobs(JobStatus(args.status) if args.status else None, limit=args.limit)
    if args.json:
        print(json.dumps([_job_dict(j) for j in jobs], indent=2))
        return 0
    if args.unsent:
        for job in jobs:
            inp = inputs[job.id]
            print(f"job {job.id} ({job.pipeline}) {inp.path}\n  results kept in {job.result_path}: {job.unsent_reason}"
                  f"\n  to send them: write {inp.path}.json with patient_id and accession_number (or study_uid), "
                  f"then: oncoagent jobs retry {job.id}")
        if not jobs:
            print("every succeeded job's results were made for PACS")
        return 0
    print(f"{'id':>6}  {'status':<10} {'pipeline':<12} {'prio':<8} {'tries':>5}  detail")
    for job in jobs:
        detail = job.last_error if job.status is not JobStatus.SUCCEEDED else str(job.result_path)
        if job.unsent_reason:
            detail = f"not sent ({job.unsent_reason.split(':')[0]}): {detail}"
        print(
            f"{job.id:>6}  {job.status.value:<10} {job.pipeline:<12} {job.priority.name.lower():<8} "
            f"{job.attempts:>2}/{job.max_attempts:<2}  {(detail or '')[:100]}"
        )
    return 0


def cmd_jobs_show(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    with _opened_store(loaded.settings) as store:
        job = store.get_job(args.job_id)
        doc = _job_dict(job)
        doc["summary"] = store.job_summary(job.id)
        doc["events"] = [
            {"at": _iso(e["at"]), "event": e["event"], "detail": e["detail"]} for e in store.events(job.id)
        ]
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), end="")
    return 0


def cmd_jobs_retry(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    with _opened_store(loaded.settings) as store:
        inp = store.get_input(store.get_job(args.job_id).input_id)
        if inp.kind is InputKind.SLIDE:  # a sidecar added since the slide arrived gives it its context now
            ingest = loaded.settings.ingest
            context, source = slide_context(inp.path, re.compile(ingest.filename_regex) if ingest.filename_regex
                                            else None, sidecar_for(inp.path) if ingest.sidecar else None)
            store.set_context(inp.id, context, source)
        job = store.retry(args.job_id)
    print(f"job {job.id} queued again")
    return 0


def cmd_jobs_cancel(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    with _opened_store(loaded.settings) as store:
        job = store.cancel(args.job_id)
    print(f"job {job.id} cancelled")
    return 0


def _outbox_dict(item: OutboxItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "job_id": item.job_id,
        "destination": item.destination,
        "sop_instance_uid": item.sop_instance_uid,
        "sop_class_uid": item.sop_class_uid,
        "path": str(item.path),
        "status": item.status.value,
        "attempts": item.attempts,
        "last_status": None if item.last_status is None else f"0x{item.last_status:04X}",
        "last_error": item.last_error,
        "next_attempt_at": _iso(item.next_attempt_at) if item.next_attempt_at else None,
        "sent_at": _iso(item.sent_at),
        "note": item.note,
    }


def cmd_outbox_list(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    with _opened_store(loaded.settings) as store:
        items = store.outbox_list(OutboxStatus(args.status) if args.status else None, limit=args.limit)
    if args.json:
        print(json.dumps([_outbox_dict(i) for i in items], indent=2))
        return 0
    print(f"{'id':>6}  {'status':<9} {'destination':<12} {'tries':>5}  detail")
    for item in items:
        detail = item.last_error or item.sop_instance_uid
        print(f"{item.id:>6}  {item.status.value:<9} {item.destination:<12} {item.attempts:>5}  {detail[:100]}")
    return 0


def cmd_outbox_retry(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    with _opened_store(loaded.settings) as store:
        item = store.outbox_retry(args.item_id)
    print(f"outbox entry {item.id} will be sent again")
    return 0


def cmd_outbox_cancel(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    with _opened_store(loaded.settings) as store:
        item = store.outbox_cancel(args.item_id)
    print(f"outbox entry {item.id} cancelled")
    return 0


def cmd_outbox_add(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    import pydicom
    from pydicom.errors import InvalidDicomError

    settings = loaded.settings
    if args.destination not in {d.name for d in settings.destinations}:
        known = ", ".join(d.name for d in settings.destinations) or "none configured"
        raise ConfigError(f"no destination named {args.destination!r} (destinations: {known})")
    failed = 0
    with _opened_store(settings) as store:
        for path in args.files:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                item, new = store.outbox_add(
                    args.destination, path.resolve(), str(ds.SOPClassUID), str(ds.SOPInstanceUID)
                )
            except (OSError, InvalidDicomError, AttributeError) as exc:
                failed += 1
                print(f"FAILED  {path}: not a readable DICOM object ({exc})")
                continue
            print(f"{'queued ' if new else 'already'} {path} as outbox entry {item.id}")
    return EXIT_FAILED if failed else 0


def cmd_batch(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from agent.batch import enqueue_paths
    from agent.router import Router
    from agent.store import Store
    from pipelines import registry

    settings = loaded.settings
    Router(settings.routing.rules).check_pipelines(registry.names())
    settings.paths.create()
    store = Store.open(settings.database_url)
    try:
        report = enqueue_paths(store, settings, args.paths, reprocess=args.reprocess)
    finally:
        store.close()
    for missing in report.missing:
        print(f"missing: {missing}", file=sys.stderr)
    print(f"{report.files} file(s), {report.inputs} input(s), {len(report.queued)} job(s) queued")
    return EXIT_FAILED if report.missing else 0


def cmd_config_check(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from agent.router import Router
    from pipelines import registry

    settings = loaded.settings
    Router(settings.routing.rules).check_pipelines(registry.names())
    registry.validate_options(settings.pipelines)
    problems = []
    for folder in settings.ingest.folders:
        if not folder.is_dir():
            problems.append(f"ingest.folders: {folder} is not a folder")
    source = loaded.config_file or "built-in defaults"
    if problems:
        print(f"configuration from {source} has problems:\n  " + "\n  ".join(problems), file=sys.stderr)
        return EXIT_CONFIG
    print(f"configuration OK ({source}); pipelines: {', '.join(registry.names())}")
    return 0


def cmd_config_show(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    data = masked(loaded.settings)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"# from {loaded.config_file or 'built-in defaults'}, environment and flags")
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")
    return 0


def cmd_train(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from pipelines.trainers import TrainHandler, TrainSettings

    trainer: TrainHandler = args.trainer
    return trainer(args, TrainSettings(data_dir=loaded.settings.data_dir))


def cmd_demo(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from agent.demo import run_demo

    return run_demo(loaded, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
