"""``oncoagent status``, ``jobs`` and ``outbox``: the commands that read or adjust the store of an
existing data directory (the daemon may be running; the store's transactions keep both consistent)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from agent import purge
from agent.config import LoadedSettings, Settings
from agent.errors import EXIT_FAILED, ConfigError, StoreError
from agent.ingest.knobs import IngestKnobs
from agent.progress import job_progress
from agent.records import InputKind, Job, JobStatus, OutboxItem, OutboxStatus
from pipelines.wsi.slide_files import sidecar_for, slide_context


def add_parsers(sub: Any) -> None:
    """Register the store commands on the ``oncoagent`` sub-command parser."""
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

    purge.add_parser(sub)  # oncoagent purge: retention's own module


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


def _job_dict(job: Job, now: float | None = None) -> dict[str, Any]:
    progress = job_progress(job, time.time() if now is None else now)
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
        "progress": None if progress is None else progress.as_dict() | {"at": _iso(progress.at)},
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
        progress = job_progress(job, time.time()) if job.status is JobStatus.RUNNING else None
        if progress is not None:
            detail = progress.text()
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
        return 0
    progress = job_progress(job, time.time())
    doc["progress"] = None if progress is None else progress.text()  # 45 % (tiles 450/1000), about 2 min left
    print(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), end="")
    return 0


def cmd_jobs_retry(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    with _opened_store(loaded.settings) as store:
        inp = store.get_input(store.get_job(args.job_id).input_id)
        if inp.kind is InputKind.SLIDE:  # a sidecar added since the slide arrived gives it its context now
            knobs = IngestKnobs.from_settings(loaded.settings.ingest)
            context, source = slide_context(inp.path, knobs.filename_regex,
                                            sidecar_for(inp.path) if knobs.sidecar else None)
            if context:  # without a sidecar or name match, the context stored (e.g. from the web) stays
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

