"""``oncoagent export training-data``: what reviewers signed off, as training data the trainers read (a YOLO data
set of slide tiles, MR case folders; see :mod:`agent.training_export`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent.config import LoadedSettings
from agent.errors import EXIT_CONFIG
from agent.ops.audit_commands import since
from agent.store_commands import _opened_store
from agent.training_export import EXPORTABLE


def add_parser(sub: Any) -> None:
    export = sub.add_parser("export", help="export what reviewers signed off: training data for the models")
    export_sub = export.add_subparsers(dest="export_command", required=True, metavar="WHAT")
    td = export_sub.add_parser(
        "training-data", help="signed-off reviews as a YOLO data set (slides) and case folders (MRI)",
        description="Writes OUT/yolo (oncoagent train detector --data OUT/yolo) and OUT/mri-cases (oncoagent "
                    "train segmenter|classifier --data OUT/mri-cases), each with a manifest.json.")
    td.add_argument("--since", type=since, required=True, metavar="WHEN",
                    help="reviews signed off since: 30m, 12h, 7d or a UTC date/time")
    td.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write (a new one)")
    td.add_argument("--pipelines", nargs="+", choices=EXPORTABLE, default=list(EXPORTABLE),
                    help="only these pipelines' cases (default: all)")
    td.add_argument("--tile", type=int, metavar="PX", help="tile side in px (default: the model's input size)")
    td.set_defaults(handler=cmd_export_training_data)


def cmd_export_training_data(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from agent.training_export import export_training_data

    with _opened_store(loaded.settings) as store:
        try:
            outcome = export_training_data(store, args.out, args.since, args.pipelines, args.tile)
        except FileExistsError as exc:
            print(f"oncoagent export: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if outcome.data_yaml is not None:
        print(f"{outcome.slide_reviews} slide review(s): {outcome.data_yaml}")
    if outcome.mr_cases is not None:
        print(f"{outcome.mr_reviews} MR review(s): {outcome.mr_cases}")
    if outcome.data_yaml is None and outcome.mr_cases is None:
        print("no signed-off reviews in that time")
    for skip in outcome.skipped:
        print(f"skipped job {skip['job_id']} (review version {skip['review_version']}): {skip['reason']}",
              file=sys.stderr)
    return 0
