"""``oncoagent evaluate detector|segmenter|classifier|mri``: measure a model on the site's own labelled cases.

The computing is :mod:`pipelines.evaluation`; this writes what it found into ``--out`` as ``report.json`` and
``report.html`` (figures beside them), and with ``--accept --by NAME`` records the site's acceptance of each
model evaluated (:mod:`pipelines.models.site_validation`, under the data directory), naming the report, the
case count and the headline figures. Without ``--accept`` nothing is recorded. The models run with the
pipeline options in force (``pipelines.wsi-ctc`` / ``pipelines.mri-tumour``), ``--model`` and ``--manifest``
on top, so what is measured is what this site would run.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.config import LoadedSettings
from agent.errors import EXIT_CONFIG

log = logging.getLogger(__name__)

KINDS = ("detector", "segmenter", "classifier", "mri")


def add_parser(sub: Any) -> None:
    from pipelines.evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED

    p = sub.add_parser(
        "evaluate", help="measure a model on your own labelled cases (site validation); --accept records it",
        description=(
            "detector: DIR is a YOLO data set (data.yaml; its test split, or --split) or a folder of slides each "
            "with a QuPath GeoJSON export beside it (same stem, .geojson; objects classified CTC or CTM). "
            "segmenter, classifier, mri: DIR is a folder of NIfTI cases (<case>/image.nii.gz, <case>/mask.nii.gz "
            "with one label per lesion, labels.csv: case,lesion,label). Every headline figure comes with a "
            "bootstrap 95 % confidence interval over the cases."
        ),
    )
    p.add_argument("kind", choices=KINDS, metavar="MODEL", help=" | ".join(KINDS))
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="the labelled cases")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where report.html and report.json go")
    p.add_argument("--model", action="append", metavar="NAME",
                   help="registered model to evaluate (default: the pipeline's); mri: give it twice, "
                        "segmenter then classifier")
    p.add_argument("--manifest", type=Path, metavar="PATH", help="manifest.json of retrained models")
    p.add_argument("--split", default="test", help="YOLO data set split to score (default test)")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap seed")
    p.add_argument("--accept", action="store_true",
                   help="record that this site accepts the evaluated model(s) on these figures")
    p.add_argument("--by", metavar="NAME", help="who accepts (required with --accept)")
    p.set_defaults(handler=cmd_evaluate)


def _options(args: argparse.Namespace, loaded: LoadedSettings) -> Any:
    """The pipeline options in force with --model and --manifest on top."""
    from pipelines.mri.pipeline import MriTumourOptions
    from pipelines.wsi.pipeline import WsiCtcOptions

    models: list[str] = args.model or []
    extra: dict[str, Any] = {"manifest": args.manifest} if args.manifest else {}
    if args.kind == "detector":
        if len(models) > 1:
            raise SystemExit("oncoagent evaluate detector: give --model once")
        extra.update({"model": models[0]} if models else {})
        return WsiCtcOptions(**{**loaded.settings.pipelines.get("wsi-ctc", {}), **extra})
    if args.kind == "mri":
        if len(models) not in (0, 2):
            raise SystemExit("oncoagent evaluate mri: give --model twice (segmenter, classifier) or not at all")
        extra.update({"segmenter_model": models[0], "classifier_model": models[1]} if models else {})
    elif models:
        if len(models) > 1:
            raise SystemExit(f"oncoagent evaluate {args.kind}: give --model once")
        extra[f"{args.kind}_model"] = models[0]
    return MriTumourOptions(**{**loaded.settings.pipelines.get("mri-tumour", {}), **extra})


def cmd_evaluate(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from pipelines.evaluation.bootstrap import Bootstrap
    from reports.evaluation_report import render_evaluation

    if args.accept and not (args.by or "").strip():
        print("oncoagent evaluate: --accept needs --by NAME (who accepts)", file=sys.stderr)
        return EXIT_CONFIG
    if args.resamples < 0:
        print("oncoagent evaluate: --resamples must be 0 or more", file=sys.stderr)
        return EXIT_CONFIG
    try:
        options = _options(args, loaded)
    except ValueError as exc:  # pydantic's ValidationError: the options in force with the flags on top
        print(f"oncoagent evaluate: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data: Path = args.data.resolve()

    def boot_of(n: int) -> Bootstrap:
        return Bootstrap(n, args.resamples, args.seed)

    if args.kind == "detector":
        from pipelines.evaluation.detection import evaluate_detector

        outcome = evaluate_detector(data, args.split, options, boot_of, out)
    else:
        from pipelines.evaluation.mri import evaluate_mri
        from pipelines.mri.cases import read_case_folder

        outcome = evaluate_mri(args.kind, data, read_case_folder(data), options, boot_of, out)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    command = "oncoagent " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    document = {**outcome.as_dict(), "created": created, "command": command}
    (out / "report.json").write_text(json.dumps(document, indent=1), encoding="utf-8")
    report = out / "report.html"
    report.write_text(render_evaluation(document, created, command), encoding="utf-8")
    for name, estimate in outcome.headline.items():
        print(f"{name:36s} {estimate.text()}")
    print(f"{outcome.cases} {outcome.unit}; report {report} and {out / 'report.json'}")
    if args.accept:
        _accept(outcome, report.resolve(), args.by.strip(), created, loaded.settings.data_dir)
    return 0


def _accept(outcome: Any, report: Path, by: str, when: str, data_dir: Path) -> None:
    from pipelines.models.site_validation import SiteValidation, write_record

    metrics = {k: v for k, v in outcome.headline_values().items() if v is not None}
    for model in outcome.models:
        record = SiteValidation(model=model.name, version=model.version, sha256=model.sha256, accepted_by=by,
                                accepted_at=when, report=str(report), cases=outcome.cases, metrics=metrics)
        path = write_record(data_dir, record)
        log.info("site validation of %s %s recorded", model.name, model.version)
        print(f"accepted {model.name} {model.version} (sha256 {model.sha256[:12]}…) by {by}: {path}")
