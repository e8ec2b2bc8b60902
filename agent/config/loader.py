"""Loading the settings: defaults < config file < environment < command line, and the error messages.

* Defaults are the field defaults of the section models; ``config/oncoagent.yaml`` spells the same values out
  with comments.
* The config file is ``--config PATH``, else ``$ONCOAGENT_CONFIG``, else the shipped ``config/oncoagent.yaml``
  (package data of ``oncoagent_config``, so an installed wheel has it too).
* The environment overrides single keys: ``ONCOAGENT_EXECUTOR__WORKERS=4`` sets ``executor.workers``
  (sections joined by a double underscore; values are read as YAML scalars, so ``true``, ``4`` and
  ``[a, b]`` work).
* Command-line flags override last.

Any unknown key or wrong value fails with a :class:`~agent.errors.ConfigError` naming the source (file path,
environment variable or flag), the dotted key and what was expected.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from agent.config.settings import Settings
from agent.errors import ConfigError

ENV_PREFIX = "ONCOAGENT_"
ENV_CONFIG_FILE = "ONCOAGENT_CONFIG"
# config/oncoagent.yaml, installed as the package oncoagent_config (pyproject.toml maps the folder)
PROJECT_CONFIG = Path(str(files("oncoagent_config") / "oncoagent.yaml"))


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    config_file: Path | None
    sources: Mapping[tuple[str, ...], str]


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedSettings:
    """Build the settings from the four layers; raise ConfigError naming the offending source and key."""
    environ = os.environ if environ is None else environ
    path = _config_path(config_file, environ)
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        layers.append((str(path), _read_yaml(path)))
    layers.append(("environment", _env_layer(environ)))
    if overrides:
        layers.append(("command line", _nest(dict(overrides))))

    merged: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    for name, layer in layers:
        _merge(merged, layer, name, (), sources)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources, path)) from None
    if not settings.data_dir.is_absolute():
        settings = settings.model_copy(update={"data_dir": Path.cwd() / settings.data_dir})
    return LoadedSettings(settings, path, sources)


def _config_path(config_file: Path | None, environ: Mapping[str, str]) -> Path | None:
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file}: not found or not a file")
        return config_file
    if environ.get(ENV_CONFIG_FILE):
        return _config_path(Path(environ[ENV_CONFIG_FILE]), {})
    return PROJECT_CONFIG if PROJECT_CONFIG.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
    return data


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_FILE:
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__")]
        if not all(keys):
            raise ConfigError(f"environment {name}: malformed name (sections are joined by '__')")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        node = layer
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return layer


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        if value is None:
            continue
        keys = dotted.split(".")
        node = nested
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return nested


def _merge(
    into: dict[str, Any],
    layer: Mapping[str, Any],
    source: str,
    prefix: tuple[str, ...],
    sources: dict[tuple[str, ...], str],
) -> None:
    for key, value in layer.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value, source, path, sources)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value
        sources[path] = source


def _source_of(loc: tuple[str, ...], sources: Mapping[tuple[str, ...], str]) -> str:
    for end in range(len(loc), 0, -1):
        if loc[:end] in sources:
            return sources[loc[:end]]
    return "defaults"


def _field_names(loc: tuple[str, ...]) -> list[str]:
    """Field names of the settings section at ``loc`` (list indices skipped), for suggestions."""
    model: Any = Settings
    for part in loc:
        if part.isdigit():
            continue
        fields = getattr(model, "model_fields", None)
        field = fields.get(part) if isinstance(fields, dict) else None
        if field is None:
            return []
        annotation = field.annotation
        inner = getattr(annotation, "__args__", None)
        model = inner[0] if inner else annotation
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _describe(exc: ValidationError, sources: Mapping[tuple[str, ...], str], path: Path | None) -> str:
    lines = []
    for error in exc.errors():
        loc = tuple(str(p) for p in error["loc"])
        key = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc).lstrip(".") or "(top level)"
        source = _source_of(loc, sources)
        if source == "environment":
            source = "environment " + ENV_PREFIX + "__".join(p.upper() for p in loc if not p.isdigit())
        if error["type"] == "extra_forbidden":
            what = "unknown key"
            close = difflib.get_close_matches(loc[-1], _field_names(loc[:-1]), n=1)
            if close:
                what += f" (did you mean {close[0]!r}?)"
        else:
            msg = error["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
            what = f"expected {msg}"
            if "input" in error and not isinstance(error["input"], dict | list):
                what += f", got {error['input']!r}"
        lines.append(f"{source}: {key}: {what}")
    head = "invalid configuration" + (f" (config file {path})" if path else "")
    return head + "\n  " + "\n  ".join(lines)
