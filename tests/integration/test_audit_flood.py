"""A flood of refused associations against a real SCP while the audit trail's database writes are stalled:
every peer still hears its refusal at once (the accept path never waits for the store), the overflow past the
queue's bound is dropped and counted, and once the store answers again what was queued is written in one
batch."""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.ops.audit import AuditTrail
from agent.ops.metrics import DaemonMetrics
from agent.ops.wiring import Observers
from agent.store import Store
from dicom_node.records import AssociationRecord, RefusalReason
from dicom_node.scp import StorageSCP
from dicom_node.settings import AllowedCaller, ScpConfig
from tests.support.net import free_port
from tests.support.pdus import associate_rq, read_pdu
from tests.support.waiting import wait_for

A_ASSOCIATE_RJ = 0x03
BOUND = 50
FLOOD = 100


class StalledWrites:
    """The store's audit_add, held at its first call until released."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[int] = []

    def __call__(self, records: Sequence[AssociationRecord]) -> int:
        self.calls.append(len(records))
        self.entered.set()
        self.release.wait(60)
        return self.store.audit_add(records)


def sample(metrics: DaemonMetrics, name: str, **labels: str) -> float:
    text = generate_latest(metrics.registry).decode()
    return next(s.value for family in text_string_to_metric_families(text) for s in family.samples
                if s.name == name and s.labels == labels)


def refused_stranger(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(associate_rq(calling="STRANGER"))
        assert read_pdu(sock)[0] == A_ASSOCIATE_RJ


def test_a_flood_of_refusals_never_waits_for_the_store(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'scp.db'}")
    writes = StalledWrites(store)
    metrics = DaemonMetrics()
    trail = AuditTrail(writes, on_dropped=metrics.audit_dropped.inc, bound=BOUND)
    trail.start()
    settings = ScpConfig(port=free_port(), min_free_disk_mb=1, allowed_callers=(AllowedCaller("MODALITY"),))
    scp = StorageSCP(store, settings, tmp_path / "storage", observer=Observers(metrics, trail))
    scp.start()
    try:
        refused_stranger(settings.port)
        assert writes.entered.wait(10)  # the writer holds the first record; the store "hangs"
        for _ in range(FLOOD - 1):
            refused_stranger(settings.port)  # each answered although nothing can be written
        wait_for(lambda: trail.queued == BOUND, 10, what="the queue filled to its bound")
        # every refusal is counted (reported once its association thread is over, just after its A-ASSOCIATE-RJ)
        wait_for(lambda: sample(metrics, "oncoagent_dicom_associations_refused_total", reason="calling-ae") == FLOOD,
                 10, what="every refusal counted")
        wait_for(lambda: sample(metrics, "oncoagent_audit_records_dropped_total") == FLOOD - 1 - BOUND, 10,
                 what="the overflow counted")
        writes.release.set()
        wait_for(lambda: trail.written == 1 + BOUND, 10, what="the queued records written")
        assert writes.calls == [1, BOUND]  # the held record, then everything queued meanwhile in one batch
        rows = store.audit_list(limit=1000)
        assert len(rows) == 1 + BOUND and {r.refusal for r in rows} == {RefusalReason.CALLING_AE}
    finally:
        writes.release.set()
        scp.stop()
        trail.stop()
        store.close()
