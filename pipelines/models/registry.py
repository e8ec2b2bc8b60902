"""The weights registry: ``manifest.json`` files name every model by name, version, file and sha256.

The shipped models are package data of ``pipelines.models`` (found through :mod:`importlib.resources`, so they
travel with an installed wheel): each model family keeps its weights and manifest in its own folder (``wsi/``,
``mri/``), and a name is looked up in all of them. An entry's file is named relative to its manifest's own
folder. A shipped manifest may name only files in or below its folder: an absolute path or one that leaves it
with ``..`` is refused with a :class:`ModelError`, so what ships never depends on the machine it was trained
on. A user's own manifest (passed explicitly, anywhere outside the shipped folder) may also name a file by its
absolute path.

:func:`resolve` checks the hash before a pipeline loads the weights, so a corrupted or swapped file is refused
instead of silently producing other results. Every result records the :class:`~pipelines.base.ModelRef` it
used. Training entry points call :func:`record` to add or replace an entry: it writes the path relative to the
manifest when the weights are in or below the manifest's folder, an absolute path otherwise, and refuses to
write an absolute path into a shipped manifest.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path, PureWindowsPath
from typing import Any

from pipelines.base import ModelRef
from pipelines.errors import PipelineError


class ModelError(PipelineError):
    """A model is missing from the manifest, its file is absent or misnamed, or its hash does not match."""


def _package_folder() -> Path:
    folder = files(__package__ or "pipelines.models")
    if not isinstance(folder, Path):  # e.g. imported from a zip: torch and joblib need real files
        raise ModelError(f"the shipped models are not in a folder on disk ({folder})")
    return folder.resolve()


MODELS_DIR = _package_folder()
"""The folder of the shipped manifests (one subfolder per model family)."""

_lock = threading.Lock()
_verified: dict[tuple[Path, str], bool] = {}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    file: str
    sha256: str
    info: dict[str, Any]
    manifest: Path

    @property
    def path(self) -> Path:
        p = Path(self.file)
        return p if p.is_absolute() else self.manifest.parent / p

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.name, self.version, self.sha256)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_shipped(manifest: Path, shipped_dir: Path = MODELS_DIR) -> bool:
    """Whether ``manifest`` lies under ``shipped_dir`` (the folder of the shipped models)."""
    return manifest.resolve().is_relative_to(shipped_dir.resolve())


def _load(manifest: Path) -> dict[str, dict[str, Any]]:
    if not manifest.exists():
        return {}
    data: dict[str, dict[str, Any]] = json.loads(manifest.read_text(encoding="utf-8"))
    return data


def manifests(shipped_dir: Path = MODELS_DIR) -> list[Path]:
    """The shipped manifests: ``manifest.json`` in each model family's folder."""
    return sorted(shipped_dir.glob("*/manifest.json"))


def _check_shipped_file(name: str, file: str, manifest: Path) -> None:
    lexical = PureWindowsPath(file)  # splits on both separators; its anchor catches "/x", "\\x" and "C:/x"
    if lexical.anchor:
        why = "an absolute path"
    elif ".." in lexical.parts:
        why = "a path that leaves the model folder"
    else:
        return
    raise ModelError(
        f"model {name!r} in shipped manifest {manifest}: file {file!r} is {why}; a shipped manifest names its "
        "file relative to its own folder"
    )


def entry(name: str, manifest: Path | None = None, *, shipped_dir: Path = MODELS_DIR) -> ModelEntry:
    """The entry for ``name`` in ``manifest`` (default: every shipped manifest), its file checked for form only.

    ``shipped_dir`` is the folder of the shipped manifests: the one searched by default, and under which a
    manifest must name its files relative to its own folder.
    """
    searched = [manifest] if manifest is not None else manifests(shipped_dir)
    for path in searched:
        raw = _load(path).get(name)
        if raw is not None:
            if is_shipped(path, shipped_dir):
                _check_shipped_file(name, raw["file"], path)
            return ModelEntry(name, raw["version"], raw["file"], raw["sha256"], raw.get("info", {}), path)
    raise ModelError(f"model {name!r} is not in {', '.join(map(str, searched)) or 'any manifest'}")


def resolve(name: str, manifest: Path | None = None, *, shipped_dir: Path = MODELS_DIR) -> ModelEntry:
    """The manifest entry for ``name`` after checking that its file exists and has the recorded hash."""
    found = entry(name, manifest, shipped_dir=shipped_dir)
    path = found.path
    if not path.is_file():
        raise ModelError(f"model {name} {found.version}: weights file {path} is missing")
    key = (path.resolve(), found.sha256)
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
           manifest: Path | None = None, *, shipped_dir: Path = MODELS_DIR) -> ModelEntry:
    """Add or replace ``name`` with the weights' current hash, in ``manifest`` (default: the
    ``manifest.json`` beside the weights).

    The file is written relative to the manifest's folder when the weights are in or below it, else as an
    absolute path, which a shipped manifest (one under ``shipped_dir``) refuses.
    """
    weights = weights.resolve()
    manifest = manifest if manifest is not None else weights.parent / "manifest.json"
    try:
        file = weights.relative_to(manifest.resolve().parent).as_posix()
    except ValueError:
        if is_shipped(manifest, shipped_dir):
            raise ModelError(
                f"model {name!r}: weights {weights} are outside the folder of shipped manifest {manifest}; "
                "copy them into that folder first"
            ) from None
        file = str(weights)
    with _lock:
        data = _load(manifest)
        data[name] = {"version": version, "file": file, "sha256": sha256_of(weights), "info": info or {}}
        manifest.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return entry(name, manifest, shipped_dir=shipped_dir)
