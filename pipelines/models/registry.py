"""The weights registry: ``manifest.json`` files under ``pipelines/models/`` name every shipped model.

Each model family keeps its weights and manifest in its own folder (``wsi/``, ``mri/``); a name is looked up
in all of them. Each entry has a name, a version, a file (relative to ``pipelines/models/``, or absolute for a
user's own model) and the file's sha256. :func:`resolve` checks the hash before a pipeline loads the
weights, so a corrupted or swapped file is refused instead of silently producing other results. Every
result records the :class:`~pipelines.base.ModelRef` it used. Training entry points call :func:`record`
to add or replace an entry.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import OncoAgentError
from pipelines.base import ModelRef

MODELS_DIR = Path(__file__).resolve().parent

_lock = threading.Lock()
_verified: dict[tuple[Path, str], bool] = {}


class ModelError(OncoAgentError):
    """A model is missing from the manifest, its file is absent, or its hash does not match."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    file: str
    sha256: str
    info: dict[str, Any]

    @property
    def path(self) -> Path:
        p = Path(self.file)
        return p if p.is_absolute() else MODELS_DIR / p

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.name, self.version, self.sha256)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load(manifest: Path) -> dict[str, dict[str, Any]]:
    if not manifest.exists():
        return {}
    data: dict[str, dict[str, Any]] = json.loads(manifest.read_text(encoding="utf-8"))
    return data


def manifests() -> list[Path]:
    return sorted(MODELS_DIR.glob("*/manifest.json"))


def entry(name: str, manifest: Path | None = None) -> ModelEntry:
    searched = [manifest] if manifest is not None else manifests()
    for path in searched:
        raw = _load(path).get(name)
        if raw is not None:
            return ModelEntry(name, raw["version"], raw["file"], raw["sha256"], raw.get("info", {}))
    raise ModelError(f"model {name!r} is not in {', '.join(map(str, searched)) or 'any manifest'}")


def resolve(name: str, manifest: Path | None = None) -> ModelEntry:
    """The manifest entry for ``name`` after checking that its file exists and has the recorded hash."""
    found = entry(name, manifest)
    path = found.path
    if not path.is_file():
        raise ModelError(f"model {name} {found.version}: weights file {path} is missing")
    key = (path, found.sha256)
    with _lock:
        if not _verified.get(key):
            actual = sha256_of(path)
            if actual != found.sha256:
                raise ModelError(
                    f"model {name} {found.version}: {path.name} has sha256 {actual[:12]}…, "
                    f"the manifest records {found.sha256[:12]}…; refusing to load it"
                )
            _verified[key] = True
    return found


def record(name: str, version: str, weights: Path, info: dict[str, Any] | None = None,
           manifest: Path | None = None) -> ModelEntry:
    """Add or replace ``name`` with the weights' current hash, in ``manifest`` (default: the
    ``manifest.json`` beside the weights)."""
    manifest = manifest if manifest is not None else weights.resolve().parent / "manifest.json"
    weights = weights.resolve()
    try:
        file = str(weights.relative_to(MODELS_DIR))
    except ValueError:
        file = str(weights)
    with _lock:
        data = _load(manifest)
        data[name] = {"version": version, "file": file, "sha256": sha256_of(weights), "info": info or {}}
        manifest.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return entry(name, manifest)
