"""Tiled YOLO on a large image: the ``wsi-ctc`` pipeline against SAHI's sliced prediction (not a test).

    .venv/bin/python benchmarks/wsi_vs_sahi.py [--size 20000] [--workdir var/bench] [--torch-threads 1]

One generated slide of ``--size`` × ``--size`` px at 0.5 µm/px (the model's resolution, so level 0 is what
both feed the model), smear over 60 % of it, with its truth. Both runs use the shipped weights
``wsi-ctc-yolo11n`` and the manifest's operating confidence, and each runs in its own process (its own peak
RSS); weights are loaded before the clock starts.

(a) SAHI (``sahi.predict.get_sliced_prediction`` with its ultralytics wrapper): the level-0 region decoded into
    memory first (openslide, in strips; timed, counted in SAHI's wall time), then slices of the pipeline's tile side and
    overlap (as ratios), ``batch_size`` the pipeline's CPU batch, SAHI's default merge (GREEDYNMM, IOS 0.5,
    class-aware), no full-image pass (``perform_standard_pred=False``: a 20,000-px image shrunk to one model
    input has no cells left). Every slice of the region is predicted: SAHI has no tissue mask.
    Equal footing: the model was trained on z-scored inputs (manifest ``normalisation``), which ultralytics'
    predictor does not apply; a forward pre-hook on the ultralytics model applies the same z-score after its
    /255, as ``pipelines/wsi/detector.py`` does. Per-slice NMS at the pipeline's IoU (0.5, ultralytics' default
    is 0.7).
(b) the pipeline (``wsi-ctc`` as the daemon runs it, default options), end to end.

Scored against the truth (``benchmarks/truth_scoring.py``): recall and precision per class at IoU 0.5, and
duplicate detections of one object, all and for objects crossing an inner tile edge of that run's own
tiling. CTMs: the pipeline's include groups of close CTCs (its own step); SAHI's are the model's CTM boxes,
and the line "SAHI + grouping" gives SAHI's boxes with the pipeline's grouping applied afterwards.
Goal (issue 14): the pipeline ≥ 3× faster at equal or better recall, no seam duplicates where SAHI has some.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("YOLO_OFFLINE", "1")

from wsi_throughput import (  # noqa: E402
    parse_with_stages,
    peak_rss_mb,
    processing,
    run_stage,
    stage_generate,
)

TISSUE_FRACTION = 0.6


def cpu_seconds() -> float:
    """CPU time of this process so far, all its threads: less swayed by other processes than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _operating_point() -> tuple[Any, float]:
    from pipelines.models.registry import resolve
    from pipelines.wsi.pipeline import DEFAULT_MODEL, WsiCtcOptions

    entry = resolve(DEFAULT_MODEL)
    return entry, float(WsiCtcOptions().confidence or entry.info.get("confidence", 0.25))


def _edges(starts: list[float], tile: int, extent: int) -> list[float]:
    from truth_scoring import inner_edges

    return [float(e) for e in inner_edges(starts, tile, extent)]


def decode_level0(slide: Path, strip: int = 2048) -> Any:
    """The whole of level 0 as one RGB array, read with openslide in strips (no RGBA copy of all of it)."""
    import numpy as np
    import openslide

    with openslide.OpenSlide(str(slide)) as handle:
        width, height = handle.dimensions
        region = np.empty((height, width, 3), np.uint8)
        for y in range(0, height, strip):
            rows = min(strip, height - y)
            region[y : y + rows] = np.asarray(handle.read_region((0, y), 0, (width, rows)))[..., :3]
    return region


