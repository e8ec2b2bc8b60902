"""What the DICOM node is configured with, as plain frozen dataclasses valid once constructed.

The daemon reads its configuration file (``agent.config``: the ``scp``, ``destinations`` and ``outbox``
sections) and hands the node these values (``agent.dicom_wiring``); the defaults here are the daemon's
defaults, so that tests and benchmarks can build an SCP with only what they change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from dicom_node.sop_classes import STORAGE_SOP_CLASSES

_AE_TITLE = re.compile(r"^[ -~]{1,16}$")  # PS3.5 AE VR: at most 16 characters of the default repertoire


def _check_ae_title(value: str, what: str) -> None:
    if not _AE_TITLE.match(value):
        raise ValueError(f"{what} {value!r} is not an AE title (1 to 16 printable ASCII characters)")


def _check_port(value: int, what: str, lowest: int) -> None:
    if not lowest <= value <= 65535:
        raise ValueError(f"{what} {value} is not a TCP port ({lowest} to 65535)")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, not {value}")


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS of an association (DICOM over TLS, PS3.15 B.1); off by default."""

    enabled: bool = False
    certificate: Path | None = None  # PEM certificate of this node
    private_key: Path | None = None  # PEM private key of this node
    ca_certificates: Path | None = None  # PEM bundle trusted for peers
    require_client_certificate: bool = False

    def __post_init__(self) -> None:
        if self.enabled and (self.certificate is None or self.private_key is None):
            raise ValueError("TLS needs a certificate and a private key")
        if self.require_client_certificate and self.ca_certificates is None:
            raise ValueError("verifying client certificates needs ca_certificates")


@dataclass(frozen=True, slots=True)
class AllowedCaller:
    """A calling AE title allowed to associate, from the given source addresses (empty: from any)."""

    ae_title: str
    hosts: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _check_ae_title(self.ae_title, "allowed calling AE title")


@dataclass(frozen=True, slots=True)
class ScpConfig:
    """The C-ECHO/C-STORE SCP: where it listens, whom it accepts, when it refuses."""

    host: str = "127.0.0.1"
    port: int = 11112  # 0: any free port (tests)
    ae_title: str = "ONCOAGENT"
    allowed_callers: tuple[AllowedCaller, ...] = ()  # empty: any calling AE title
    require_called_ae_title: bool = False
    max_associations: int = 10
    max_pending_connections: int = 64  # connected, A-ASSOCIATE-RQ not yet whole; when full the oldest goes
    min_free_disk_mb: int = 1024  # refuse new data below this free space
    acse_timeout_s: float = 30.0  # the TLS handshake and the whole A-ASSOCIATE-RQ (ARTIM)
    dimse_timeout_s: float = 60.0  # each whole message, from its first PDU
    network_timeout_s: float = 60.0  # idle between messages
    tls: TlsConfig = field(default_factory=TlsConfig)
    sop_classes: tuple[str, ...] = STORAGE_SOP_CLASSES  # storage SOP Class UIDs accepted (sop_classes.py)

    def __post_init__(self) -> None:
        if not self.sop_classes:
            raise ValueError("the SCP must accept at least one storage SOP class")
        _check_port(self.port, "SCP port", 0)
        _check_ae_title(self.ae_title, "SCP AE title")
        if self.max_associations < 1 or self.max_pending_connections < 1 or self.min_free_disk_mb < 0:
            raise ValueError("need max_associations >= 1, max_pending_connections >= 1 and min_free_disk_mb >= 0")
        _check_positive(acse_timeout_s=self.acse_timeout_s, dimse_timeout_s=self.dimse_timeout_s,
                        network_timeout_s=self.network_timeout_s)


@dataclass(frozen=True, slots=True)
class DestinationConfig:
    """A PACS the outbox sends to, by the name outbox entries carry."""

    name: str
    ae_title: str
    host: str
    port: int
    calling_ae_title: str | None = None  # None: the SCP's AE title
    tls: TlsConfig = field(default_factory=TlsConfig)

    def __post_init__(self) -> None:
        _check_ae_title(self.ae_title, f"destination {self.name} AE title")
        _check_port(self.port, f"destination {self.name} port", 1)
        if self.calling_ae_title is not None:
            _check_ae_title(self.calling_ae_title, f"destination {self.name} calling AE title")


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    """The outbox sender: its retry backoff (see :class:`pipelines.retry.RetryStrategy`), how often it looks
    for due entries and how long it waits on a peer."""

    max_attempts: int = 50
    backoff_base_s: float = 10.0
    backoff_max_s: float = 900.0
    scan_interval_s: float = 2.0
    timeout_s: float = 30.0  # association and DIMSE timeout

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        _check_positive(backoff_base_s=self.backoff_base_s, backoff_max_s=self.backoff_max_s,
                        scan_interval_s=self.scan_interval_s, timeout_s=self.timeout_s)
