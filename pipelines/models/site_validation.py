"""Site-validation records: a lab's acceptance of one model's weights after measuring it on its own cases.

``oncoagent evaluate ... --accept`` writes one record per model (name and weights hash) into the daemon's data
folder, ``<data_dir>/site-validation/<name>-<sha256 prefix>.json``. A record names the evaluation's report, the
headline figures and who accepted it and when. Weights without a record (a new version, a swapped file, or no
evaluation at all) are *not validated at this site*: every output they contribute to says so
(:func:`validation_mark`). The record is keyed by the hash, not the version string, so retraining under the same
version number does not inherit an earlier acceptance.

Records are small JSON files written whole (temporary file, fsync, rename), so a crash never leaves half a
record, and reading them needs no store: reports, the worklist and the CLI see the same answer.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.base import ModelRef

FOLDER = "site-validation"
NOT_VALIDATED = "model not validated at this site"
GENERATED = "trained on generated data"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SiteValidation:
    """One model's acceptance at this site."""

    model: str
    version: str
    sha256: str
    accepted_by: str
    accepted_at: str  # ISO 8601, UTC
    report: str  # where the evaluation's HTML report was written
    cases: int
    metrics: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def records_dir(data_dir: Path) -> Path:
    return data_dir / FOLDER


def record_path(data_dir: Path, model: str, sha256: str) -> Path:
    return records_dir(data_dir) / f"{_SAFE.sub('_', model)}-{sha256[:16]}.json"


def write_record(data_dir: Path, record: SiteValidation) -> Path:
    """Write ``record`` whole (temporary file, fsync, rename) and return its path."""
    target = record_path(data_dir, record.model, record.sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp")
    with staging.open("w", encoding="utf-8") as fh:
        json.dump(record.as_dict(), fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(staging, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return target


def read_record(data_dir: Path, model: str, sha256: str) -> SiteValidation | None:
    """The record for exactly these weights, or None (absent, unreadable, or for other weights)."""
    path = record_path(data_dir, model, sha256)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        record = SiteValidation(**data)
    except (OSError, ValueError, TypeError):
        return None
    return record if record.model == model and record.sha256 == sha256 else None


def all_records(data_dir: Path) -> list[SiteValidation]:
    found: list[SiteValidation] = []
    for path in sorted(records_dir(data_dir).glob("*.json")):
        try:
            found.append(SiteValidation(**json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError):
            continue
    return found


def unvalidated(data_dir: Path, models: Iterable[ModelRef]) -> list[ModelRef]:
    """The models among ``models`` that have no record at this site."""
    return [m for m in models if read_record(data_dir, m.name, m.sha256) is None]


def trained_on_generated_data(model: ModelRef) -> bool:
    """Whether ``model`` is a shipped model (same name and weights) whose manifest says it was trained on
    generated data (``info.training_data``); a lab's own retrained weights are not."""
    from pipelines.models.registry import ModelError, entry

    try:
        found = entry(model.name)
    except ModelError:
        return False
    return found.sha256 == model.sha256 and found.info.get("training_data") == "generated"


def validation_mark(data_dir: Path, models: Iterable[ModelRef], generated: bool | None = None) -> str | None:
    """The line every output of these models carries while any of them is unvalidated, else None.

    ``generated`` says the unvalidated models were trained on generated data; by default the shipped
    manifests say so (:func:`trained_on_generated_data`).
    """
    missing = unvalidated(data_dir, models)
    if not missing:
        return None
    names = ", ".join(f"{m.name} {m.version}" for m in missing)
    if generated is None:
        generated = any(trained_on_generated_data(m) for m in missing)
    tail = f"; {GENERATED}" if generated else ""
    return f"{NOT_VALIDATED}{tail} ({names})"
