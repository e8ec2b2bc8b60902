"""The genetic search, the malignancy classifier, metrics and model cards on small known problems."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pipelines.mri.classifier import (
    FeatureMismatchError,
    Hyperparameters,
    MalignancyClassifier,
    cross_validated,
    tune,
)
from pipelines.mri.genetic import Gene, GeneticSettings, genetic_search
from pipelines.mri.metrics import binary_metrics
from pipelines.mri.model_card import ModelCard
from pipelines.mri.radiomics import FeatureVector

SPACE = (Gene("C", "log", 1e-3, 1e3), Gene("k", "int", 1, 20), Gene("kernel", "choice", choices=("a", "b", "c")))


def peak(genome: dict[str, float | int | str]) -> float:
    """Maximum 0 at C=10, k=7, kernel b."""
    return -((math.log10(float(genome["C"])) - 1) ** 2) - 0.05 * (int(genome["k"]) - 7) ** 2 \
        - (0.0 if genome["kernel"] == "b" else 1.0)


def test_genetic_search_finds_the_peak_and_is_reproducible() -> None:
    settings = GeneticSettings(population=16, generations=25, patience=25, seed=3)
    first = genetic_search(SPACE, peak, settings)
    again = genetic_search(SPACE, peak, settings)
    assert first.best == again.best and first.history == again.history
    assert first.best.genome["kernel"] == "b"
    assert abs(math.log10(float(first.best.genome["C"])) - 1) < 0.25
    assert abs(int(first.best.genome["k"]) - 7) <= 1
    best_per_generation = [h["best"] for h in first.history]
    assert best_per_generation == sorted(best_per_generation)  # elitism: never worse
    assert first.evaluations <= 16 * 25  # cached: a genome is evaluated once


def test_genetic_search_stops_when_nothing_improves() -> None:
    calls: list[int] = []

    def flat(genome: dict[str, float | int | str]) -> float:
        calls.append(1)
        return 1.0

    result = genetic_search(SPACE, flat, GeneticSettings(population=6, generations=50, patience=3, seed=0))
    assert len(result.history) == 4 and result.best.fitness == 1.0
    assert len(calls) == result.evaluations
    with pytest.raises(ValueError, match="population"):
        genetic_search(SPACE, flat, GeneticSettings(population=2, elite=2))


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes that differ in 3 of 30 features, with a few heavy-tailed nuisance features."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(0, 1, (n, 30))
    x[:, :3] += 1.6 * y[:, None]
    x[:, 10] = np.exp(rng.normal(0, 3, n))  # spans orders of magnitude, like many radiomics features
    x[:, 11] = 5.0  # constant
    return x, y


NAMES = tuple(f"f{i}" for i in range(30))


def test_tuned_classifier_separates_held_out_data_and_keeps_the_informative_features(tmp_path: Path) -> None:
    x, y = blobs(120, 0)
    hyper, search = tune(x, y, GeneticSettings(population=6, generations=3, seed=1), folds=3)
    assert hyper.kernel in {"rbf", "linear", "poly", "sigmoid"} and 5 <= hyper.k_features <= 80
    assert search.best.fitness > 0.8
    clf = MalignancyClassifier.fit(x, y, NAMES, "sha-1", hyper, seed=1)
    tx, ty = blobs(200, 99)
    metrics = binary_metrics(ty, clf.probabilities(tx))
    assert metrics.accuracy > 0.85 and metrics.auc > 0.9
    path = tmp_path / "clf.joblib"
    clf.save(path)
    loaded = MalignancyClassifier.load(path)
    assert np.allclose(loaded.probabilities(tx), clf.probabilities(tx))
    assert loaded.feature_names == NAMES and loaded.hyperparameters == hyper
    selected = loaded.selected_features()
    assert len(selected) == min(hyper.k_features, 29) and "f11" not in selected


def test_prediction_refuses_features_from_other_parameters() -> None:
    x, y = blobs(60, 2)
    clf = MalignancyClassifier.fit(x, y, NAMES, "sha-1", Hyperparameters(1.0, 0.03, "rbf", 5), seed=0)
    good = clf.predict(FeatureVector(NAMES, x[0], "sha-1"))
    assert 0 <= good.probability <= 1 and good.label in {"benign", "malignant"}
    with pytest.raises(FeatureMismatchError, match="radiomics parameters"):
        clf.predict(FeatureVector(NAMES, x[0], "sha-2"))
    with pytest.raises(FeatureMismatchError, match="feature names differ"):
        clf.predict(FeatureVector(tuple(reversed(NAMES)), x[0], "sha-1"))
    with pytest.raises(FeatureMismatchError, match="expected 30 features"):
        clf.probabilities(x[:, :5])


def test_cross_validation_scores_are_fractions() -> None:
    x, y = blobs(60, 3)
    scores = cross_validated(Hyperparameters(1.0, 0.03, "rbf", 5), x, y, folds=3, seed=0)
    assert 0.7 < scores["roc_auc"] <= 1 and 0.6 < scores["accuracy"] <= 1


def test_binary_metrics_counts() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.3, 0.2, 0.1, 0.6, 0.4, 0.7])
    m = binary_metrics(y, p)
    assert (m.tp, m.fn, m.tn, m.fp) == (3, 1, 3, 1)
    assert m.accuracy == 0.75 and m.sensitivity == 0.75 and m.specificity == 0.75
    assert m.auc == pytest.approx(0.875)


def test_model_card_has_hash_metrics_and_figures(tmp_path: Path) -> None:
    card = ModelCard(name="m", version="1.2.3", kind="malignancy classifier", weights_file="m.joblib",
                     sha256="ab" * 32, method=["SVC"], training_data=["generated"],
                     metrics={"held_out.accuracy": 0.93456, "held_out.n": 10}, figures=["m.roc.png"],
                     command="oncoagent train classifier --generate 5")
    text = card.write(tmp_path / "card.md").read_text()
    assert "# Model card: m 1.2.3" in text and "ab" * 32 in text
    assert "| held_out.accuracy | 0.9346 |" in text and "![m.roc](m.roc.png)" in text
    assert "oncoagent train classifier --generate 5" in text and "not a medical device" in text
