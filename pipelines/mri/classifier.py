"""Malignancy classifier: a scikit-learn pipeline over radiomics vectors, tuned by a genetic algorithm.

Pipeline: drop constant features → signed log (radiomics values span many orders of magnitude) → standard
scaling → the k best features by ANOVA F → SVC, its probabilities calibrated by Platt scaling
(``CalibratedClassifierCV``, sigmoid, on cross-validated decision values). The genetic search tunes
C, gamma, the kernel and k under stratified k-fold cross-validation (fitness: mean of ROC AUC and accuracy).
A trained classifier is saved as one joblib file holding the fitted pipeline, the feature names it expects
and the sha256 of the radiomics parameter file its features came from.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.models.registry import ModelEntry
from pipelines.mri.genetic import Gene, GeneticSettings, Genome, SearchResult, genetic_search
from pipelines.mri.radiomics import FeatureVector

log = logging.getLogger(__name__)

POSITIVE = "malignant"
NEGATIVE = "benign"
KERNELS = ("rbf", "linear", "poly", "sigmoid")
SVC_MAX_ITER = 200_000


class FeatureMismatchError(ValueError):
    """A feature vector does not match what the classifier was trained on."""


@dataclass(frozen=True)
class Hyperparameters:
    C: float
    gamma: float
    kernel: str
    k_features: int

    @classmethod
    def from_genome(cls, genome: Genome) -> Hyperparameters:
        return cls(float(genome["C"]), float(genome["gamma"]), str(genome["kernel"]), int(genome["k_features"]))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Prediction:
    probability: float  # of malignancy
    label: str


def signed_log1p(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    result: npt.NDArray[np.float64] = np.sign(x) * np.log1p(np.abs(x))
    return result


def usable_features(x: npt.NDArray[np.float64]) -> int:
    """Features that are not constant (what is left after the pipeline's first step)."""
    return int(np.sum(np.nanvar(x, axis=0) > 0))


def build_model(h: Hyperparameters, n_features: int, seed: int, calibrated: bool = True,
                calibration_folds: int = 5) -> Any:
    """The pipeline for ``h``; ``calibrated`` wraps the SVC in Platt scaling (sigmoid) fitted on
    cross-validated decision values, which is what gives meaningful probabilities."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_selection import SelectKBest, VarianceThreshold, f_classif
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler
    from sklearn.svm import SVC

    svc = SVC(C=h.C, gamma=h.gamma, kernel=h.kernel, random_state=seed, max_iter=SVC_MAX_ITER, cache_size=100)
    return Pipeline([
        ("constant", VarianceThreshold(0.0)),
        ("signed_log", FunctionTransformer(signed_log1p)),
        ("scale", StandardScaler()),
        ("select", SelectKBest(f_classif, k=max(1, min(h.k_features, n_features)))),
        ("svc", CalibratedClassifierCV(svc, method="sigmoid", cv=calibration_folds, ensemble=False)
         if calibrated else svc),
    ])


SEARCH_SPACE = (
    Gene("C", "log", 1e-2, 1e3),
    Gene("gamma", "log", 1e-5, 1.0),
    Gene("kernel", "choice", choices=KERNELS),
    Gene("k_features", "int", 5, 80),
)


def cross_validated(h: Hyperparameters, x: npt.NDArray[np.float64], y: npt.NDArray[np.int_], folds: int,
                    seed: int) -> dict[str, float]:
    """Mean ROC AUC and accuracy of ``h`` over stratified folds (the bare SVC, uncalibrated: faster; AUC
    from its decision values, accuracy from their sign)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, cross_validate

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)  # k larger than a fold's non-constant features
        scores = cross_validate(build_model(h, usable_features(x), seed, calibrated=False), x, y, cv=cv,
                                scoring=("roc_auc", "accuracy"), error_score=0.0)
    return {"roc_auc": float(np.mean(scores["test_roc_auc"])), "accuracy": float(np.mean(scores["test_accuracy"]))}


