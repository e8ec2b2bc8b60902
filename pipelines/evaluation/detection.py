"""``oncoagent evaluate detector``: the CTC/CTM detector on a lab's labelled tiles or annotated slides.

Two kinds of data:

* a YOLO data set (``data.yaml`` and a split, ``images/<split>``, or a flat ``images/`` + ``labels/``): every
  image through the detector (:func:`pipelines.wsi.evaluation.predict_split`), scored as the pipeline reports
  (close CTCs grouped into CTMs) — mAP50, mAP50-95, precision/recall/F1 against confidence; resampled by image;
* slides with QuPath GeoJSON beside them (:mod:`pipelines.wsi.qupath_import`): each slide through the real
  ``wsi-ctc`` pipeline twice — at the model's operating confidence, for the counts it would report, and at a
  low confidence, for the curves and average precision over the whole slide (its detections, with close CTCs
  above the operating confidence grouped into CTMs as the pipeline groups them) — and the counts per slide set
  against the annotations (Bland–Altman, the share of slides within ±5 %); resampled by slide. Average
  precision needs boxes: when some objects were annotated as points (boxes of a typical size), mAP is left
  out and the curves match at IoU 0.5 against those boxes.

Precision, recall and F1 are read at the model's operating confidence (its manifest's, as the pipeline uses
it), not at the best confidence on the lab's data, which would flatter the figures.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipelines.base import PipelineInput
from pipelines.errors import InputError
from pipelines.evaluation.agreement import agreement_estimates, bland_altman, within
from pipelines.evaluation.bootstrap import Bootstrap, Estimate, Indices
from pipelines.evaluation.figures import bland_altman_png
from pipelines.evaluation.outcome import EvaluationOutcome, Section
from pipelines.wsi.dataset import IMAGE_SUFFIXES, split_images
from pipelines.wsi.evaluation import (
    ClusterRule,
    Evaluation,
    Predictions,
    match_image,
    plot_curves,
    predict_split,
    score_matched,
    score_predictions,
    with_clusters,
)
from pipelines.wsi.labels import CLASS_NAMES, CTC, CTM
from pipelines.wsi.pipeline import WsiCtcOptions, WsiCtcPipeline
from pipelines.wsi.qupath_import import SlideAnnotations, annotated_slides, read_slide_annotations

log = logging.getLogger(__name__)

CURVE_CONFIDENCE = 0.01  # the slide run for the curves keeps detections down to this confidence
CURVES_FILE = "detector-curves.png"


# ------------------------------------------------------------------------------------------ scoring


def operating_figures(ev: Evaluation) -> dict[str, float]:
    """Precision, recall and F1 at the evaluation's operating confidence, means over the classes present."""
    return {key: float(np.mean(list(values.values()))) if values else 0.0
            for key, values in (("precision", ev.precision), ("recall", ev.recall), ("f1", ev.f1))}


def _figures_of(pairs: Predictions, clusters: ClusterRule | None, confidence: float, with_map: bool,
                ) -> Callable[[Indices], dict[str, float]]:
    matched = [match_image(raw, truth, clusters) for raw, truth in pairs]  # once: resamples reuse the matches

    def statistics(idx: Indices) -> dict[str, float]:
        try:
            ev = score_matched([matched[i] for i in idx], confidence)
        except ValueError:  # a resample without labelled objects
            return {}
        figures = operating_figures(ev)
        if with_map:
            figures.update({"mAP50": ev.map50, "mAP50-95": ev.map50_95})
        return figures

    return statistics


def score_section(pairs: Predictions, clusters: ClusterRule | None, confidence: float, boot: Bootstrap, out: Path,
                  with_map: bool) -> tuple[dict[str, Estimate], Section, Evaluation]:
    """Headline figures with intervals, the curves figure and a per-class table; ``clusters`` groups close
    CTCs of raw detections into CTMs first (None: the detections are grouped already)."""
    ev = score_predictions(pairs, clusters, confidence)
    headline = boot.estimate_many(_figures_of(pairs, clusters, confidence, with_map))
    plot_curves(ev, out / CURVES_FILE)
    rows = [
        [name, ev.objects.get(name, 0), _r(ev.ap50.get(name)) if with_map else None,
         _r(ev.ap50_95.get(name)) if with_map else None, _r(ev.precision.get(name)), _r(ev.recall.get(name)),
         _r(ev.f1.get(name))]
        for name in CLASS_NAMES
    ]
    section = Section(
        "Detection",
        text=[f"Precision, recall and F1 at the model's operating confidence {confidence:g}; "
              f"on this data F1 would peak at {ev.best_confidence:.3f} (for information, not a setting). "
              "CTCs at or above the operating confidence within the grouping distance form CTMs, as the "
              "pipeline reports them."],
        columns=["class", "objects", "AP50", "AP50-95", "precision", "recall", "F1"],
        rows=rows,
        figures=[CURVES_FILE],
    )
    return headline, section, ev


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


