"""Throughput of whole-slide CTC detection, against naive peers measured in the same run (not a test).

    .venv/bin/python benchmarks/wsi_throughput.py [--size 20480] [--big 100000] [--workdir var/bench]

On one generated slide (``--size`` px square, 0.5 µm/px):

(a) naive: openslide ``read_region`` per tile at level 0, resized to the processing resolution, ultralytics
    ``predict`` one tile at a time, every tile of the grid (no tissue mask); timed on a sample of tiles
    (``--naive-seconds``) and extrapolated to the whole grid at the measured rate. Its ratio to (b) mostly
    measures the share of the slide without tissue: (a) runs every grid tile, (b) only those over tissue;
(b) the pipeline (``wsi-ctc`` as the daemon runs it), end to end;
(c) a plain loop over the same tissue tiles (the same tissue mask, :mod:`pipelines.wsi.tissue`): read one
    tile (the pipeline's reader, no threads) → detect it (the pipeline's detector, a batch of one) → collect its
    level-0 boxes, no read-ahead, no batching, no merge; timed on a sample (``--loop-seconds``) and
    extrapolated to all tissue tiles. Its ratio to (b) is the pipeline's own engineering.

and the reader alone (best level, threads reading ahead, tissue tiles) against a plain openslide loop over the
same grid (level 0, then resized). Then, with ``--big``, a slide of ``--big`` × ``--big`` px is generated tile by
tile and run through the pipeline, for peak memory. Every stage runs in its own process, so each peak RSS
is its own. Prints tiles/s, tissue megapixels/s, peak RSS and the ratios. Every stage imports torch before
ultralytics (which sets OMP_NUM_THREADS=1 when unset), so all run with the same torch threads;
``--torch-threads`` sets them for all.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("YOLO_OFFLINE", "1")

MPP_UM = 0.5
SEED = 9100


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ stages


def stage_generate(slide: Path, size: int, tissue_fraction: float) -> dict[str, Any]:
    from pipelines.synthetic.slides import SlideSpec, write_slide

    t0 = time.monotonic()
    scale = (size / 20480) ** 2
    truth = write_slide(
        slide,
        SlideSpec(width=size, height=size, mpp=MPP_UM, ctc=int(220 * scale), ctm=int(40 * scale),
                  tissue_fraction=tissue_fraction, seed=SEED),
    )
    return {"seconds": time.monotonic() - t0, "counts": truth.counts(), "bytes": slide.stat().st_size}


def processing() -> tuple[float, int, int]:
    """The pipeline's processing µm/px, tile and overlap with its default options and the shipped model."""
    from pipelines.models.registry import resolve
    from pipelines.wsi.detector import pick_device
    from pipelines.wsi.pipeline import DEFAULT_MODEL, WsiCtcOptions, overlap_for, tile_for

    info = resolve(DEFAULT_MODEL).info
    opts = WsiCtcOptions()
    mpp = float(info["mpp_um"])
    tile, _ = tile_for(opts, pick_device(opts.device))
    return mpp, tile, overlap_for(opts, mpp, info.get("max_object_um"), tile)


def _grid(slide: Path) -> tuple[Any, Any, Any]:
    from pipelines.wsi.reader import SlideReader
    from pipelines.wsi.tiling import plan_tiles
    from pipelines.wsi.tissue import tissue_mask

    mpp, tile, overlap = processing()
    reader = SlideReader(slide, fallback_mpp_um=None)
    full = plan_tiles(reader.width_l0, reader.height_l0, reader.l0_per_px(mpp), tile, overlap)
    overview = reader.read_overview(8.0)
    mask = tissue_mask(overview, 8.0, reader.l0_per_px(8.0))
    tissue = plan_tiles(reader.width_l0, reader.height_l0, reader.l0_per_px(mpp), tile, overlap,
                        mask.widened(overlap * mpp))
    return reader, full, (tissue, mask)


