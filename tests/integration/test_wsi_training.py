"""``oncoagent train detector`` keeps working: one epoch on a tiny generated set (a smoke test, not accuracy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_one_epoch_on_a_tiny_generated_set_writes_weights_curves_metrics_card_and_manifest(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "model"
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "--data-dir", str(tmp_path / "d"), "train", "detector",
         "--data", str(data), "--generate", "3", "--epochs", "1", "--batch", "8", "--imgsz", "128", "--tile", "128",
         "--mpp", "2.0", "--dataloader-workers", "0", "--out", str(out), "--runs-dir", str(tmp_path / "runs"),
         "--register", "smoke-detector", "--version", "0.0.1"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1"},
        capture_output=True, text=True, check=False, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "test split: mAP50" in proc.stdout
    weights = out / "weights.pt"
    assert 1_000_000 < weights.stat().st_size < 20_000_000
    metrics = json.loads((out / "test_metrics.json").read_text())
    for view in ("pipeline_output", "model_only"):
        assert 0 <= metrics[view]["map50_95"] <= metrics[view]["map50"] <= 1
    assert len(metrics["pipeline_output"]["confidence_grid"]) == 100
    assert metrics["ctm_grouping"]["distance_px"] == 2.5  # 5 µm at 2 µm/px
    # the operating confidence is chosen on the validation split, and the test split is read at it
    chosen = round(metrics["validation_model_only"]["best_confidence"], 3)
    assert metrics["ctm_grouping"]["min_confidence"] == chosen
    assert abs(metrics["model_only"]["operating_confidence"] - chosen) <= 0.001
    assert (out / "pr_f1_curves.png").stat().st_size > 10_000
    card = (out / "MODEL_CARD.md").read_text()
    assert "mAP50" in card and "SGD" in card and "1 epoch(s) run" in card
    manifest = json.loads((out / "manifest.json").read_text())["smoke-detector"]
    assert manifest["version"] == "0.0.1" and len(manifest["sha256"]) == 64
    assert manifest["info"]["normalisation"]["kind"] == "zscore" and manifest["info"]["mpp_um"] == 2.0
    assert manifest["info"]["confidence_chosen_on"] == "val" and manifest["info"]["confidence"] == chosen
    dataset = json.loads((data / "yolo" / "dataset.json").read_text())
    assert [dataset["splits"][s]["slides"] for s in ("train", "val", "test")] == [1, 1, 1]
