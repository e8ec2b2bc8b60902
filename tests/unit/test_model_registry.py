from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.models.registry import ModelError, record, resolve, sha256_of


def test_recorded_model_resolves_with_its_hash(tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights v1")
    manifest = tmp_path / "manifest.json"
    entry = record("det", "1.0.0", weights, {"classes": ["CTC", "CTM"]}, manifest=manifest)
    assert entry.sha256 == sha256_of(weights)
    got = resolve("det", manifest=manifest)
    assert got.path == weights and got.ref.version == "1.0.0" and got.info["classes"] == ["CTC", "CTM"]


def test_swapped_or_missing_weights_are_refused(tmp_path: Path) -> None:
    weights = tmp_path / "w2.bin"
    weights.write_bytes(b"original")
    manifest = tmp_path / "manifest.json"
    record("det2", "1.0.0", weights, manifest=manifest)
    weights.write_bytes(b"tampered")
    with pytest.raises(ModelError, match="refusing to load it"):
        resolve("det2", manifest=manifest)
    weights.unlink()
    with pytest.raises(ModelError, match="is missing"):
        resolve("det2", manifest=manifest)
    with pytest.raises(ModelError, match="not in"):
        resolve("nope", manifest=manifest)
