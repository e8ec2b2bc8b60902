"""MRI pipeline benchmark: seconds per MR series (256x256x64) by stage, and radiomics overhead.

Generates ``--series`` synthetic series (256x256x64, 1.4 mm pixels, 3 mm slices, lesions from the usual
generator), writes them as DICOM and runs the ``mri-tumour`` pipeline on each with the shipped models after a
warm-up run (model loading is not counted). Stage seconds are the pipeline's own figures (volume, segmentation,
radiomics, classification, writing); "total" is the wall time of ``run``.

Radiomics overhead: in the same run, on the same image and the same lesion label maps the pipeline produced,
the wrapper (:class:`pipelines.mri.radiomics.RadiomicsExtractor`) and pyradiomics' ``RadiomicsFeatureExtractor``
built from the same parameter file and called directly are timed alternately, ``--repeats`` times per lesion.
The ratio wrapper / direct is the overhead (goal <= 1.1).

    .venv/bin/python benchmarks/mri_series.py [--series 3] [--threads 1] [--repeats 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.base import PipelineInput
from pipelines.mri.pipeline import MriTumourOptions, MriTumourPipeline
from pipelines.mri.radiomics import DEFAULT_PARAMS, RadiomicsExtractor
from pipelines.mri.volume import load_series
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series

STAGES = ("volume", "segmentation", "radiomics", "classification", "writing")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=3, help="series to time (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the pipeline)")
    parser.add_argument("--repeats", type=int, default=2, help="radiomics timings per lesion and method")
    parser.add_argument("--seed", type=int, default=990_000, help="first generator seed")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from radiomics import featureextractor

    pipeline = MriTumourPipeline(MriTumourOptions(torch_threads=args.threads))
    wrapper = RadiomicsExtractor(DEFAULT_PARAMS)
    direct = featureextractor.RadiomicsFeatureExtractor(str(DEFAULT_PARAMS))
    rows: list[dict[str, Any]] = []
    wrapper_s = direct_s = 0.0
    lesions_timed = 0
    with tempfile.TemporaryDirectory(prefix="mri-bench-") as tmp:
        root = Path(tmp)
        warm = write_mr_series(root / "warm", MRSeriesSpec(rows=96, columns=96, slices=16, pixel_spacing_mm=3.5,
                                                           lesions=1, seed=args.seed - 1))
        _run(pipeline, warm.files, root / "warm-out")
        for i in range(args.series):
            spec = MRSeriesSpec(rows=256, columns=256, slices=64, pixel_spacing_mm=1.4, slice_thickness_mm=3.0,
                                lesions=2, seed=args.seed + i)
            t = time.perf_counter()
            series = write_mr_series(root / f"s{i}", spec)
            generate_s = time.perf_counter() - t
            out = root / f"out{i}"
            out.mkdir()
            t = time.perf_counter()
            result = _run(pipeline, series.files, out)
            total_s = time.perf_counter() - t
            stages = result["stage_seconds"]
            rows.append({"series": i, "lesions": result["lesion_count"], "generate_s": generate_s,
                         "total_s": total_s, **{f"{k}_s": stages[k] for k in STAGES}})
            print(f"series {i}: {result['lesion_count']} lesion(s), total {total_s:.2f} s  "
                  + "  ".join(f"{k} {stages[k]:.2f}" for k in STAGES), flush=True)
            # radiomics overhead on the same image and label map the pipeline used
            import SimpleITK as sitk

            image = load_series(series.files).image
            labels = sitk.ReadImage(str(out / "lesions.nii.gz"))
            labels.CopyInformation(image)  # type: ignore[no-untyped-call]
            for lesion in result["lesions"]:
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    wrapper.extract(image, labels, lesion["index"])
                    wrapper_s += time.perf_counter() - t
                    t = time.perf_counter()
                    direct.execute(image, labels, label=lesion["index"])
                    direct_s += time.perf_counter() - t
                    lesions_timed += 1
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k.endswith("_s")}
    ratio = wrapper_s / direct_s if direct_s else float("nan")
    print()
    print(f"mean seconds per 256x256x64 series over {len(rows)} series (torch threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs):")
    for key in ("total_s", *[f"{k}_s" for k in STAGES]):
        print(f"  {key[:-2]:<15} {mean[key]:7.2f}")
    print(f"  (generating and writing the DICOM series, not part of the pipeline: {mean['generate_s']:.2f})")
    print(f"radiomics: wrapper {wrapper_s:.2f} s, pyradiomics direct {direct_s:.2f} s over {lesions_timed} "
          f"extraction(s); overhead ratio {ratio:.3f} (goal <= 1.1)")
    if args.json:
        args.json.write_text(json.dumps({"series": rows, "mean": mean, "radiomics_wrapper_s": wrapper_s,
                                         "radiomics_direct_s": direct_s, "radiomics_ratio": ratio,
                                         "threads": args.threads}, indent=2))
    return 0


def _run(pipeline: MriTumourPipeline, files: list[Path], out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    inp = PipelineInput("dicom-series", "bench", tuple(files))
    summary: dict[str, Any] = pipeline.run(inp, out).summary
    return summary


if __name__ == "__main__":
    sys.exit(main())
