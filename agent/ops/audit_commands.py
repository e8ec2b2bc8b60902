"""``oncoagent audit``: the audit trails. ``list``: the DICOM port's (every association, accepted or refused);
``export``: that one and the web worklist's (every view, decision and sign-in) as JSON lines, merged by time."""

from __future__ import annotations

import argparse
import calendar
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from agent.config import LoadedSettings
from agent.review_records import WebAuditEvent
from agent.store_commands import _iso, _opened_store
from dicom_node.records import AssociationRecord

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FORMATS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")


def since(text: str, now: float | None = None) -> float:
    """``--since``: how long ago (``90s``, ``30m``, ``12h``, ``7d``) or a UTC date/time (``2026-12-03``,
    ``2026-12-03T14:00[:00]``, a trailing ``Z`` allowed), as epoch seconds."""
    if match := _AGO.match(text.strip()):
        return (time.time() if now is None else now) - float(match.group(1)) * _UNIT_S[match.group(2)]
    value = text.strip().removesuffix("Z")
    for fmt in _FORMATS:
        try:
            return float(calendar.timegm(time.strptime(value, fmt)))
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"{text!r}: give a duration (30m, 12h, 7d) or a UTC date/time "
                                     "(2026-12-03 or 2026-12-03T14:00)")


def add_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit trails: the DICOM port's associations, the web worklist's "
                                         "views and decisions")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    al = audit_sub.add_parser("list", help="list recent associations, newest first")
    al.add_argument("--since", type=since, help="only those started since: 30m, 12h, 7d or a UTC date/time")
    al.add_argument("--limit", type=int, default=50)
    al.add_argument("--json", action="store_true", help="machine-readable output")
    al.set_defaults(handler=cmd_audit_list)
    ae = audit_sub.add_parser("export", help="both trails as JSON lines, oldest first, each with its \"trail\": "
                                             "dicom or web")
    ae.add_argument("--since", type=since, required=True, metavar="WHEN", help="from: 30m, 12h, 7d or a UTC date/time")
    ae.add_argument("--out", type=Path, metavar="FILE", help="write to this file instead of standard output")
    ae.set_defaults(handler=cmd_audit_export)


def cmd_audit_list(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    with _opened_store(loaded.settings) as store:
        records = store.audit_list(args.since, max(1, args.limit))
    if args.json:
        print(json.dumps([as_json(r) for r in records], indent=2))
        return 0
    if not records:
        print("no associations recorded" + (" in that time" if args.since is not None else ""))
        return 0
    print(f"{'started (UTC)':<20} {'seconds':>8} {'outcome':<26} {'calling AE':<18} {'called AE':<18} "
          f"{'address':<16} {'stored':>6}")
    for r in records:
        outcome = "accepted" if r.refusal is None else f"refused: {r.refusal.value}"
        print(f"{_iso(r.started_at):<20} {r.ended_at - r.started_at:>8.1f} {outcome:<26} {r.calling_ae:<18} "
              f"{r.called_ae:<18} {r.address:<16} {r.instances_stored:>6}")
    return 0


def as_json(record: AssociationRecord) -> dict[str, Any]:
    return {
        "started_at": _iso(record.started_at),
        "ended_at": _iso(record.ended_at),
        "outcome": "accepted" if record.refusal is None else "refused",
        "reason": None if record.refusal is None else record.refusal.value,
        "detail": record.detail or None,
        "calling_ae": record.calling_ae,
        "called_ae": record.called_ae,
        "address": record.address,
        "instances_stored": record.instances_stored,
    }


def cmd_audit_export(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    with _opened_store(loaded.settings) as store:
        dicom = store.audit_since(args.since)
        web = store.web_audit_since(args.since)
    merged = sorted([(r.started_at, 0, {"trail": "dicom", "at": _iso(r.started_at), **as_json(r)}) for r in dicom]
                    + [(e.at, 1, web_as_json(e)) for e in web], key=lambda entry: (entry[0], entry[1]))
    lines = "".join(json.dumps(entry) + "\n" for _, _, entry in merged)
    if args.out is None:
        sys.stdout.write(lines)
        return 0
    args.out.write_text(lines, encoding="utf-8")
    print(f"{len(merged)} audit events ({len(dicom)} DICOM, {len(web)} web) written to {args.out}", file=sys.stderr)
    return 0


def web_as_json(event: WebAuditEvent) -> dict[str, Any]:
    return {
        "trail": "web",
        "at": _iso(event.at),
        "user": event.user_name,
        "address": event.address,
        "action": event.action,
        "job_id": event.job_id,
        "detail": event.detail,
    }