def stage_sahi(slide: Path) -> dict[str, Any]:
    """Decode level 0, then SAHI's sliced prediction over all of it."""
    import numpy as np
    import torch
    from sahi import AutoDetectionModel
    from sahi.predict import get_sliced_prediction
    from sahi.slicing import get_slice_bboxes

    from pipelines.wsi.detector import Normalisation
    from pipelines.wsi.pipeline import WsiCtcOptions, tile_for

    entry, confidence = _operating_point()
    _, tile, overlap = processing()
    batch = tile_for(WsiCtcOptions(), "cpu")[1]
    wrapper = AutoDetectionModel.from_pretrained(
        model_type="ultralytics", model_path=str(entry.path), confidence_threshold=confidence, device="cpu",
        image_size=tile,
    )
    yolo = wrapper.model
    yolo.overrides["iou"] = WsiCtcOptions().nms_iou
    norm = Normalisation.from_info(entry.info)
    if norm is not None:
        mean = torch.tensor(norm.mean).view(1, 3, 1, 1)
        std = torch.tensor(norm.std).view(1, 3, 1, 1)

        def zscore(_module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            x = args[0]
            return ((x - mean.to(x)) / std.to(x), *args[1:])

        yolo.model.register_forward_pre_hook(zscore)  # copied with the model into ultralytics' predictor
    ratio = overlap / tile
    warm = np.zeros((tile, tile, 3), np.uint8)
    get_sliced_prediction(warm, wrapper, slice_height=tile, slice_width=tile, perform_standard_pred=False,
                          verbose=0)

    t0, c0 = time.monotonic(), cpu_seconds()
    region = decode_level0(slide)
    decoded = time.monotonic() - t0
    result = get_sliced_prediction(
        region, wrapper, slice_height=tile, slice_width=tile, overlap_height_ratio=ratio,
        overlap_width_ratio=ratio, perform_standard_pred=False, batch_size=batch, verbose=0,
    )
    elapsed, cpu = time.monotonic() - t0, cpu_seconds() - c0
    dets = [[float(v) for v in (p.bbox.minx, p.bbox.miny, p.bbox.maxx, p.bbox.maxy, p.score.value, p.category.id)]
            for p in result.object_prediction_list]
    height, width = region.shape[:2]
    slices = get_slice_bboxes(height, width, tile, tile, overlap_height_ratio=ratio, overlap_width_ratio=ratio)
    return {
        "seconds": elapsed, "cpu_s": cpu, "decode_s": decoded, "slices": len(slices), "detections": dets,
        "region_mb": region.nbytes / 1e6, "confidence": confidence, "tile": tile, "overlap": overlap,
        "x_edges": _edges(sorted({b[0] for b in slices}), tile, width),
        "y_edges": _edges(sorted({b[1] for b in slices}), tile, height),
    }


def stage_pipeline(slide: Path) -> dict[str, Any]:
    from pipelines.base import PipelineInput
    from pipelines.wsi.labels import CLASS_NAMES
    from pipelines.wsi.pipeline import WsiCtcPipeline
    from pipelines.wsi.tiling import plan_tiles

    out = slide.parent / f"out-{slide.stem}"
    out.mkdir(exist_ok=True)
    pipeline = WsiCtcPipeline()
    setup = pipeline.model()  # weights loaded before the clock starts, as in a warm worker
    t0, c0 = time.monotonic(), cpu_seconds()
    result = pipeline.run(PipelineInput("slide", str(slide), (slide,)), out)
    elapsed, cpu = time.monotonic() - t0, cpu_seconds() - c0
    summary = result.summary
    p = summary["processing"]
    width, height = summary["slide"]["width_px"], summary["slide"]["height_px"]
    full = plan_tiles(width, height, (1.0, 1.0), p["tile_px"], p["overlap_px"])  # level 0 = processing px here
    dets = [[*d["l0_box"], d["confidence"], CLASS_NAMES.index(d["class"])] for d in summary["detections"]]
    return {
        "seconds": elapsed, "cpu_s": cpu, "tiles": p["tiles_processed"], "grid_tiles": p["tiles_total"],
        "detections": dets,
        "confidence": setup.confidence, "tile": p["tile_px"], "overlap": p["overlap_px"],
        "x_edges": _edges(sorted({t.l0_x for t in full.tiles}), p["tile_px"], width),
        "y_edges": _edges(sorted({t.l0_y for t in full.tiles}), p["tile_px"], height),
    }


STAGES = {"sahi": stage_sahi, "pipeline": stage_pipeline}


def with_grouping(dets: list[list[float]], mpp_um: float) -> list[list[float]]:
    """Detections with CTMs from groups of close CTCs, as the pipeline forms them after its merge."""
    from pipelines.wsi.merge import Detection, combine_clusters
    from pipelines.wsi.pipeline import WsiCtcOptions

    found = [Detection(int(c), float(s), x0, y0, x1, y1) for x0, y0, x1, y1, s, c in dets]
    grouped = combine_clusters(found, WsiCtcOptions().ctm_grouping_distance_um, (mpp_um, mpp_um))
    return [[d.l0_x0, d.l0_y0, d.l0_x1, d.l0_y1, d.confidence, d.cls] for d in grouped]


def _scores(run: dict[str, Any], dets: list[list[float]], truth: Any) -> dict[str, Any]:
    import numpy as np
    from truth_scoring import score

    from pipelines.wsi.labels import CLASS_NAMES

    return score(np.array(dets, float).reshape(-1, 6), truth, np.array(run["x_edges"]), np.array(run["y_edges"]),
                 CLASS_NAMES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=20000, help="side of the generated region in px")
    parser.add_argument("--workdir", type=Path, default=Path("var/bench"),
                        help="generated slides are kept here and reused (default var/bench)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parse_with_stages(parser)
    if args.stage:
        raw = json.loads(args.stage_args)
        result = (stage_generate(Path(raw[0]), int(raw[1]), float(raw[2])) if args.stage == "generate"
                  else STAGES[args.stage](Path(raw[0])))
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    import numpy as np

    from pipelines.synthetic.slides import SlideTruth, truth_path

    args.workdir.mkdir(parents=True, exist_ok=True)
    slide = args.workdir / f"sahi-{args.size}.tiff"
    here = Path(__file__)
    if not slide.exists() or not truth_path(slide).exists():
        gen = run_stage("generate", slide, args.size, TISSUE_FRACTION, script=here)
        print(f"generated {slide.name}: {args.size}x{args.size} px in {gen['seconds']:.0f} s, truth {gen['counts']}")
    truth_doc = SlideTruth.load(truth_path(slide))
    truth = np.array(truth_doc.boxes, float).reshape(-1, 5)
    load = os.getloadavg()
    sahi = run_stage("sahi", slide, script=here)
    pipe = run_stage("pipeline", slide, script=here)
    load_after = os.getloadavg()
    runs_file = args.workdir / f"sahi-{args.size}-t{args.torch_threads}.runs.json"
    runs_file.write_text(json.dumps({"sahi": sahi, "pipeline": pipe}))
    rows = [("SAHI", sahi, sahi["detections"]), ("SAHI + grouping", None, with_grouping(sahi["detections"], 0.5)),
            ("pipeline", pipe, pipe["detections"])]
    print()
    print(f"region {args.size}x{args.size} px at 0.5 µm/px, smear {TISSUE_FRACTION:.0%}; truth {truth_doc.counts()}; "
          f"{os.cpu_count()} CPUs, load {load[0]:.2f} before, {load_after[0]:.2f} after; "
          f"OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"tiles {pipe['tile']} px, overlap {pipe['overlap']} px (SAHI: overlap ratio "
          f"{sahi['overlap'] / sahi['tile']:.3f}), confidence {pipe['confidence']:g} (SAHI {sahi['confidence']:g})")
    print(f"SAHI: {sahi['slices']} slices, level 0 decoded in {sahi['decode_s']:.1f} s ({sahi['region_mb']:.0f} MB); "
          f"pipeline: {pipe['tiles']} of {pipe['grid_tiles']} tiles over the smear")
    print()
    print(f"{'':18} {'wall s':>7} {'CPU s':>7} {'peak RSS':>9}  {'CTC recall':>10} {'prec':>5} {'dup':>4} "
          f"{'seam dup':>8}  {'CTM recall':>10} {'prec':>5} {'dup':>4}")
    figures: dict[str, Any] = {"size": args.size, "truth": truth_doc.counts(), "cpus": os.cpu_count(),
                               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                               "load": [load[0], load_after[0]], "runs": {}}
    for label, run, dets in rows:
        s = _scores(run or sahi, dets, truth)
        ctc, ctm = s["CTC"], s["CTM"]
        timing = (f"{run['seconds']:7.1f} {run['cpu_s']:7.1f} {run['peak_rss_mb']:6.0f} MB" if run
                  else f"{'':7} {'':7} {'':9}")
        print(f"{label:18} {timing}  {ctc.recall:10.3f} {ctc.precision:5.3f} {ctc.duplicates:4d} "
              f"{ctc.seam_duplicates + ctm.seam_duplicates:8d}  {ctm.recall:10.3f} {ctm.precision:5.3f} "
              f"{ctm.duplicates:4d}")
        figures["runs"][label] = {
            **({k: run[k] for k in ("seconds", "cpu_s", "peak_rss_mb")} if run else {}),
            **{name: {**vars(c), "recall": c.recall, "precision": c.precision} for name, c in s.items()},
        }
    print()
    print(f"ratio SAHI / pipeline wall time: {sahi['seconds'] / pipe['seconds']:.2f}x "
          f"(SAHI without the decode: {(sahi['seconds'] - sahi['decode_s']) / pipe['seconds']:.2f}x); "
          f"CPU time: {sahi['cpu_s'] / pipe['cpu_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
