"""The daemon's settings become the DICOM node's settings field for field (agent/dicom_wiring.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent.config import Destination, OutboxSettings, ScpSettings, TlsSettings
from agent.dicom_wiring import destination_config, outbox_config, scp_config, tls_config
from dicom_node.settings import AllowedCaller, DestinationConfig, OutboxConfig, ScpConfig, TlsConfig

TLS = TlsSettings(enabled=True, certificate=Path("/etc/oa/cert.pem"), private_key=Path("/etc/oa/key.pem"),
                  ca_certificates=Path("/etc/oa/ca.pem"), require_client_certificate=True)


@pytest.mark.parametrize(
    ("model", "config", "daemon_only"),
    [
        (TlsSettings, TlsConfig, set()),
        (ScpSettings, ScpConfig, {"enabled"}),  # the daemon starts no SCP when it is off
        (Destination, DestinationConfig, {"send_results"}),  # the executor's: what it queues
        (OutboxSettings, OutboxConfig, {"lease_s"}),  # the daemon's claims, not the sender's
    ],
)
def test_every_setting_reaches_the_node(model: type[BaseModel], config: type, daemon_only: set[str]) -> None:
    assert set(model.model_fields) - daemon_only == {f.name for f in dataclasses.fields(config)}


def test_defaults_are_the_daemons() -> None:
    assert tls_config(TlsSettings()) == TlsConfig()
    assert scp_config(ScpSettings()) == ScpConfig()
    assert outbox_config(OutboxSettings()) == OutboxConfig()


def test_values_are_carried_over() -> None:
    scp = ScpSettings(
        host="0.0.0.0", port=104, ae_title="ONCO", require_called_ae_title=True, max_associations=3,
        min_free_disk_mb=7, acse_timeout_s=1.5, dimse_timeout_s=2.5, network_timeout_s=3.5, tls=TLS,
        allowed_callers=[{"ae_title": "MR1"}, {"ae_title": "PACS", "hosts": ["10.0.0.1", "10.0.0.2"]}],
    )
    assert scp_config(scp) == ScpConfig(
        host="0.0.0.0", port=104, ae_title="ONCO", require_called_ae_title=True, max_associations=3,
        min_free_disk_mb=7, acse_timeout_s=1.5, dimse_timeout_s=2.5, network_timeout_s=3.5,
        allowed_callers=(AllowedCaller("MR1"), AllowedCaller("PACS", frozenset({"10.0.0.1", "10.0.0.2"}))),
        tls=TlsConfig(enabled=True, certificate=Path("/etc/oa/cert.pem"), private_key=Path("/etc/oa/key.pem"),
                      ca_certificates=Path("/etc/oa/ca.pem"), require_client_certificate=True),
    )
    destination = Destination(name="pacs", ae_title="PACS", host="pacs.local", port=11112,
                              calling_ae_title="ONCO2", send_results=False, tls=TLS)
    assert destination_config(destination) == DestinationConfig(
        name="pacs", ae_title="PACS", host="pacs.local", port=11112, calling_ae_title="ONCO2", tls=tls_config(TLS))
    outbox = OutboxSettings(max_attempts=5, backoff_base_s=1, backoff_max_s=9, scan_interval_s=0.5, timeout_s=4)
    assert outbox_config(outbox) == OutboxConfig(max_attempts=5, backoff_base_s=1, backoff_max_s=9,
                                                 scan_interval_s=0.5, timeout_s=4)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TlsConfig(enabled=True), "certificate and a private key"),
        (lambda: TlsConfig(require_client_certificate=True), "ca_certificates"),
        (lambda: ScpConfig(port=70000), "not a TCP port"),
        (lambda: ScpConfig(ae_title="A" * 17), "not an AE title"),
        (lambda: ScpConfig(network_timeout_s=0), "network_timeout_s must be positive"),
        (lambda: DestinationConfig(name="p", ae_title="P", host="h", port=0), "not a TCP port"),
        (lambda: OutboxConfig(max_attempts=0), "max_attempts must be at least 1"),
    ],
)
def test_node_settings_are_valid_once_constructed(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_sop_classes_accepted_are_all_standard_ones_or_those_listed() -> None:
    from pydicom import uid

    from dicom_node.sop_classes import STANDARD_STORAGE_SOP_CLASSES

    everything = scp_config(ScpSettings()).sop_classes
    assert everything == STANDARD_STORAGE_SOP_CLASSES
    for whole_study in (uid.MRImageStorage, uid.GrayscaleSoftcopyPresentationStateStorage,
                        uid.KeyObjectSelectionDocumentStorage, uid.VLWholeSlideMicroscopyImageStorage,
                        uid.ComprehensiveSRStorage, uid.TwelveLeadECGWaveformStorage):
        assert whole_study in everything
    assert "1.2.840.10008.1.1" not in everything  # Verification is not a storage class
    listed = ScpSettings(sop_classes=["MRImageStorage", "1.2.826.0.1.3680043.9.1234.1", "MRImageStorage"])
    assert scp_config(listed).sop_classes == (uid.MRImageStorage, "1.2.826.0.1.3680043.9.1234.1")
    extra = scp_config(ScpSettings(sop_classes=["all", "1.2.826.0.1.3680043.9.1234.1"])).sop_classes
    assert extra == (*STANDARD_STORAGE_SOP_CLASSES, "1.2.826.0.1.3680043.9.1234.1")


@pytest.mark.parametrize("value", [[], ["MRImage"], ["1.2.x"], "some"])
def test_unreadable_sop_classes_are_config_errors(value: object) -> None:
    with pytest.raises(ValueError, match="sop_classes"):
        ScpSettings(sop_classes=value)
    with pytest.raises(ValueError, match="at least one storage SOP class"):
        ScpConfig(sop_classes=())