def stage_plain_reads(slide: Path, seconds: float) -> dict[str, Any]:
    """A plain openslide loop: every grid tile read at level 0 and resized with PIL."""
    import numpy as np
    import openslide
    from PIL import Image

    _, full, _ = _grid(slide)
    t = full.tile_px
    tiles = list(full.tiles)
    random.Random(0).shuffle(tiles)
    handle = openslide.OpenSlide(str(slide))
    span = (round(t * full.l0_per_px_x), round(t * full.l0_per_px_y))
    t0 = time.monotonic()
    done = 0
    for tile in tiles:
        region = handle.read_region((tile.l0_x, tile.l0_y), 0, span)
        np.asarray(region.convert("RGB").resize((t, t), Image.Resampling.BOX))
        done += 1
        if time.monotonic() - t0 > seconds:
            break
    elapsed = time.monotonic() - t0
    return {"tiles": done, "seconds": elapsed, "tiles_per_s": done / elapsed, "grid_tiles": full.total,
            "tile_megapixels": t * t / 1e6}


def stage_reader(slide: Path, seconds: float) -> dict[str, Any]:
    """The pipeline's reader: best level, threads reading ahead, tissue tiles only."""
    from pipelines.wsi.prefetch import read_ahead

    reader, full, (tissue, mask) = _grid(slide)
    t = tissue.tile_px
    mpp = processing()[0]
    choice = reader.level_for(mpp)
    t0 = time.monotonic()
    done = 0
    for _ in read_ahead(tissue.tiles, lambda tile: reader.read(tile.l0_x, tile.l0_y, t, t, mpp, choice),
                        workers=2, depth=16):
        done += 1
        if time.monotonic() - t0 > seconds:
            break
    elapsed = time.monotonic() - t0
    return {"tiles": done, "seconds": elapsed, "tiles_per_s": done / elapsed, "tissue_tiles": len(tissue.tiles),
            "grid_tiles": full.total, "tissue_mm2": mask.area_mm2()}


def stage_naive(slide: Path, seconds: float) -> dict[str, Any]:
    """read_region per tile at level 0, resize, ultralytics predict one tile at a time, no tissue mask."""
    import openslide
    import torch  # noqa: F401  before ultralytics, which sets OMP_NUM_THREADS=1 when unset: the pipeline's threads
    from PIL import Image
    from ultralytics.models.yolo.model import YOLO

    from pipelines.models.registry import resolve

    entry = resolve("wsi-ctc-yolo11n")
    model = YOLO(str(entry.path))
    _, full, _ = _grid(slide)
    t = full.tile_px
    tiles = list(full.tiles)
    random.Random(0).shuffle(tiles)
    handle = openslide.OpenSlide(str(slide))
    model.predict(Image.new("RGB", (t, t)), imgsz=t, verbose=False)  # load and warm up outside the timing
    span = (round(t * full.l0_per_px_x), round(t * full.l0_per_px_y))
    t0 = time.monotonic()
    done = 0
    for tile in tiles:
        region = handle.read_region((tile.l0_x, tile.l0_y), 0, span)
        image = region.convert("RGB").resize((t, t), Image.Resampling.BOX)
        model.predict(image, imgsz=t, conf=0.25, verbose=False)
        done += 1
        if time.monotonic() - t0 > seconds:
            break
    elapsed = time.monotonic() - t0
    rate = done / elapsed
    return {"tiles": done, "seconds": elapsed, "tiles_per_s": rate, "grid_tiles": full.total,
            "estimated_total_s": full.total / rate}


def stage_tissue_loop(slide: Path, seconds: float) -> dict[str, Any]:
    """(c): the tissue tiles one at a time, read → detect → collect, with the pipeline's reader and detector."""
    from pipelines.wsi.merge import Detection, to_level0
    from pipelines.wsi.pipeline import SEAM_MARGIN_PX, WsiCtcPipeline

    pipeline = WsiCtcPipeline()
    setup = pipeline.model()
    reader, full, (tissue, _) = _grid(slide)
    t = tissue.tile_px
    choice = reader.level_for(setup.mpp_um)
    tiles = list(tissue.tiles)
    random.Random(0).shuffle(tiles)
    blank = reader.read(0, 0, t, t, setup.mpp_um, choice)[None]
    setup.detector.predict(blank, confidence=setup.confidence, iou=pipeline.options.nms_iou)  # warm up
    found: list[Detection] = []
    t0 = time.monotonic()
    done = 0
    for tile in tiles:
        pixels = reader.read(tile.l0_x, tile.l0_y, t, t, setup.mpp_um, choice)
        out = setup.detector.predict(pixels[None], confidence=setup.confidence, iou=pipeline.options.nms_iou)[0]
        found.extend(to_level0(out, tile, tissue, SEAM_MARGIN_PX))
        done += 1
        if time.monotonic() - t0 > seconds:
            break
    elapsed = time.monotonic() - t0
    rate = done / elapsed
    return {"tiles": done, "seconds": elapsed, "tiles_per_s": rate, "tissue_tiles": len(tissue.tiles),
            "grid_tiles": full.total, "estimated_total_s": len(tissue.tiles) / rate, "raw_detections": len(found)}


