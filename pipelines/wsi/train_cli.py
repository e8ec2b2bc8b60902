"""``oncoagent train detector``: train the CTC/CTM detector on a YOLO data set or on generated slides."""

from __future__ import annotations

import argparse
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

from pipelines.trainers import TrainSettings

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "wsi-ctc-yolo11n"


def add_parsers(subparsers: Any) -> None:
    from pipelines.wsi.dataset import CutSettings
    from pipelines.wsi.training import Hyperparameters

    hp = Hyperparameters()
    cut = CutSettings()
    p: argparse.ArgumentParser = subparsers.add_parser(
        "detector",
        help="train the YOLO11 CTC/CTM detector of the wsi-ctc pipeline",
        description=(
            "DIR is a YOLO data set (data.yaml, or images/ + labels/), a folder of slides annotated in QuPath "
            "(each slide with its exported GeoJSON beside it, same stem, .geojson; objects classified CTC or "
            "CTM), a folder of generated slides (*.tiff with .truth.json), or with --generate N an empty folder "
            "to fill with N generated slides. "
            "Defaults follow the published method (SGD, lr0 0.01 to 0.0001 on a cosine schedule, batch 16, "
            "100 epochs, rotation/flip/scale augmentation, z-score normalisation, 70/15/15 split)."
        ),
    )
    p.add_argument("--data", type=Path, required=True, metavar="DIR")
    p.add_argument("--generate", type=int, default=0, metavar="N", help="first generate N slides into DIR")
    p.add_argument("--seed", type=int, default=hp.seed, help="generation, split and training seed")
    p.add_argument("--out", type=Path, help="where weights, curves, metrics and the card go (default DIR/model)")
    p.add_argument("--runs-dir", type=Path, help="ultralytics' working folder (default OUT/runs)")
    p.add_argument("--weights-name", default="weights.pt", help="file name of the weights in OUT")
    p.add_argument("--register", metavar="NAME", help="record the weights in the registry manifest beside them")
    p.add_argument("--evaluate-only", action="store_true",
                   help="do not train: score OUT/WEIGHTS-NAME on the test split again and rewrite the reports "
                        "(epochs and time from --runs-dir)")
    p.add_argument("--version", default="1.0.0", help="version recorded with --register")
    p.add_argument("--mpp", type=float, default=cut.mpp_um, help="processing resolution of cut tiles (µm/px)")
    p.add_argument("--tile", type=int, default=cut.tile_px, help="side of cut tiles in px")
    split = p.add_argument_group("split")
    split.add_argument("--split", type=float, nargs=3, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST"))
    hyper = p.add_argument_group("hyperparameters")
    for f in fields(Hyperparameters):
        if f.name in ("seed",):
            continue
        default = getattr(hp, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            hyper.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif f.name == "time_hours":
            hyper.add_argument(flag, type=float, default=None, help="wall-time budget; epochs are fitted to it")
        else:
            hyper.add_argument(flag, type=type(default), default=default)
    p.set_defaults(trainer=cmd_train_detector)


def cmd_train_detector(args: argparse.Namespace, settings: TrainSettings) -> int:
    from pipelines.errors import InputError
    from pipelines.models.registry import record
    from pipelines.wsi.dataset import (
        CutSettings,
        SplitShares,
        build_from_slides,
        generate_slides,
        generated_slides_in,
        prepare_yolo_dataset,
        training_specs,
    )
    from pipelines.wsi.qupath_import import annotated_slides, read_slide_annotations
    from pipelines.wsi.training import (
        Hyperparameters,
        evaluate_and_report,
        model_info,
        run_history,
        train_detector,
    )

    data: Path = args.data
    shares = SplitShares(*args.split)
    if args.generate:
        print(f"generating {args.generate} slides in {data} ...", flush=True)
        generate_slides(data, training_specs(args.generate, args.seed))
    if not data.is_dir():
        raise InputError(f"{data} is not a folder")
    out: Path = args.out or data / "model"
    cut = CutSettings(mpp_um=args.mpp, tile_px=args.tile, seed=args.seed)
    slides = generated_slides_in(data)
    annotated = [] if slides else annotated_slides(data)
    if (slides or annotated) and args.evaluate_only and (data / "yolo" / "data.yaml").exists():
        data_yaml = data / "yolo" / "data.yaml"  # score on the tiles the model was trained and tested with
    elif slides:
        print(f"cutting {cut.tile_px}-px tiles at {cut.mpp_um} µm/px from {len(slides)} slides ...", flush=True)
        data_yaml = build_from_slides(slides, data / "yolo", cut, shares)
    elif annotated:
        print(f"cutting {cut.tile_px}-px tiles at {cut.mpp_um} µm/px from {len(annotated)} slides annotated in "
              "QuPath ...", flush=True)
        data_yaml = build_from_slides(annotated, data / "yolo", cut, shares, truth_of=read_slide_annotations,
                                      mode_of=lambda _: "slide", source="QuPath GeoJSON annotations")
    else:
        data_yaml = prepare_yolo_dataset(data, shares, args.seed)
    hp = Hyperparameters(
        **{f.name: getattr(args, f.name) for f in fields(Hyperparameters)},
    )
    if args.evaluate_only:
        epochs, seconds = run_history(args.runs_dir or out / "runs")
        result = evaluate_and_report(out / args.weights_name, data_yaml, out, hp, mpp_um=cut.mpp_um,
                                     epochs_run=epochs, seconds=seconds)
    else:
        print(f"training {hp.model_yaml} on {data_yaml} ...", flush=True)
        result = train_detector(data_yaml, out, hp, mpp_um=cut.mpp_um, runs_dir=args.runs_dir,
                                weights_name=args.weights_name)
    ev, raw = result.evaluation, result.model_only
    print(f"test split: mAP50 {ev.map50:.4f}  mAP50-95 {ev.map50_95:.4f}  ({ev.images} tiles, {ev.objects}); "
          f"model classes alone: mAP50 {raw.map50:.4f}  mAP50-95 {raw.map50_95:.4f}")
    print(f"weights {result.weights}; card, curves and metrics in {out}")
    if args.register:
        info = model_info(result, data_yaml, hp, mpp_um=cut.mpp_um, max_object_um=_max_object_um(data_yaml, cut))
        entry = record(args.register, args.version, result.weights, info)
        print(f"registered {entry.name} {entry.version} sha256 {entry.sha256[:12]}…")
    return 0


def _max_object_um(data_yaml: Path, cut: Any) -> float:
    """The largest labelled object in the data set, in µm (to size the tile overlap)."""
    import numpy as np

    from pipelines.wsi.dataset import SPLITS, read_label_boxes, split_images

    largest_px = 0.0
    for split in SPLITS:
        for image in split_images(data_yaml, split):
            boxes = read_label_boxes(image, cut.tile_px, cut.tile_px)
            if len(boxes):
                largest_px = max(largest_px, float(np.max(boxes[:, 3:5] - boxes[:, 1:3])))
    return round(largest_px * float(cut.mpp_um), 1)

