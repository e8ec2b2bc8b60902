"""The one merged settings object, its own top-level keys (data directory, ``log``, ``store``, plugins and
pipeline options) and the folders under the data directory."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.config.batches import SchedulerSettings
from agent.config.dicom import Destination, OutboxSettings, ScpSettings
from agent.config.http import HttpSettings
from agent.config.ingest import IngestSettings
from agent.config.jobs import ExecutorSettings
from agent.config.retention import RetentionSettings
from agent.config.routing import RoutingSettings
from agent.config.section import Section, check_distinct
from agent.config.web import WebSettings


class LogSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["human", "json"] = "human"


class StoreSettings(Section):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; empty means SQLite at <data_dir>/oncoagent.db",
    )

    @field_validator("url")
    @classmethod
    def _known_backend(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(sqlite|postgresql)(\+\w+)?://", value):
            raise ValueError("a sqlite:// or postgresql:// URL")
        return value


class StorageSettings(Section):
    shared_root: Path | None = Field(
        default=None,
        description="a folder on a file system every host sees at this path (NFS): received instances "
                    "(storage/) and result folders (results/) go there instead of under the data directory, for "
                    "Dask workers and daemons on several hosts. Empty: under the data directory",
    )


class Settings(Section):
    data_dir: Path = Path("var")
    storage: StorageSettings = Field(default_factory=StorageSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    scp: ScpSettings = Field(default_factory=ScpSettings)
    destinations: list[Destination] = Field(default_factory=list)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    plugins: list[str] = Field(default_factory=list, description="modules that register extra pipelines")
    pipelines: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="options per pipeline name, validated by the pipeline's Options model"
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> Settings:
        if self.executor.backoff_max_s < self.executor.backoff_base_s:
            raise ValueError("executor.backoff_max_s must be >= executor.backoff_base_s")
        return self

    @model_validator(mode="after")
    def _batch_pacs_is_a_destination(self) -> Settings:
        known = {d.name for d in self.destinations}
        for batch in self.scheduler.batches:
            if batch.pacs is not None and batch.pacs.destination not in known:
                raise ValueError(f"scheduler.batches {batch.name}: pacs.destination {batch.pacs.destination!r} is "
                                 f"not among destinations ({', '.join(sorted(known)) or 'none configured'})")
        return self

    @field_validator("destinations")
    @classmethod
    def _unique_destinations(cls, destinations: list[Destination]) -> list[Destination]:
        check_distinct((d.name for d in destinations), "destination")
        return destinations

    @property
    def database_url(self) -> str:
        return self.store.url or f"sqlite:///{self.data_dir / 'oncoagent.db'}"

    @property
    def paths(self) -> DataPaths:
        return DataPaths(self.data_dir, self.storage.shared_root)


@dataclass(frozen=True)
class DataPaths:
    """The folders the daemon writes: under the data directory, except received instances and results, which go
    under ``storage.shared_root`` when one is set."""

    root: Path
    shared: Path | None = None  # storage.shared_root

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def storage(self) -> Path:
        return (self.shared or self.root) / "storage"

    @property
    def results(self) -> Path:
        return (self.shared or self.root) / "results"

    @property
    def shared_staging(self) -> Path:
        """Staging beside ``results/``, on its file system, where every host (a Dask worker) may build one."""
        return self.results / ".staging"

    @property
    def staging(self) -> Path:
        """Where this daemon's workers build result folders before renaming them into ``results/``: on the same
        file system. :attr:`shared_staging` when ``shared`` is set, else the daemon's own ``tmp/``."""
        return self.shared_staging if self.shared else self.tmp

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def lock(self) -> Path:
        return self.root / "oncoagent.lock"

    def create(self) -> None:
        for folder in (self.root, self.inbox, self.storage, self.results, self.quarantine, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