def stage_pipeline(slide: Path) -> dict[str, Any]:
    from pipelines.base import PipelineInput
    from pipelines.wsi.pipeline import WsiCtcPipeline

    out = slide.parent / f"out-{slide.stem}"
    out.mkdir(exist_ok=True)
    pipeline = WsiCtcPipeline()
    pipeline.model()  # weights loaded before the clock starts, as in a warm worker
    t0 = time.monotonic()
    result = pipeline.run(PipelineInput("slide", str(slide), (slide,)), out)
    elapsed = time.monotonic() - t0
    p = result.summary["processing"]
    return {"seconds": elapsed, "tiles": p["tiles_processed"], "grid_tiles": p["tiles_total"],
            "tiles_per_s": p["tiles_processed"] / elapsed, "tissue_megapixels": p["tissue_megapixels"],
            "tissue_megapixels_per_s": p["tissue_megapixels"] / elapsed, "counts": result.summary["counts"]}


STAGES = {"generate": stage_generate, "plain": stage_plain_reads, "reader": stage_reader, "naive": stage_naive,
          "loop": stage_tissue_loop, "pipeline": stage_pipeline}


def run_stage(name: str, *args: Any, script: Path = Path(__file__)) -> dict[str, Any]:
    """Run one stage of ``script`` in a fresh process; its JSON result carries its own peak RSS."""
    proc = subprocess.run(
        [sys.executable, str(script), "--stage", name, "--stage-args", json.dumps([str(a) for a in args])],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"stage {name} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def parse_with_stages(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The arguments, with ``--torch-threads`` (exported as OMP_NUM_THREADS for the stages' processes to read)
    and the hidden ``--stage``/``--stage-args`` that :func:`run_stage` passes to a stage's process."""
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="OMP_NUM_THREADS for every stage (default: as set, else torch's own, one per core)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--stage-args", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_threads and not args.stage:
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)
    return args