# ------------------------------------------------------------------------------------------ YOLO data sets


def yolo_images(data: Path, split: str) -> list[Path]:
    """The images of ``split`` of the YOLO data set at ``data`` (all of a flat ``images/``)."""
    data_yaml = data / "data.yaml"
    if data_yaml.is_file():
        doc = yaml.safe_load(data_yaml.read_text(encoding="utf-8")) or {}
        if split not in doc:
            raise InputError(f"{data_yaml} names no {split!r} split")
        return split_images(data_yaml, split)
    folder = data / "images" / split if (data / "images" / split).is_dir() else data / "images"
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def evaluate_yolo(data: Path, split: str, options: WsiCtcOptions, boot_of: Callable[[int], Bootstrap],
                  out: Path) -> EvaluationOutcome:
    images = yolo_images(data, split)
    if not images:
        raise InputError(f"{data}: no images in the {split!r} split of a YOLO data set")
    pipeline = WsiCtcPipeline(options)
    setup = pipeline.model()
    log.info("detector %s on %d images of %s", setup.entry.name, len(images), data)
    pairs = predict_split(setup.detector, images)
    rule = ClusterRule(options.ctm_grouping_distance_um / setup.mpp_um, setup.confidence)
    boot = boot_of(len(pairs))
    headline, section, ev = score_section(pairs, rule, setup.confidence, boot, out, with_map=True)
    outcome = EvaluationOutcome("detector", str(data), f"YOLO data set, split {split!r}", "images", len(images),
                                [setup.entry.ref], boot, headline, [section])
    outcome.details = {"objects": ev.objects, "operating_confidence": setup.confidence,
                       "best_confidence_on_this_data": ev.best_confidence}
    outcome.per_case = [{"image": p.name, "truth": len(t), "detections_at_operating_confidence":
                         int((d[:, 4] >= setup.confidence).sum())} for p, (d, t) in zip(images, pairs, strict=True)]
    return outcome


# ------------------------------------------------------------------------------------------ annotated slides


def as_reported(summary: dict[str, Any], grouping_um: float, confidence: float) -> np.ndarray:
    """A low-confidence run's detections ``(k, 6)`` as the pipeline would report them at ``confidence``: its
    CTCs and the model's CTMs, with CTCs at or above ``confidence`` within ``grouping_um`` grouped into CTMs
    (groups the low-confidence run made of weaker CTCs are dropped)."""
    rows = [[*d["l0_box"], d["confidence"], CLASS_NAMES.index(str(d["class"]))] for d in summary["detections"]
            if d.get("source") != "grouping"]
    raw = np.array(rows, np.float64).reshape(-1, 6)
    mpp_x = float(summary["slide"]["mpp_um"][0])
    return with_clusters(raw, ClusterRule(grouping_um / mpp_x, confidence))


