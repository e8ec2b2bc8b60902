"""``oncoagent models``: the models the configured pipelines use, and whether each is validated at this site.

A model is validated at this site when its weights (name and sha256) have an acceptance record in the data
directory (``oncoagent evaluate … --accept`` writes it; :mod:`pipelines.models.site_validation`). Until then
every output it contributes to is marked "model not validated at this site" (:mod:`agent.site_marks`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from agent.config import LoadedSettings
from pipelines import registry
from pipelines.base import ModelRef
from pipelines.errors import PipelineError
from pipelines.models.site_validation import NOT_VALIDATED, SiteValidation, read_record


@dataclass(frozen=True)
class InstalledModel:
    ref: ModelRef
    pipelines: tuple[str, ...]
    validation: SiteValidation | None

    def status(self) -> str:
        record = self.validation
        if record is None:
            return NOT_VALIDATED
        return (f"validated at this site by {record.accepted_by} on {record.accepted_at} "
                f"({record.cases} cases; report {record.report})")

    def as_dict(self) -> dict[str, Any]:
        return {**self.ref.as_dict(), "pipelines": list(self.pipelines), "validated": self.validation is not None,
                "status": self.status(),
                "validation": self.validation.as_dict() if self.validation is not None else None}


def add_parser(sub: Any) -> None:
    models = sub.add_parser("models", help="the installed models and whether each is validated at this site")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(handler=cmd_models)


def installed(loaded: LoadedSettings) -> tuple[list[InstalledModel], list[str]]:
    """The models of every pipeline as configured (named from the manifests, not loaded), each once, with its
    site-validation record; and the pipelines whose models could not be named, with why."""
    settings = loaded.settings
    users: dict[ModelRef, list[str]] = {}
    problems: list[str] = []
    for name in registry.names():
        try:
            named = getattr(registry.make(name, settings.pipelines.get(name)), "installed_models", None)
            refs = named() if callable(named) else ()
        except PipelineError as exc:
            problems.append(f"{name}: {exc}")
            continue
        for ref in refs:
            users.setdefault(ref, []).append(name)
    found = [InstalledModel(ref, tuple(pipelines), read_record(settings.data_dir, ref.name, ref.sha256))
             for ref, pipelines in users.items()]
    return found, problems


def cmd_models(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    models, problems = installed(loaded)
    if args.json:
        print(json.dumps({"models": [m.as_dict() for m in models], "problems": problems}, indent=2))
        return 0
    for model in models:
        ref = model.ref
        print(f"{ref.name} {ref.version}  sha256 {ref.sha256[:16]}…  (used by {', '.join(model.pipelines)})")
        print(f"    {model.status()}")
    for problem in problems:
        print(f"cannot name the models of {problem}")
    if not models and not problems:
        print("no pipeline uses a model")
    return 0
