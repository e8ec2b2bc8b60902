"""One validated settings object, built from defaults < config file < environment < command line.

* Defaults are the field defaults below; ``config/oncoagent.yaml`` spells the same values out with comments.
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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.errors import ConfigError

ENV_PREFIX = "ONCOAGENT_"
ENV_CONFIG_FILE = "ONCOAGENT_CONFIG"
# config/oncoagent.yaml, installed as the package oncoagent_config (pyproject.toml maps the folder)
PROJECT_CONFIG = Path(str(files("oncoagent_config") / "oncoagent.yaml"))


class Priority(IntEnum):
    """Job priority; lower runs first (STAT before routine)."""

    STAT = 0
    URGENT = 1
    ROUTINE = 2


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["human", "json"] = "human"


class StoreSettings(_Section):
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


class ExecutorSettings(_Section):
    workers: int = Field(default=2, ge=1, le=64)
    max_attempts: int = Field(default=3, ge=1, le=100)
    backoff_base_s: float = Field(default=5.0, gt=0)
    backoff_max_s: float = Field(default=600.0, gt=0)
    job_timeout_s: float = Field(default=3600.0, gt=0)
    shutdown_grace_s: float = Field(default=5.0, ge=0, le=8, description="wait for running jobs on SIGTERM")
    poll_interval_s: float = Field(default=0.5, gt=0, le=10)


_AE_TITLE = r"^[ -~]{1,16}$"


class TlsSettings(_Section):
    enabled: bool = False
    certificate: Path | None = Field(default=None, description="PEM certificate of this node")
    private_key: Path | None = Field(default=None, description="PEM private key of this node")
    ca_certificates: Path | None = Field(default=None, description="PEM bundle trusted for peers")
    require_client_certificate: bool = False

    @model_validator(mode="after")
    def _complete(self) -> TlsSettings:
        if self.enabled and (self.certificate is None or self.private_key is None):
            raise ValueError("certificate and private_key when TLS is enabled")
        if self.require_client_certificate and self.ca_certificates is None:
            raise ValueError("ca_certificates to verify client certificates")
        return self


class AllowedCaller(_Section):
    ae_title: str = Field(pattern=_AE_TITLE)
    hosts: list[str] = Field(default_factory=list, description="source addresses; empty = any")


class ScpSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=11112, ge=0, le=65535)
    ae_title: str = Field(default="ONCOAGENT", pattern=_AE_TITLE)
    allowed_callers: list[AllowedCaller] = Field(
        default_factory=list, description="calling AE titles (and addresses) allowed to associate; empty = any"
    )
    require_called_ae_title: bool = False
    max_associations: int = Field(default=10, ge=1, le=1000)
    min_free_disk_mb: int = Field(default=1024, ge=0, description="refuse new data below this free space")
    acse_timeout_s: float = Field(default=30.0, gt=0)
    dimse_timeout_s: float = Field(default=60.0, gt=0)
    network_timeout_s: float = Field(default=60.0, gt=0)
    tls: TlsSettings = Field(default_factory=TlsSettings)


class Destination(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    ae_title: str = Field(pattern=_AE_TITLE)
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae_title: str | None = Field(default=None, pattern=_AE_TITLE)
    send_results: bool = Field(default=True, description="queue every DICOM object a job writes")
    tls: TlsSettings = Field(default_factory=TlsSettings)


class OutboxSettings(_Section):
    max_attempts: int = Field(default=50, ge=1)
    backoff_base_s: float = Field(default=10.0, gt=0)
    backoff_max_s: float = Field(default=900.0, gt=0)
    scan_interval_s: float = Field(default=2.0, gt=0)
    timeout_s: float = Field(default=30.0, gt=0, description="association and DIMSE timeout")


class IngestSettings(_Section):
    inbox: bool = Field(default=True, description="watch <data_dir>/inbox")
    folders: list[Path] = Field(default_factory=list, description="scanner folders, watched recursively")
    settle_seconds: float = Field(default=5.0, ge=0)
    scan_interval_s: float = Field(default=2.0, gt=0)
    quiet_seconds: float = Field(default=10.0, ge=0, description="a DICOM series is complete after this")
    max_wait_s: float = Field(
        default=600.0, ge=0, description="longest wait for a series to reach the instance count it declares"
    )
    watch_mode: Literal["auto", "events", "polling"] = Field(
        default="auto", description="file-system events with periodic rescans, or polling only (network shares)"
    )
    rescan_interval_s: float = Field(default=60.0, gt=0, description="full rescan of watched folders (events mode)")
    unopenable_grace_s: float | None = Field(
        default=None, ge=0, description="how long a settled file openslide cannot open may still be written "
        "(default: 3 x settle_seconds, at least 10 s); then it is quarantined"
    )
    filename_regex: str | None = Field(
        default=None, description="named groups (accession, patient_id, study_uid…) give a slide its context; "
        "matched on the file name, then on its path under the watched folder"
    )
    sidecar: bool = Field(default=True, description="read <slide>.json beside a slide for its context")

    @field_validator("filename_regex")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
        return value


MatchValue = str | int | float | list[str | int | float] | dict[str, str]


class RuleMatch(_Section):
    kind: Literal["dicom-series", "slide"] | None = None
    suffix: list[str] | None = None
    path_regex: str | None = None
    dicom: dict[str, MatchValue] = Field(default_factory=dict)
    min_slices: int | None = Field(default=None, ge=1)

    @field_validator("suffix")
    @classmethod
    def _lower_suffixes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if any(not s.startswith(".") for s in value):
            raise ValueError("suffixes that start with a dot, such as .svs")
        return [s.lower() for s in value]

    @field_validator("path_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            _compile(value)
        return value

    @field_validator("dicom")
    @classmethod
    def _dicom_keywords(cls, value: dict[str, MatchValue]) -> dict[str, MatchValue]:
        from pydicom.datadict import dictionary_VR, tag_for_keyword

        for keyword, expected in value.items():
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ValueError(f"DICOM keywords; {keyword!r} is not one")
            if dictionary_VR(tag) == "SQ":
                raise ValueError(f"non-sequence DICOM keywords; {keyword} is a sequence")
            if isinstance(expected, dict):
                if set(expected) != {"regex"}:
                    raise ValueError(f"{keyword}: a value, a list of values or {{regex: PATTERN}}")
                _compile(expected["regex"])
        return value


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"a valid regular expression ({exc})") from exc


class RoutingRule(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    pipeline: str
    priority: Literal["stat", "urgent", "routine"] = "routine"
    match: RuleMatch = Field(default_factory=RuleMatch)

    @property
    def priority_level(self) -> Priority:
        return Priority[self.priority.upper()]


DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {
        "name": "slides",
        "pipeline": "wsi-ctc",
        "match": {"kind": "slide", "suffix": [".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vms"]},
    },
    {"name": "dicom-slides", "pipeline": "wsi-ctc", "match": {"kind": "dicom-series", "dicom": {"Modality": "SM"}}},
    {
        "name": "mri",
        "pipeline": "mri-tumour",
        "match": {
            "kind": "dicom-series",
            "dicom": {"Modality": "MR", "SeriesDescription": {"regex": "."}},
            "min_slices": 8,
        },
    },
)


class RoutingSettings(_Section):
    rules: list[RoutingRule] = Field(default_factory=lambda: [RoutingRule(**r) for r in DEFAULT_RULES])

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[RoutingRule]) -> list[RoutingRule]:
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"unique rule names; repeated: {', '.join(dupes)}")
        return rules


class BatchSettings(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    cron: str = Field(description="crontab expression, e.g. '0 2 * * *' for 02:00 nightly")
    paths: list[Path]
    reprocess: bool = Field(default=False, description="run again even where a result exists")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"a crontab expression with five fields ({exc})") from exc
        return value


class SchedulerSettings(_Section):
    batches: list[BatchSettings] = Field(default_factory=list)


class Settings(_Section):
    data_dir: Path = Path("var")
    log: LogSettings = Field(default_factory=LogSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    scp: ScpSettings = Field(default_factory=ScpSettings)
    destinations: list[Destination] = Field(default_factory=list)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    plugins: list[str] = Field(default_factory=list, description="modules that register extra pipelines")
    pipelines: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="options per pipeline name, validated by the pipeline's Options model"
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> Settings:
        if self.executor.backoff_max_s < self.executor.backoff_base_s:
            raise ValueError("executor.backoff_max_s must be >= executor.backoff_base_s")
        return self

    @field_validator("destinations")
    @classmethod
    def _unique_destinations(cls, destinations: list[Destination]) -> list[Destination]:
        names = [d.name for d in destinations]
        if len(names) != len(set(names)):
            raise ValueError("unique destination names")
        return destinations

    @property
    def database_url(self) -> str:
        return self.store.url or f"sqlite:///{self.data_dir / 'oncoagent.db'}"

    @property
    def paths(self) -> DataPaths:
        return DataPaths(self.data_dir)


@dataclass(frozen=True)
class DataPaths:
    """Folders under the data directory; everything the daemon writes lives here."""

    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def results(self) -> Path:
        return self.root / "results"

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


# --------------------------------------------------------------------------------------------- loading


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


# --------------------------------------------------------------------------------------------- showing

_SECRET_KEYS = re.compile(r"password|secret|token|passphrase", re.IGNORECASE)


def masked(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with secrets (URL passwords, keys named like secrets) masked."""
    data: dict[str, Any] = _mask(settings.model_dump(mode="json"))
    return data


def _mask(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if _SECRET_KEYS.search(key) and value:
                out[key] = "***"
            else:
                out[key] = _mask(value)
        return out
    if isinstance(node, list):
        return [_mask(v) for v in node]
    if isinstance(node, str):
        return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", node)
    return node
