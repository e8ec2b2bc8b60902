"""The DICOM network sections: ``scp`` (with its ``tls``), ``destinations`` (PACS to send to) and ``outbox``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.config.section import Section
from dicom_node.sop_classes import resolve_sop_classes

_AE_TITLE = r"^[ -~]{1,16}$"


class TlsSettings(Section):
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


class AllowedCaller(Section):
    ae_title: str = Field(pattern=_AE_TITLE)
    hosts: list[str] = Field(default_factory=list, description="source addresses; empty = any")


class ScpSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=11112, ge=0, le=65535)
    ae_title: str = Field(default="ONCOAGENT", pattern=_AE_TITLE)
    allowed_callers: list[AllowedCaller] = Field(
        default_factory=list, description="calling AE titles (and addresses) allowed to associate; empty = any"
    )
    require_called_ae_title: bool = False
    max_associations: int = Field(default=10, ge=1, le=1000)
    max_pending_connections: int = Field(
        default=64, ge=1, le=10000,
        description="connections that have not sent a whole A-ASSOCIATE-RQ; when full the oldest is refused",
    )
    min_free_disk_mb: int = Field(default=1024, ge=0, description="refuse new data below this free space")
    acse_timeout_s: float = Field(default=30.0, gt=0, description="TLS handshake and whole A-ASSOCIATE-RQ (ARTIM)")
    dimse_timeout_s: float = Field(
        default=60.0, gt=0,
        description="each whole message, from its first PDU; a large dataset earns a second per 64 KiB received")
    network_timeout_s: float = Field(default=60.0, gt=0, description="idle between messages")
    tls: TlsSettings = Field(default_factory=TlsSettings)
    sop_classes: Literal["all"] | list[str] = Field(
        default="all", description="storage SOP classes accepted: all standard ones, or a list of keywords "
        "(MRImageStorage) and UIDs that restricts them ('all' in the list adds the standard ones)"
    )

    @field_validator("sop_classes")
    @classmethod
    def _known_sop_classes(cls, value: str | list[str]) -> str | list[str]:
        resolve_sop_classes(value)  # ValueError names the entry it cannot read
        return value


class Destination(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    ae_title: str = Field(pattern=_AE_TITLE)
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae_title: str | None = Field(default=None, pattern=_AE_TITLE)
    send_results: bool = Field(default=True, description="queue every DICOM object a job writes")
    tls: TlsSettings = Field(default_factory=TlsSettings)


class OutboxSettings(Section):
    max_attempts: int = Field(default=50, ge=1)
    backoff_base_s: float = Field(default=10.0, gt=0)
    backoff_max_s: float = Field(default=900.0, gt=0)
    scan_interval_s: float = Field(default=2.0, gt=0)
    timeout_s: float = Field(default=30.0, gt=0, description="association and DIMSE timeout")
    lease_s: float = Field(
        default=600.0, ge=5, le=86400,
        description="the sender holds the due entries it took for a round this long (daemons sharing one store "
                    "never send one entry twice); an entry a dead daemon held is sent by another after it",
    )
