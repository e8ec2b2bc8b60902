"""Per-process set-up shared by the CLI and worker processes: logging, pydicom reading mode, plugins."""

from __future__ import annotations

from collections.abc import Iterable

from pydicom import config as pydicom_config

from agent import logs
from agent.errors import ConfigError
from pipelines import registry
from pipelines.errors import PluginError


def prepare_process(log_level: str, log_format: str, plugins: Iterable[str] = ()) -> None:
    logs.configure(log_level, log_format)
    prepare_libraries(plugins)


def prepare_libraries(plugins: Iterable[str] = ()) -> None:
    """What running pipelines needs in any process (a Dask worker too, whose logging is its own)."""
    # Real vendor files break the standard's value rules (over-long SH, odd DS strings) all the time;
    # they are read as they are, never rejected or logged per element.
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    try:
        registry.load_plugins(plugins)
    except PluginError as exc:  # the config's plugins key named it: a configuration error of the daemon
        raise ConfigError(str(exc)) from exc