def tune(x: npt.NDArray[np.float64], y: npt.NDArray[np.int_], settings: GeneticSettings, folds: int = 5,
         ) -> tuple[Hyperparameters, SearchResult]:
    """Genetic search of C, gamma, kernel and k under stratified cross-validation."""
    folds = max(2, min(folds, int(np.bincount(y, minlength=2).min())))

    def fitness(genome: Genome) -> float:
        scores = cross_validated(Hyperparameters.from_genome(genome), x, y, folds, settings.seed)
        return 0.5 * (scores["roc_auc"] + scores["accuracy"])

    result = genetic_search(SEARCH_SPACE, fitness, settings)
    return Hyperparameters.from_genome(result.best.genome), result


class MalignancyClassifier:
    """A fitted pipeline with the feature names and radiomics parameter hash it was trained with."""

    def __init__(self, model: Any, feature_names: tuple[str, ...], params_sha256: str,
                 hyperparameters: Hyperparameters, threshold: float = 0.5) -> None:
        self.model = model
        self.feature_names = feature_names
        self.params_sha256 = params_sha256
        self.hyperparameters = hyperparameters
        self.threshold = threshold

    @classmethod
    def fit(cls, x: npt.NDArray[np.float64], y: npt.NDArray[np.int_], feature_names: tuple[str, ...],
            params_sha256: str, h: Hyperparameters, seed: int) -> MalignancyClassifier:
        from sklearn.exceptions import ConvergenceWarning

        smallest_class = int(np.bincount(y, minlength=2).min())
        model = build_model(h, usable_features(x), seed, calibrated=True,
                            calibration_folds=max(2, min(5, smallest_class)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x, y)
        return cls(model, feature_names, params_sha256, h)

    def probabilities(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise FeatureMismatchError(f"expected {len(self.feature_names)} features, got {x.shape}")
        probs: npt.NDArray[np.float64] = self.model.predict_proba(x)[:, 1]
        return probs

    def predict(self, vector: FeatureVector) -> Prediction:
        if vector.params_sha256 != self.params_sha256:
            raise FeatureMismatchError(
                f"features come from radiomics parameters {vector.params_sha256[:12]}…, the classifier was trained "
                f"on {self.params_sha256[:12]}…; retrain it or use its parameter file"
            )
        if vector.names != self.feature_names:
            raise FeatureMismatchError("feature names differ from those the classifier was trained on")
        probability = float(self.probabilities(vector.values[None, :])[0])
        return Prediction(probability, POSITIVE if probability >= self.threshold else NEGATIVE)

    def selected_features(self) -> tuple[str, ...]:
        """Names of the features that reach the SVM (after constant removal and k-best selection)."""
        kept = np.array(self.feature_names)[self.model.named_steps["constant"].get_support()]
        return tuple(str(n) for n in kept[self.model.named_steps["select"].get_support()])

    def transform_selected(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``x`` as the SVM sees it (scaled, selected): the feature space of the PCA and t-SNE plots."""
        selected: npt.NDArray[np.float64] = self.model[:-1].transform(x)
        return selected

    def save(self, path: Path) -> None:
        import joblib

        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(
            {
                "format": 1,
                "model": self.model,
                "feature_names": list(self.feature_names),
                "params_sha256": self.params_sha256,
                "hyperparameters": self.hyperparameters.as_dict(),
                "threshold": self.threshold,
            },
            path,
            compress=3,
        )

    @classmethod
    def load(cls, path: Path) -> MalignancyClassifier:
        """Load a saved classifier. joblib unpickles: load only files whose sha256 the registry checked."""
        import joblib

        data = joblib.load(path)
        return cls(data["model"], tuple(data["feature_names"]), str(data["params_sha256"]),
                   Hyperparameters(**data["hyperparameters"]), float(data["threshold"]))


def load_entry(entry: ModelEntry) -> MalignancyClassifier:
    """The registered classifier at its operating point: the manifest's ``operating_threshold`` (chosen on
    validation series through the whole chain, see :mod:`pipelines.mri.release`) over the one saved with it."""
    classifier = MalignancyClassifier.load(entry.path)
    if "operating_threshold" in entry.info:
        classifier.threshold = float(entry.info["operating_threshold"])
    return classifier
