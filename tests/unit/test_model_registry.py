from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipelines.models.registry import MODELS_DIR, ModelError, entry, manifests, record, resolve, sha256_of


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


def test_every_shipped_model_resolves_by_name_to_a_file_inside_the_package() -> None:
    shipped = manifests()
    assert {m.parent.name for m in shipped} >= {"mri", "wsi"}
    for manifest in shipped:
        entries = json.loads(manifest.read_text(encoding="utf-8"))
        assert entries, f"{manifest} is empty"
        for name, raw in entries.items():
            found = resolve(name)  # by name alone, as a pipeline asks
            assert found.manifest == manifest, f"{name} is shadowed by {found.manifest}"
            assert found.path.resolve().is_relative_to(MODELS_DIR), f"{name} resolves to {found.path}"
            assert found.path.parent == manifest.parent and raw["file"] == found.path.name
            assert sha256_of(found.path) == raw["sha256"] == found.sha256


def _shipped_like(root: Path, name: str, file: str) -> Path:
    """A models folder laid out like the shipped one, with one ``family/manifest.json`` naming ``file``."""
    (root / "family").mkdir(parents=True)
    manifest = root / "family" / "manifest.json"
    manifest.write_text(json.dumps({name: {"version": "1", "file": file, "sha256": "0" * 64}}), encoding="utf-8")
    return manifest


@pytest.mark.parametrize(
    ("file", "why"),
    [("/somewhere/else/w.bin", "is an absolute path"), ("../elsewhere/w.bin", "leaves the model folder"),
     ("sub/../../w.bin", "leaves the model folder")],
)
def test_a_shipped_manifest_naming_a_file_outside_its_folder_is_refused(tmp_path: Path, file: str, why: str) -> None:
    models = tmp_path / "models"
    manifest = _shipped_like(models, "escaper", file)
    weights = models / "family" / "w.bin"
    weights.write_bytes(b"weights")
    refusal = rf"model 'escaper' in shipped manifest {re.escape(str(manifest))}: .*{why}"
    for found_by in ({}, {"manifest": manifest}):
        with pytest.raises(ModelError, match=refusal):
            resolve("escaper", **found_by, shipped_dir=models)
    # the same manifest outside the shipped folder is a user's own: the absolute path is theirs to choose
    user = entry("escaper", manifest, shipped_dir=tmp_path / "elsewhere")
    assert user.path == (Path(file) if Path(file).is_absolute() else manifest.parent / file)


def test_a_users_manifest_may_name_weights_anywhere(tmp_path: Path) -> None:
    weights = tmp_path / "training-run" / "w.bin"
    weights.parent.mkdir()
    weights.write_bytes(b"retrained")
    manifest = tmp_path / "deploy" / "manifest.json"
    manifest.parent.mkdir()
    recorded = record("mine", "2.0.0", weights, manifest=manifest, shipped_dir=tmp_path / "models")
    assert json.loads(manifest.read_text())["mine"]["file"] == str(weights.resolve())
    assert recorded.path == weights.resolve()
    assert resolve("mine", manifest, shipped_dir=tmp_path / "models").sha256 == sha256_of(weights)
    # weights beside (or below) the manifest are named relative to it, so the folder can move
    (tmp_path / "deploy" / "v2").mkdir()
    beside = tmp_path / "deploy" / "v2" / "w.bin"
    beside.write_bytes(b"retrained again")
    record("mine", "2.1.0", beside, manifest=manifest, shipped_dir=tmp_path / "models")
    assert json.loads(manifest.read_text())["mine"]["file"] == "v2/w.bin"
    moved = tmp_path / "moved"
    (tmp_path / "deploy").rename(moved)
    assert resolve("mine", moved / "manifest.json").path == moved / "v2" / "w.bin"


def test_record_writes_relative_names_into_a_shipped_manifest_and_refuses_absolute_ones(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "family").mkdir(parents=True)
    inside = models / "family" / "w.bin"
    inside.write_bytes(b"weights")
    recorded = record("shipped", "1.0.0", inside, shipped_dir=models)  # manifest beside the weights by default
    manifest = models / "family" / "manifest.json"
    assert json.loads(manifest.read_text())["shipped"]["file"] == "w.bin"
    assert recorded.manifest == manifest and resolve("shipped", shipped_dir=models).path == inside
    outside = tmp_path / "scratch" / "w.bin"
    outside.parent.mkdir()
    outside.write_bytes(b"other weights")
    refusal = rf"model 'other': weights {re.escape(str(outside))} are outside .*{re.escape(str(manifest))}"
    with pytest.raises(ModelError, match=refusal):
        record("other", "1.0.0", outside, manifest=manifest, shipped_dir=models)
    assert set(json.loads(manifest.read_text())) == {"shipped"}
