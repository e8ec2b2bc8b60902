"""The shipped detector weights: registered with name, version and hash, small, and what the pipeline needs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.errors import ConfigError
from pipelines.models.registry import MODELS_DIR, ModelError, entry, record, resolve, sha256_of
from pipelines.wsi.pipeline import DEFAULT_MODEL, WsiCtcOptions, WsiCtcPipeline, overlap_for, tile_for


def test_shipped_weights_are_registered_with_their_hash_and_training_facts() -> None:
    found = resolve(DEFAULT_MODEL)
    assert found.path.parent == MODELS_DIR / "wsi"
    assert found.sha256 == sha256_of(found.path)
    assert found.path.stat().st_size < 10_000_000
    info = found.info
    assert info["architecture"] == "YOLO11N" and info["classes"] == ["CTC", "CTM"]
    assert info["mpp_um"] == 0.5 and info["imgsz"] % 32 == 0
    assert info["normalisation"]["kind"] == "zscore" and len(info["normalisation"]["std"]) == 3
    assert info["test_metrics"]["mAP50"] >= 0.95 and info["test_metrics"]["mAP50-95"] >= 0.88
    overlap_um = overlap_for(WsiCtcOptions(), info["mpp_um"], info["max_object_um"]) * info["mpp_um"]
    assert overlap_um >= info["max_object_um"]  # the default tile overlap holds the largest object
    assert (MODELS_DIR / "wsi" / info["card"]).exists()


def test_swapped_weights_are_refused(tmp_path: Path) -> None:
    shipped = entry(DEFAULT_MODEL)
    copy = tmp_path / "w.pt"
    shutil.copyfile(shipped.path, copy)
    manifest = tmp_path / "manifest.json"
    record("copy", "1", copy, dict(shipped.info), manifest=manifest)
    with copy.open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelError, match="refusing to load it"):
        resolve("copy", manifest)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        WsiCtcOptions(tile_px=500)
    with pytest.raises(ValueError, match="smaller than tile_px"):
        WsiCtcOptions(tile_px=256, overlap_px=256)
    with pytest.raises(ValueError, match="extra"):
        WsiCtcOptions.model_validate({"tile": 512})
    assert WsiCtcPipeline.name == "wsi-ctc" and WsiCtcPipeline.Options is WsiCtcOptions
    assert overlap_for(WsiCtcOptions(), 0.5, 90.0) == 192  # 180 px of cluster plus seam margins, in strides
    with pytest.raises(ConfigError, match="use larger tiles"):
        overlap_for(WsiCtcOptions(tile_px=192), 0.5, 90.0, 192)
    assert tile_for(WsiCtcOptions(), "cpu") == (512, 8) and tile_for(WsiCtcOptions(), "cuda:0") == (1024, 16)
    assert tile_for(WsiCtcOptions(tile_px=640, batch_size=2), "cpu") == (640, 2)
