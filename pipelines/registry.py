"""Pipelines by name. Built-ins are named here and imported on first use; plugins call :func:`register`.

A pipeline class may declare ``Options``, a pydantic model of its settings; the config's
``pipelines.<name>`` mapping is validated against it (unknown keys are errors) and passed to the
constructor. A class without ``Options`` is constructed without arguments.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from pipelines.base import Pipeline
from pipelines.errors import PipelineNotFoundError, PipelineOptionsError, PluginError

PipelineFactory = Callable[..., Pipeline]

# name -> "module:ClassName"; imported lazily so that naming a pipeline never loads torch. A name whose
# module is not part of this build is not offered.
BUILTIN: dict[str, str] = {
    "inspect": "pipelines.inspect:InspectPipeline",
    "wsi-ctc": "pipelines.wsi.pipeline:WsiCtcPipeline",
    "mri-tumour": "pipelines.mri.pipeline:MriTumourPipeline",
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


def _builtin_available(name: str) -> bool:
    module_name = BUILTIN[name].partition(":")[0]
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:
        return False


def names() -> list[str]:
    return sorted({*(n for n in BUILTIN if _builtin_available(n)), *_registered})


def factory(name: str) -> PipelineFactory:
    if name in _registered:
        return _registered[name]
    if name in BUILTIN and _builtin_available(name):
        module_name, _, attr = BUILTIN[name].partition(":")
        cls: PipelineFactory = getattr(importlib.import_module(module_name), attr)
        return cls
    raise PipelineNotFoundError(f"no pipeline named {name!r} (known: {', '.join(names())})")


def options_model(name: str) -> type[BaseModel] | None:
    model = getattr(factory(name), "Options", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def validate_options(all_options: Mapping[str, Mapping[str, Any]]) -> dict[str, BaseModel]:
    """Validate ``pipelines.<name>`` option sections; PipelineOptionsError names the pipeline, key and expectation."""
    validated: dict[str, BaseModel] = {}
    for name, options in all_options.items():
        try:
            model = options_model(name)
        except PipelineNotFoundError as exc:
            raise PipelineOptionsError(f"pipelines.{name}: {exc}") from None
        if model is None:
            if options:
                raise PipelineOptionsError(f"pipelines.{name}: this pipeline takes no options")
            continue
        try:
            validated[name] = model.model_validate(dict(options))
        except ValidationError as exc:
            problems = "; ".join(
                f"pipelines.{name}.{'.'.join(map(str, e['loc']))}: "
                + ("unknown key" if e["type"] == "extra_forbidden" else f"expected {e['msg']}")
                for e in exc.errors()
            )
            raise PipelineOptionsError(problems) from None
    return validated


def version(name: str) -> str:
    """The version of pipeline ``name`` without constructing it."""
    version_value: object = getattr(factory(name), "version", None)
    if not isinstance(version_value, str):
        raise PipelineNotFoundError(f"pipeline {name!r} declares no version")
    return version_value


def make(name: str, options: Mapping[str, Any] | None = None) -> Pipeline:
    """A new instance of pipeline ``name`` with ``options`` (not the process's cached one: see :func:`get`)."""
    cls = factory(name)
    model = options_model(name)
    return cls(validate_options({name: options or {}})[name]) if model is not None else cls()


def get(name: str, options: Mapping[str, Any] | None = None) -> Pipeline:
    """The pipeline instance for ``name``, created once per process with its options (later calls get that
    instance, whatever options they pass)."""
    with _lock:
        if name not in _instances:
            _instances[name] = make(name, options)
        return _instances[name]


def load_plugins(modules: Iterable[str]) -> None:
    """Import plugin modules named in the config; each registers its pipelines on import."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise PluginError(f"plugins: cannot import {module!r} ({exc})") from exc
