"""Where the daemon wires the DICOM node: its ``scp``, ``destinations`` and ``outbox`` settings become the node's
plain settings (:mod:`dicom_node.settings`), and the SCP and the outbox sender are built on the store.

The node imports nothing of the daemon: the store is handed in as the node's collaborator protocols
(:class:`~dicom_node.records.InstanceRecords`, :class:`~dicom_node.records.Outbox`), which it satisfies
structurally. Every field is converted by name, so a setting added on one side and not the other fails
``tests/unit/test_dicom_wiring.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from agent import failpoints
from agent.config import Destination, OutboxSettings, ScpSettings, TlsSettings
from agent.errors import StoreError
from agent.store import Store
from dicom_node.records import AssociationObserver, InstanceRecords, Outbox, OutboxEntry
from dicom_node.scp import Received, StorageSCP
from dicom_node.scu import OutboxSender
from dicom_node.settings import AllowedCaller, DestinationConfig, OutboxConfig, ScpConfig, TlsConfig
from dicom_node.sop_classes import resolve_sop_classes

log = logging.getLogger(__name__)


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


class NamedOutbox:
    """The store as one daemon's outbox: its sender claims due entries under the daemon's name
    (``executor.node``) for ``outbox.lease_s``, so the senders of daemons sharing the store never take the
    same entry."""

    def __init__(self, store: Store, owner: str, lease_s: float) -> None:
        self.store = store
        self.owner = owner
        self.lease_s = lease_s
        self._unclaimed = False  # the store refuses writes: due entries are sent without a claim

    def outbox_claim(self) -> Sequence[OutboxEntry]:
        """The due entries, claimed; when the store refuses the claim (a full data disk) but can still be read,
        the due entries unclaimed: results keep reaching PACS (the sender keeps what it could not record), at
        the cost that another daemon on the same store might send one of them too."""
        try:
            claimed = self.store.outbox_claim(self.owner, self.lease_s)
        except StoreError as exc:
            if not self._unclaimed:
                log.warning("outbox entries cannot be claimed (%s); sending the due ones without a claim", exc)
            self._unclaimed = True
            return self.store.outbox_due(owner=self.owner)  # its own claims too: their release may have failed
        if self._unclaimed:
            log.info("outbox entries are claimed again")
        self._unclaimed = False
        return claimed

    def outbox_next_due(self) -> float | None:
        return self.store.outbox_next_due()

    def outbox_sent(self, item_id: int, status: int, /) -> object:
        self.store.outbox_sent(item_id, status)
        return None

    def outbox_failed(self, item_id: int, error: str, /, *, status: int | None = None,
                      retry_at: float | None = None) -> object:
        return self.store.outbox_failed(item_id, error, status=status, retry_at=retry_at)

    def outbox_substitute(self, item_id: int, path: Path, sop_class_uid: str, sop_instance_uid: str, note: str, /,
                          ) -> object:
        return self.store.outbox_substitute(item_id, path, sop_class_uid, sop_instance_uid, note)


def outbox_sender(outbox: Outbox, destinations: Iterable[Destination], settings: OutboxSettings,
                  calling_ae_title: str) -> OutboxSender:
    """The outbox sender over ``outbox`` (the store, or a :class:`NamedOutbox` of it) to the configured
    destinations; not running."""
    return OutboxSender(failpoints.outbox(outbox), [destination_config(d) for d in destinations],
                        outbox_config(settings), calling_ae_title)
