"""Count agreement of ``wsi-ctc`` across held-out generated slides (issue 14): not a speed benchmark, an
accuracy measurement that takes minutes, so it lives beside the benchmarks rather than in the suite.

Generates ``--slides`` slides (default 10; :func:`pipelines.wsi.count_agreement.count_set_specs`: smear
fractions 0.1–0.7, both modes, a typical CTC density among ~900 leukocytes per mm²), runs the pipeline with
the shipped model on each and prints per-slide counts against the truth, the mean relative error, the 95 %
limits of agreement and the share of slides within ±5 %. ``--confidence`` overrides the model's operating
point (for choosing one on *validation* seeds; report test seeds only with the frozen choice).

    .venv/bin/python benchmarks/count_agreement.py [--slides 10] [--seed 75] [--side 12288] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("YOLO_OFFLINE", "1")


def main() -> int:
    from pipelines.base import PipelineInput
    from pipelines.synthetic.slides import write_slide
    from pipelines.wsi.count_agreement import agreement, count_set_specs
    from pipelines.wsi.pipeline import WsiCtcOptions, WsiCtcPipeline

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=10)
    parser.add_argument("--seed", type=int, default=75, help="slides get seeds SEED*1000+i (default 75000..)")
    parser.add_argument("--side", type=int, default=12288)
    parser.add_argument("--confidence", type=float, nargs="*", default=[None],
                        help="operating confidences to try (default: the model's own)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    specs = count_set_specs(args.slides, args.seed, side=args.side)
    rows: dict[str, list[dict[str, object]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        slides = []
        for spec in specs:
            path = Path(tmp) / f"slide-{spec.seed}.tiff"
            slides.append((path, spec, write_slide(path, spec).counts()))
        for confidence in args.confidence:
            pipeline = WsiCtcPipeline(WsiCtcOptions(confidence=confidence))
            key = "model" if confidence is None else f"{confidence:g}"
            rows[key] = []
            for path, spec, truth in slides:
                t0 = time.monotonic()
                out = Path(tmp) / f"out-{spec.seed}-{key}"
                out.mkdir()
                result = pipeline.run(PipelineInput("slide", str(path), (path,)), out)
                rows[key].append({"seed": spec.seed, "mode": spec.mode, "smear": spec.tissue_fraction,
                                  "truth": truth, "counts": result.summary["counts"],
                                  "seconds": round(time.monotonic() - t0, 1)})
                print(json.dumps(rows[key][-1]), flush=True)
    report = {}
    for key, found in rows.items():
        summary = agreement([r["counts"] for r in found], [r["truth"] for r in found])  # type: ignore[misc]
        report[key] = {"slides": found, **{name: a.as_dict() for name, a in summary.items()}}
        print(f"confidence {key}: " + "; ".join(
            f"{name} bias {a.bias:+.1%}, limits {a.limits[0]:+.1%}..{a.limits[1]:+.1%}, "
            f"within 5 % on {a.within_5_percent:.0%} of slides" for name, a in summary.items()))
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
