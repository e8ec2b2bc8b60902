"""Where the daemon wires the DICOM node: its ``scp``, ``destinations`` and ``outbox`` settings become the node's
plain settings (:mod:`dicom_node.settings`), and the SCP and the outbox sender are built on the store.

The node imports nothing of the daemon: the store is handed in as the node's collaborator protocols
(:class:`~dicom_node.records.InstanceRecords`, :class:`~dicom_node.records.Outbox`), which it satisfies
structurally. Every field is converted by name, so a setting added on one side and not the other fails
``tests/unit/test_dicom_wiring.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from agent import failpoints
from agent.config import Destination, OutboxSettings, ScpSettings, TlsSettings
from dicom_node.records import AssociationObserver, InstanceRecords, Outbox
from dicom_node.scp import Received, StorageSCP
from dicom_node.scu import OutboxSender
from dicom_node.settings import AllowedCaller, DestinationConfig, OutboxConfig, ScpConfig, TlsConfig
from dicom_node.sop_classes import resolve_sop_classes


def tls_config(tls: TlsSettings) -> TlsConfig:
    return TlsConfig(
        enabled=tls.enabled, certificate=tls.certificate, private_key=tls.private_key,
        ca_certificates=tls.ca_certificates, require_client_certificate=tls.require_client_certificate,
    )


def scp_config(scp: ScpSettings) -> ScpConfig:
    """The SCP's settings (``scp.enabled`` is the daemon's: it starts no SCP when it is off)."""
    return ScpConfig(
        host=scp.host, port=scp.port, ae_title=scp.ae_title,
        allowed_callers=tuple(AllowedCaller(c.ae_title, frozenset(c.hosts)) for c in scp.allowed_callers),
        require_called_ae_title=scp.require_called_ae_title, max_associations=scp.max_associations,
        max_pending_connections=scp.max_pending_connections,
        min_free_disk_mb=scp.min_free_disk_mb, acse_timeout_s=scp.acse_timeout_s,
        dimse_timeout_s=scp.dimse_timeout_s, network_timeout_s=scp.network_timeout_s, tls=tls_config(scp.tls),
        sop_classes=resolve_sop_classes(scp.sop_classes),
    )


def destination_config(destination: Destination) -> DestinationConfig:
    """A destination as the sender needs it (``send_results`` is the executor's: what it queues)."""
    return DestinationConfig(
        name=destination.name, ae_title=destination.ae_title, host=destination.host, port=destination.port,
        calling_ae_title=destination.calling_ae_title, tls=tls_config(destination.tls),
    )


def outbox_config(outbox: OutboxSettings) -> OutboxConfig:
    return OutboxConfig(
        max_attempts=outbox.max_attempts, backoff_base_s=outbox.backoff_base_s, backoff_max_s=outbox.backoff_max_s,
        scan_interval_s=outbox.scan_interval_s, timeout_s=outbox.timeout_s,
    )


def storage_scp(records: InstanceRecords, scp: ScpSettings, storage: Path,
                on_received: Callable[[Received], None] | None = None,
                observer: AssociationObserver | None = None) -> StorageSCP:
    """The C-STORE SCP recording into ``records`` (the store), writing under ``storage``, telling
    ``on_received`` of each instance stored and ``observer`` of each association; not started."""
    return StorageSCP(records, scp_config(scp), storage, on_received, observer)


def outbox_sender(outbox: Outbox, destinations: Iterable[Destination], settings: OutboxSettings,
                  calling_ae_title: str) -> OutboxSender:
    """The outbox sender over ``outbox`` (the store) to the configured destinations; not running."""
    return OutboxSender(failpoints.outbox(outbox), [destination_config(d) for d in destinations],
                        outbox_config(settings), calling_ae_title)
