# mypy: disable-error-code="no-untyped-call"
# (SimpleITK ships without type annotations.)
"""Training runs as the ``oncoagent train`` commands do them: model file, metrics, figures, model card, manifest.

:func:`run_segmenter_training` trains the U-Net (:mod:`.segmenter_training`), scores it on held-out cases at
their own resolution (Dice, lesion detection) and writes an overlay figure. :func:`run_classifier_training`
extracts radiomics features, tunes and fits the SVM (:mod:`.classifier`), and reports accuracy, sensitivity,
specificity and AUC on held-out lesions with a ROC curve and PCA / t-SNE plots of the feature space. Both
write ``<name>.metrics.json`` and ``<name>.card.md`` beside the model and, unless told otherwise, record the
model (version, sha256, settings, metrics) in the ``manifest.json`` of that folder.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from pipelines.models.registry import record, sha256_of
from pipelines.mri.cases import Case
from pipelines.mri.classifier import MalignancyClassifier, tune
from pipelines.mri.feature_table import FeatureTable
from pipelines.mri.figures import overlay_png, pca_png, roc_png, tsne_png
from pipelines.mri.genetic import GeneticSettings
from pipelines.mri.metrics import binary_metrics
from pipelines.mri.model_card import ModelCard
from pipelines.mri.segmentation import Segmenter, SegmenterConfig, lesions_from_probability
from pipelines.mri.segmenter_training import (
    SegmenterTrainingParams,
    evaluate_segmenter,
    select_threshold,
    train_segmenter,
)

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainingOutcome:
    model_file: Path
    sha256: str
    metrics: dict[str, Any]
    files: tuple[Path, ...]  # everything written, model file included
    manifest: Path | None  # where the model was recorded, if it was


def run_segmenter_training(
    train: Iterable[Case],
    test: list[Case],
    out_dir: Path,
    name: str,
    version: str,
    config: SegmenterConfig,
    params: SegmenterTrainingParams,
    data_description: list[str],
    command: str = "",
    record_model: bool = True,
    progress: Progress = log.info,
    thresholds: tuple[float, ...] = (),
    initial_weights: Path | None = None,
    validation: Sequence[Case] = (),
) -> TrainingOutcome:
    """Train, save, evaluate and record a segmenter. With several ``thresholds``, the one with the best mean
    Dice on the ``validation`` cases is kept (without validation cases, the first is); then the ``test`` cases
    are scored once, at the frozen threshold."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    initial_state = None
    initial_sha = None
    if initial_weights is not None:
        initial_sha = sha256_of(initial_weights)
        initial_state = torch.load(initial_weights, map_location="cpu", weights_only=True)
        progress(f"starting from {initial_weights.name} (sha256 {initial_sha[:12]}…)")
    network, history = train_segmenter(train, config, params, progress, initial_state)
    train_seconds = time.monotonic() - t0
    weights = out_dir / f"{name}.pt"
    torch.save(network.state_dict(), weights)
    files = [weights]
    evaluation: dict[str, Any] = {}
    threshold_scores: dict[float, float] = {}
    candidates = thresholds or (config.threshold,)
    if len(candidates) > 1 and validation:
        best, threshold_scores, _ = select_threshold(Segmenter(network, config), list(validation),
                                                     params.min_lesion_ml, candidates)
        progress("validation mean Dice by threshold: "
                 + ", ".join(f"{t:g}: {d:.4f}" for t, d in threshold_scores.items()) + f"; using {best:g}")
        config = replace(config, threshold=best)
    elif thresholds:
        config = replace(config, threshold=candidates[0])
    if test:
        progress(f"evaluating on {len(test)} held-out case(s), once, at threshold {config.threshold:g}")
        segmenter = Segmenter(network, config)
        probabilities = [segmenter.probability(case.image) for case in test]
        result = evaluate_segmenter(segmenter, test, params.min_lesion_ml, probabilities)
        evaluation = result.as_dict()
        progress(f"held-out mean Dice {result.mean_dice:.4f} over {len(test)} case(s)")
        first = test[0]
        predicted = lesions_from_probability(probabilities[0], config.threshold, params.min_lesion_ml).labels
        files.append(overlay_png(
            sitk.GetArrayFromImage(first.image), sitk.GetArrayFromImage(first.labels),
            sitk.GetArrayFromImage(predicted), out_dir / f"{name}.overlay.png",
            f"{first.case_id}: truth (green), prediction (red)",
        ))
    metrics = {
        "held_out": evaluation,
        "threshold": config.threshold,
        "validation_mean_dice_by_threshold": {f"{t:g}": round(d, 4) for t, d in threshold_scores.items()},
        "training": {
            "iterations": params.iterations, "batch_size": params.batch_size, "patch_size": params.patch_size,
            "learning_rate": params.learning_rate, "seed": params.seed, "seconds": round(train_seconds, 1),
            "initial_weights_sha256": initial_sha,
            "final_loss": round(history[-1]["loss"], 4) if history else None,
        },
    }
    files.append(_write_json(out_dir / f"{name}.metrics.json", {**metrics, "loss_history": history}))
    sha = sha256_of(weights)
    card = ModelCard(
        name=name, version=version, kind="lesion segmenter", weights_file=weights.name, sha256=sha,
        method=[
            f"MONAI 3D U-Net, channels {list(config.channels)}, strides {[list(s) for s in config.strides]}, "
            f"{config.num_res_units} residual unit(s), instance norm, one sigmoid output (lesion)",
            f"input resampled to {list(config.spacing_mm)} mm (x, y, z), z-scored over the volume's foreground",
            f"sliding-window inference, window {list(config.roi_size)} voxels (z, y, x), overlap {config.overlap}, "
            f"Gaussian blending; probability resampled to the series grid, threshold {config.threshold}"
            + (" (the best validation mean Dice of " + ", ".join(f"{t:g}" for t in threshold_scores) + ")"
               if len(threshold_scores) > 1 else ""),
            f"trained {params.iterations} steps of {params.batch_size} patches {list(params.patch_size)}, "
            f"{params.positive_fraction:.0%} centred on lesions; AdamW, one-cycle LR {params.learning_rate}; "
            "loss: soft Dice over the batch + BCE; flips and intensity jitter; hard-negative mining at "
            f"{', '.join(f'{f:.0%}' for f in params.mining_at)} of the schedule ({params.hard_fraction:.0%} of patches "
            "then centred on false positives)",
            f"connected components (face-connected) below {params.min_lesion_ml} ml are dropped",
            *([f"fine-tuned from weights with sha256 {initial_sha} (see the training data section for both stages)"]
              if initial_sha else []),
        ],
        training_data=data_description,
        metrics=_flat({"held_out": {k: v for k, v in evaluation.items() if k != "dice_per_case"},
                       "training": metrics["training"]}),
        figures=[f.name for f in files if f.suffix == ".png"],
        command=command,
    )
    files.append(card.write(out_dir / f"{name}.card.md"))
    info = {"kind": "segmenter", "config": config.as_dict(), "min_lesion_ml": params.min_lesion_ml,
            "held_out": {k: v for k, v in evaluation.items() if k != "dice_per_case"}}
    manifest = _record(name, version, weights, info, progress) if record_model else None
    return TrainingOutcome(weights, sha, metrics, tuple(files), manifest)