def _child(name: str, raw: list[str]) -> None:
    slide = Path(raw[0])
    if name == "generate":
        result = stage_generate(slide, int(raw[1]), float(raw[2]))
    elif name == "pipeline":
        result = stage_pipeline(slide)
    else:
        result = STAGES[name](slide, float(raw[1]))  # type: ignore[operator]
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=20480, help="side of the comparison slide in px")
    parser.add_argument("--big", type=int, default=0, help="also run a slide this many px square (e.g. 100000)")
    parser.add_argument("--big-tissue-fraction", type=float, default=0.3)
    parser.add_argument("--workdir", type=Path, default=Path("var/bench"),
                        help="generated slides are kept here and reused (default var/bench)")
    parser.add_argument("--naive-seconds", type=float, default=120.0, help="time the naive loop this long")
    parser.add_argument("--loop-seconds", type=float, default=120.0,
                        help="time the plain loop over tissue tiles (c) this long")
    parser.add_argument("--reader-seconds", type=float, default=60.0)
    args = parse_with_stages(parser)
    if args.stage:
        _child(args.stage, json.loads(args.stage_args))
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    slide = args.workdir / f"bench-{args.size}.tiff"
    if not slide.exists():
        gen = run_stage("generate", slide, args.size, 0.6)
        print(f"generated {slide.name}: {args.size}x{args.size} px in {gen['seconds']:.0f} s, "
              f"{gen['bytes'] / 1e6:.0f} MB, peak RSS {gen['peak_rss_mb']:.0f} MB, truth {gen['counts']}")
    plain = run_stage("plain", slide, args.reader_seconds)
    reader = run_stage("reader", slide, args.reader_seconds)
    naive = run_stage("naive", slide, args.naive_seconds)
    loop = run_stage("loop", slide, args.loop_seconds)
    pipe = run_stage("pipeline", slide)
    tissue_mp = pipe["tissue_megapixels"]
    naive_total = naive["estimated_total_s"]
    print()
    mpp, tile, overlap = processing()
    print(f"slide {args.size}x{args.size} px at {MPP_UM} µm/px; processing {mpp:g} µm/px, {tile}-px tiles, "
          f"overlap {overlap} px; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
          f"OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"grid {pipe['grid_tiles']} tiles, {reader['tissue_tiles']} over tissue ({reader['tissue_mm2']:.1f} mm², "
          f"{tissue_mp:.0f} MP at {mpp:g} µm/px)")
    print()
    print("reading                         tiles/s    MP/s   peak RSS")
    for label, r in (("plain openslide loop (level 0)", plain), ("reader (best level, threads)", reader)):
        print(f"  {label:<30} {r['tiles_per_s']:7.1f} {r['tiles_per_s'] * tile**2 / 1e6:7.1f} "
              f"{r['peak_rss_mb']:7.0f} MB")
    print(f"  ratio reader / plain: {reader['tiles_per_s'] / plain['tiles_per_s']:.2f}x per tile")
    print()
    print("detection                       tiles/s  tissue MP/s  slide s  peak RSS")
    naive_mp_s = tissue_mp / naive_total
    print(f"  (a) naive, no tissue mask     {naive['tiles_per_s']:7.2f} {naive_mp_s:11.2f} "
          f"{naive_total:8.0f}* {naive['peak_rss_mb']:6.0f} MB")
    print(f"  (b) pipeline                  {pipe['tiles_per_s']:7.2f} {pipe['tissue_megapixels_per_s']:11.2f} "
          f"{pipe['seconds']:8.0f}  {pipe['peak_rss_mb']:6.0f} MB")
    loop_total = loop["estimated_total_s"]
    print(f"  (c) plain loop, tissue tiles  {loop['tiles_per_s']:7.2f} {tissue_mp / loop_total:11.2f} "
          f"{loop_total:8.0f}* {loop['peak_rss_mb']:6.0f} MB")
    print(f"  * extrapolated at the measured rate: (a) {naive['tiles']} tiles timed, {naive['grid_tiles']} grid tiles; "
          f"(c) {loop['tiles']} timed, {loop['tissue_tiles']} tissue tiles")
    print(f"  ratio pipeline / naive (whole slide, mostly the tissue fraction: {reader['tissue_tiles']} of "
          f"{naive['grid_tiles']} tiles): {naive_total / pipe['seconds']:.2f}x; counts {pipe['counts']}")
    print(f"  ratio pipeline / plain loop over the same tissue tiles (read-ahead, batching): "
          f"{loop_total / pipe['seconds']:.2f}x")
    if args.big:
        big = args.workdir / f"bench-{args.big}.tiff"
        if not big.exists():
            gen = run_stage("generate", big, args.big, args.big_tissue_fraction)
            print()
            print(f"generated {big.name}: {args.big}x{args.big} px (smear {args.big_tissue_fraction:.0%} of the slide)"
                  f" in {gen['seconds']:.0f} s, {gen['bytes'] / 1e9:.2f} GB, "
                  f"generator peak RSS {gen['peak_rss_mb']:.0f} MB")
        big_run = run_stage("pipeline", big)
        print()
        print(f"pipeline on {args.big}x{args.big} px: {big_run['tiles']} of {big_run['grid_tiles']} tiles, "
              f"{big_run['tissue_megapixels']:.0f} tissue MP in {big_run['seconds']:.0f} s "
              f"({big_run['tiles_per_s']:.2f} tiles/s, {big_run['tissue_megapixels_per_s']:.2f} MP/s), "
              f"peak RSS {big_run['peak_rss_mb']:.0f} MB, counts {big_run['counts']}")


if __name__ == "__main__":
    main()