def evaluate_slides(data: Path, options: WsiCtcOptions, boot_of: Callable[[int], Bootstrap],
                    out: Path) -> EvaluationOutcome:
    slides = annotated_slides(data)
    if not slides:
        raise InputError(f"{data}: no slides with a QuPath GeoJSON beside them")
    pipeline = WsiCtcPipeline(options)
    curves = WsiCtcPipeline(options.model_copy(update={"confidence": CURVE_CONFIDENCE}))
    setup = pipeline.model()
    truths: list[SlideAnnotations] = []
    counted: list[dict[str, int]] = []
    pairs: Predictions = []
    for n, slide in enumerate(slides, start=1):
        truth = read_slide_annotations(slide, options.fallback_mpp_um)
        inp = PipelineInput("slide", str(slide), (slide,))
        kept = out / "slides" / slide.stem
        kept.mkdir(parents=True, exist_ok=True)
        result = pipeline.run(inp, kept)  # what the pipeline reports: its files stay beside the report
        with tempfile.TemporaryDirectory(prefix="oncoagent-eval-") as scratch:
            low = curves.run(inp, Path(scratch))
        truths.append(truth)
        counted.append(result.summary["counts"])
        pairs.append((as_reported(low.summary, options.ctm_grouping_distance_um, setup.confidence),
                      truth.box_array()))
        log.info("slide %d/%d %s: %s counted, %s annotated", n, len(slides), slide.name, result.summary["counts"],
                 truth.counts())
    boot = boot_of(len(slides))
    points = sum(t.points for t in truths)
    headline, section, ev = score_section(pairs, None, setup.confidence, boot, out, with_map=points == 0)
    outcome = EvaluationOutcome("detector", str(data), "slides with QuPath GeoJSON annotations", "slides",
                                len(slides), [setup.entry.ref], boot, headline, [section])
    if points:
        outcome.notes.append(f"{points} object(s) were annotated as points and scored as boxes of a typical "
                             "size: mAP50 and mAP50-95 are left out (they measure box fit)")
    outcome.details = {"objects": ev.objects, "operating_confidence": setup.confidence,
                       "best_confidence_on_this_data": ev.best_confidence, "point_annotations": points,
                       "skipped_annotations": _skipped(truths)}
    agreement_sections(outcome, slides, truths, counted, boot, out)
    return outcome


def _skipped(truths: list[SlideAnnotations]) -> dict[str, int]:
    total: dict[str, int] = {}
    for t in truths:
        for name, count in t.skipped.items():
            total[name] = total.get(name, 0) + count
    return total


def agreement_sections(outcome: EvaluationOutcome, slides: list[Path], truths: list[SlideAnnotations],
                       counted: list[dict[str, int]], boot: Bootstrap, out: Path) -> None:
    """Per-slide counts against the annotations: Bland–Altman per class, the share within ±5 %."""
    for cls in (CTC, CTM):
        name = CLASS_NAMES[cls]
        truth = np.array([t.counts()[name] for t in truths], np.float64)
        method = np.array([c[name] for c in counted], np.float64)
        estimates = agreement_estimates(method, truth, boot)
        figure = bland_altman_png(method, truth, out / f"bland-altman-{name.lower()}.png",
                                  f"{name} count per slide")
        a = bland_altman(method, truth)
        outcome.headline[f"{name}_within_5pct"] = estimates["within_5pct"]
        outcome.headline[f"{name}_mean_difference"] = estimates["mean_difference"]
        outcome.details[f"{name}_agreement"] = {**a.as_dict(),
                                                "bootstrap": {k: e.as_dict() for k, e in estimates.items()}}
        outcome.sections.append(Section(
            f"{name} counts per slide",
            text=[f"Mean difference (OncoAgent − annotation) {a.bias:+.2f}, 95 % limits of agreement "
                  f"{a.lower:+.2f} to {a.upper:+.2f}; {int(within(method, truth).sum())} of {len(truth)} slides "
                  "within ±5 % of the annotated count."],
            figures=[figure],
        ))
    outcome.per_case = [
        {"slide": slide.name, "truth": t.counts(), "counted": c, "point_annotations": t.points,
         "error_pct": {k: (None if t.counts()[k] == 0 else round(100 * (c[k] - t.counts()[k]) / t.counts()[k], 2))
                       for k in CLASS_NAMES}}
        for slide, t, c in zip(slides, truths, counted, strict=True)
    ]


def evaluate_detector(data: Path, split: str, options: WsiCtcOptions, boot_of: Callable[[int], Bootstrap],
                      out: Path) -> EvaluationOutcome:
    """A YOLO data set when ``data`` looks like one, else annotated slides."""
    if (data / "data.yaml").is_file() or (data / "images").is_dir():
        return evaluate_yolo(data, split, options, boot_of, out)
    if annotated_slides(data):
        return evaluate_slides(data, options, boot_of, out)
    raise InputError(f"{data}: neither a YOLO data set (data.yaml, images/) nor slides with QuPath GeoJSON beside "
                     "them")