def run_classifier_training(
    train: FeatureTable,
    test: FeatureTable | None,
    out_dir: Path,
    name: str,
    version: str,
    genetic: GeneticSettings,
    folds: int,
    data_description: list[str],
    command: str = "",
    record_model: bool = True,
    progress: Progress = log.info,
) -> TrainingOutcome:
    if test is not None and (test.names != train.names or test.params_sha256 != train.params_sha256):
        raise ValueError("training and test features come from different radiomics parameters")
    counts = np.bincount(train.y, minlength=2)
    if counts.min() < 2:
        raise ValueError(f"training needs at least 2 lesions of each class (benign {counts[0]}, malignant "
                         f"{counts[1]})")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    progress(f"genetic search over C, gamma, kernel, k on {len(train)} lesion(s), {folds}-fold stratified CV")
    hyper, search = tune(train.x, train.y, genetic, folds)
    progress(f"best {hyper.as_dict()} (CV fitness {search.best.fitness:.4f}, {search.evaluations} evaluations)")
    classifier = MalignancyClassifier.fit(train.x, train.y, train.names, train.params_sha256, hyper, genetic.seed)
    train_seconds = time.monotonic() - t0
    model_file = out_dir / f"{name}.joblib"
    classifier.save(model_file)
    files: list[Path] = [model_file]
    held_out: dict[str, Any] = {}
    shown = train
    if test is not None and len(test):
        probability = classifier.probabilities(test.x)
        result = binary_metrics(test.y, probability, classifier.threshold)
        held_out = result.as_dict()
        progress(f"held out: accuracy {result.accuracy:.4f}, sensitivity {result.sensitivity:.4f}, "
                 f"specificity {result.specificity:.4f}, AUC {result.auc:.4f} (n={result.n})")
        if 0 < test.y.sum() < len(test):
            files.append(roc_png(test.y, probability, out_dir / f"{name}.roc.png", f"{name}: held-out ROC"))
        shown = test if len(test) >= 10 else train
    space = classifier.transform_selected(shown.x)
    which = "held-out" if shown is test else "training"
    files.append(pca_png(space, shown.y, out_dir / f"{name}.pca.png", f"PCA of selected features ({which})"))
    if len(shown) >= 5:
        files.append(tsne_png(space, shown.y, out_dir / f"{name}.tsne.png", f"t-SNE of selected features ({which})",
                              genetic.seed))
    metrics = {
        "held_out": held_out,
        "cross_validation_fitness": round(search.best.fitness, 4),
        "hyperparameters": hyper.as_dict(),
        "selected_features": list(classifier.selected_features()),
        "training": {"lesions": len(train), "benign": int(counts[0]), "malignant": int(counts[1]),
                     "seconds": round(train_seconds, 1), "evaluations": search.evaluations, "folds": folds,
                     "population": genetic.population, "generations": len(search.history),
                     "seed": genetic.seed},
        "radiomics_params_sha256": train.params_sha256,
    }
    files.append(_write_json(out_dir / f"{name}.metrics.json", {**metrics, "ga_history": search.history}))
    sha = sha256_of(model_file)
    card = ModelCard(
        name=name, version=version, kind="malignancy classifier", weights_file=model_file.name, sha256=sha,
        method=[
            f"pyradiomics features ({len(train.names)} per lesion; parameter file sha256 "
            f"`{train.params_sha256}`)",
            "scikit-learn pipeline: constant features dropped, signed log, standard scaling, "
            f"SelectKBest (ANOVA F, k={hyper.k_features}), SVC (kernel {hyper.kernel}, C {hyper.C:g}, "
            f"gamma {hyper.gamma:g}) with Platt-calibrated probabilities; malignant when p >= "
            f"{classifier.threshold}",
            f"C, gamma, kernel and k tuned by a genetic algorithm (population {genetic.population}, up to "
            f"{genetic.generations} generations, seed {genetic.seed}) on {folds}-fold stratified CV, fitness = "
            "mean of ROC AUC and accuracy",
        ],
        training_data=data_description,
        metrics=_flat({"held_out": held_out, "cross_validation_fitness": metrics["cross_validation_fitness"],
                       "training": metrics["training"]}),
        figures=[f.name for f in files if f.suffix == ".png"],
        command=command,
    )
    files.append(card.write(out_dir / f"{name}.card.md"))
    info = {"kind": "classifier", "radiomics_params_sha256": train.params_sha256,
            "hyperparameters": hyper.as_dict(), "held_out": held_out}
    manifest = _record(name, version, model_file, info, progress) if record_model else None
    return TrainingOutcome(model_file, sha, metrics, tuple(files), manifest)


def _record(name: str, version: str, model_file: Path, info: dict[str, Any], progress: Progress,
            ) -> Path:
    """Record the model (with its card) in the manifest beside it; returns the manifest's path."""
    entry = record(name, version, model_file, {**info, "card": f"{name}.card.md"})
    manifest = model_file.parent / "manifest.json"
    progress(f"recorded {entry.name} {entry.version} (sha256 {entry.sha256[:12]}…) in {manifest}")
    return manifest


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif value is not None:
            out[f"{prefix}{key}"] = value
    return out
