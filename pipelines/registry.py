"""Pipelines by name. Built-ins are named here and imported on first use; plugins call :func:`register`."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable

from agent.errors import ConfigError, PipelineNotFoundError
from pipelines.base import Pipeline

PipelineFactory = Callable[[], Pipeline]

# name -> "module:ClassName"; imported lazily so that naming a pipeline never loads torch.
BUILTIN: dict[str, str] = {
    "inspect": "pipelines.inspect:InspectPipeline",
}

_registered: dict[str, PipelineFactory] = {}
_instances: dict[str, Pipeline] = {}
_lock = threading.Lock()


def register(name: str, factory: PipelineFactory) -> None:
    """Register a pipeline factory under ``name`` (plugins use this; a name can be registered once)."""
    with _lock:
        if name in _registered or name in BUILTIN:
            raise ValueError(f"pipeline {name!r} is already registered")
        _registered[name] = factory


def names() -> list[str]:
    return sorted({*BUILTIN, *_registered})


def get(name: str) -> Pipeline:
    """The pipeline instance for ``name``, created once per process."""
    with _lock:
        if name in _instances:
            return _instances[name]
        if name in _registered:
            pipeline = _registered[name]()
        elif name in BUILTIN:
            module_name, _, attr = BUILTIN[name].partition(":")
            pipeline = getattr(importlib.import_module(module_name), attr)()
        else:
            raise PipelineNotFoundError(f"no pipeline named {name!r} (known: {', '.join(names())})")
        _instances[name] = pipeline
        return pipeline


def load_plugins(modules: Iterable[str]) -> None:
    """Import plugin modules named in the config; each registers its pipelines on import."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"plugins: cannot import {module!r} ({exc})") from exc
