"""One validated settings object, built from defaults < config file < environment < command line.

Each group of sections has its model in a module of its own; :class:`Settings` (``settings.py``) merges them
into the one object the daemon is handed, and ``loader.py`` builds it from the four layers. Everything is
importable from ``agent.config``:

* ``settings.py`` — :class:`Settings` with its own keys (``data_dir``, ``log``, ``store``, ``plugins``,
  ``pipelines``) and :class:`DataPaths`, the folders under the data directory;
* ``ingest.py`` — the ``ingest`` section (inbox and scanner folders, read by :mod:`agent.ingest`);
* ``dicom.py`` — ``scp`` with its ``tls``, ``destinations`` and ``outbox`` (read by :mod:`dicom_node`);
* ``jobs.py`` — ``executor`` and ``scheduler``;
* ``http.py`` — ``http`` (the ``/metrics`` and ``/healthz`` endpoint, read by :mod:`agent.ops`);
* ``web.py`` — ``web`` (the triage worklist, read by :mod:`agent.web`);
* ``retention.py`` — ``retention`` (what is purged, when; read by :mod:`agent.purge`);
* ``routing.py`` — ``routing`` rules and the job :class:`Priority`;
* ``loader.py`` — the layers, their merging and the error messages naming source and key;
* ``masking.py`` — the settings as plain data with secrets masked (``oncoagent config show``).
"""

from agent.config.batches import BatchSettings, CompareSettings, PacsSource, SchedulerSettings, SendResults, StoreSource
from agent.config.dicom import AllowedCaller, Destination, OutboxSettings, ScpSettings, TlsSettings
from agent.config.http import HttpSettings
from agent.config.ingest import IngestSettings
from agent.config.jobs import ExecutorSettings
from agent.config.loader import ENV_CONFIG_FILE, ENV_PREFIX, PROJECT_CONFIG, LoadedSettings, load_settings
from agent.config.masking import masked
from agent.config.retention import RetentionSettings
from agent.config.routing import DEFAULT_RULES, MatchValue, Priority, RoutingRule, RoutingSettings, RuleMatch
from agent.config.settings import DataPaths, LogSettings, Settings, StoreSettings
from agent.config.web import AuthMode, WebSettings

__all__ = [
    "DEFAULT_RULES",
    "ENV_CONFIG_FILE",
    "ENV_PREFIX",
    "PROJECT_CONFIG",
    "AllowedCaller",
    "AuthMode",
    "BatchSettings",
    "CompareSettings",
    "DataPaths",
    "Destination",
    "ExecutorSettings",
    "HttpSettings",
    "IngestSettings",
    "LoadedSettings",
    "LogSettings",
    "MatchValue",
    "OutboxSettings",
    "PacsSource",
    "Priority",
    "RetentionSettings",
    "RoutingRule",
    "RoutingSettings",
    "RuleMatch",
    "SchedulerSettings",
    "ScpSettings",
    "SendResults",
    "Settings",
    "StoreSettings",
    "StoreSource",
    "TlsSettings",
    "WebSettings",
    "load_settings",
    "masked",
]
