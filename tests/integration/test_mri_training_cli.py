"""Smoke runs of ``oncoagent train segmenter|classifier`` on tiny data: the training paths keep working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipelines.models.registry import resolve, sha256_of
from pipelines.mri.cases import case_from_spec, write_case_folder
from pipelines.synthetic.mri_series import MRSeriesSpec
from tests.conftest import REPO


def oncoagent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=False,
        timeout=280,
    )


def test_train_segmenter_on_generated_series(tmp_path: Path) -> None:
    out = tmp_path / "models"
    proc = oncoagent(
        "--data-dir", str(tmp_path / "d"), "train", "segmenter", "--generate", "2", "--seed", "910000",
        "--test-generate", "1", "--test-seed", "910100", "--val-generate", "1", "--val-seed", "910200",
        "--thresholds", "0.4", "0.5", "--iterations", "3", "--channels", "4", "8", "16", "16",
        "--out", str(out), "--version", "0.0.1-smoke", cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    weights = out / "mri-lesion-unet.pt"
    entry = resolve("mri-lesion-unet", manifest=out / "manifest.json")
    assert entry.path == weights and entry.sha256 == sha256_of(weights) and entry.version == "0.0.1-smoke"
    assert entry.info["config"]["channels"] == [4, 8, 16, 16]
    metrics = json.loads((out / "mri-lesion-unet.metrics.json").read_text())
    assert metrics["held_out"]["cases"] == 1 and 0.0 <= metrics["held_out"]["mean_dice"] <= 1.0
    assert metrics["training"]["iterations"] == 3 and len(metrics["loss_history"]) == 1
    # the threshold is chosen on the validation series, then the test series is scored at it
    by_threshold = metrics["validation_mean_dice_by_threshold"]
    assert set(by_threshold) == {"0.4", "0.5"}
    assert metrics["threshold"] == float(max(by_threshold, key=lambda t: (by_threshold[t], -abs(float(t) - 0.5))))
    card = (out / "mri-lesion-unet.card.md").read_text()
    assert entry.sha256 in card and "held_out.mean_dice" in card and "seeds 910100..910100" in card
    assert "validation: 1 generated series, seeds 910200..910200 (chose the threshold" in card
    assert (out / "mri-lesion-unet.overlay.png").stat().st_size > 1000


def test_train_classifier_from_a_case_folder(tmp_path: Path) -> None:
    cases = [
        case_from_spec(MRSeriesSpec(rows=96, columns=96, slices=16, pixel_spacing_mm=2.0, lesions=2,
                                    labels=("benign", "malignant"), seed=911_000 + i), f"case{i}")
        for i in range(6)
    ]
    data = write_case_folder(cases, tmp_path / "cases")
    out = tmp_path / "models"
    proc = oncoagent(
        "--data-dir", str(tmp_path / "d"), "train", "classifier", "--data", str(data), "--population", "4",
        "--generations", "2", "--folds", "2", "--out", str(out), "--name", "svm-smoke", cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entry = resolve("svm-smoke", manifest=out / "manifest.json")
    assert entry.sha256 == sha256_of(out / "svm-smoke.joblib") and len(entry.info["radiomics_params_sha256"]) == 64
    metrics = json.loads((out / "svm-smoke.metrics.json").read_text())
    assert metrics["training"]["lesions"] == 10 and metrics["held_out"]["n"] == 2
    assert set(metrics["held_out"]) >= {"accuracy", "sensitivity", "specificity", "auc"}
    assert metrics["hyperparameters"]["kernel"] in {"rbf", "linear", "poly", "sigmoid"}
    assert len(metrics["ga_history"]) >= 1
    for figure in ("roc", "pca", "tsne"):
        assert (out / f"svm-smoke.{figure}.png").stat().st_size > 1000
    header = (out / "svm-smoke.train-features.csv").read_text().splitlines()[0]
    assert header == f"# radiomics_params_sha256={entry.info['radiomics_params_sha256']}"
    card = (out / "svm-smoke.card.md").read_text()
    assert "genetic algorithm" in card and "![svm-smoke.roc](svm-smoke.roc.png)" in card
    # the saved feature table trains again without extracting anything
    again = oncoagent(
        "--data-dir", str(tmp_path / "d"), "train", "classifier", "--features",
        str(out / "svm-smoke.train-features.csv"), "--population", "4", "--generations", "1", "--folds", "2",
        "--out", str(out), "--name", "svm-again", "--no-record", cwd=tmp_path,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert (out / "svm-again.joblib").is_file()
    assert "svm-again" not in json.loads((out / "manifest.json").read_text())
