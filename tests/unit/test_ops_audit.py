"""The association audit trail: the store's table (hostile AE titles stored escaped, newest first, --since),
the batched writer (bounded: overflow is counted, not blocking), ``oncoagent audit list`` parsing."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.ops.audit import AuditTrail
from agent.ops.audit_commands import since
from agent.store import Store, migrations
from dicom_node.records import AssociationRecord, RefusalReason
from tests.support.store_v5 import create_legacy_database
from tests.support.waiting import wait_for


def record(calling: str = "MODALITY", started: float = 1000.0, refusal: RefusalReason | None = None,
           stored: int = 0) -> AssociationRecord:
    return AssociationRecord(calling, "ONCOAGENT", "10.0.0.7", started, started + 2.5, refusal,
                             "calling AE title 'X' is not in scp.allowed_callers" if refusal else "", stored)


def test_records_come_back_newest_first_and_since_filters(store: Store) -> None:
    assert store.audit_add([record(started=1000.0, stored=12), record("STRANGER", 2000.0, RefusalReason.CALLING_AE),
                            record("LATE", 3000.0, RefusalReason.TIMEOUT)]) == 3
    newest = store.audit_list()
    assert [r.calling_ae for r in newest] == ["LATE", "STRANGER", "MODALITY"]
    assert newest[2] == record(started=1000.0, stored=12)
    assert newest[1].refusal is RefusalReason.CALLING_AE and not newest[1].accepted
    assert [r.calling_ae for r in store.audit_list(since=2000.0)] == ["LATE", "STRANGER"]
    assert [r.calling_ae for r in store.audit_list(limit=1)] == ["LATE"]


def test_an_export_reads_oldest_first_from_since(store: Store) -> None:
    store.audit_add([record("LATE", 3000.0), record("FIRST", 1000.0), record("MIDDLE", 2000.0)])
    assert [r.calling_ae for r in store.audit_since(0.0)] == ["FIRST", "MIDDLE", "LATE"]
    assert [r.calling_ae for r in store.audit_since(2000.0)] == ["MIDDLE", "LATE"]
    assert [r.calling_ae for r in store.audit_since(0.0, limit=2)] == ["FIRST", "MIDDLE"]
    assert store.audit_since(3000.5) == []


def test_hostile_ae_titles_are_stored_escaped_and_bounded(store: Store) -> None:
    hostile = "EVIL\x00\x1b[31m\u200b\udcff" + "A" * 100
    store.audit_add([record(hostile, refusal=RefusalReason.CALLING_AE)])
    (back,) = store.audit_list()
    assert back.calling_ae.startswith("EVIL\\x00\\x1b[31m\\u200b\\udcff")
    assert back.calling_ae.isprintable() and len(back.calling_ae) == 64


def test_a_version_4_database_gains_the_audit_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v4.db'}"
    create_legacy_database(url, version=4)
    store = Store(Store.open(url, migrate=False).engine)
    assert store.migrate() == migrations.head()
    store.audit_add([record()])
    assert len(store.audit_list()) == 1
    store.close()


class SlowWriter:
    def __init__(self) -> None:
        self.batches: list[list[AssociationRecord]] = []

    def __call__(self, records: Sequence[AssociationRecord]) -> int:
        self.batches.append(list(records))
        return len(records)


def test_a_flood_overflows_the_bounded_queue_counted_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    writer = SlowWriter()
    dropped: list[int] = []
    trail = AuditTrail(writer, on_dropped=dropped.append, bound=3)
    with caplog.at_level(logging.WARNING, logger="agent.ops.audit"):
        for n in range(10):  # the writer thread is not started yet: nothing drains the queue
            trail.association_refused(record(f"FLOOD{n}", refusal=RefusalReason.CALLING_AE))
    assert sum(dropped) == 7
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1 and "dropped 1 association audit record" in warnings[0].getMessage()
    trail.start()
    wait_for(lambda: trail.written == 3, 10, what="the queued records written")
    assert [[r.calling_ae for r in batch] for batch in writer.batches] == [["FLOOD0", "FLOOD1", "FLOOD2"]]
    trail.stop()


def test_records_are_written_in_batches_and_the_accepted_event_writes_nothing(store: Store) -> None:
    trail = AuditTrail(store.audit_add, max_batch=50)
    trail.association_accepted(record("OPEN"))
    for n in range(120):
        trail.association_refused(record(f"R{n}", float(n), RefusalReason.PENDING_LIMIT))
    trail.association_ended(record("DONE", 500.0, stored=4))
    trail.start()
    wait_for(lambda: trail.written == 121, 10, what="every record written")
    trail.stop()
    rows = store.audit_list(limit=500)
    assert len(rows) == 121 and "OPEN" not in {r.calling_ae for r in rows}
    assert rows[0].calling_ae == "DONE" and rows[0].instances_stored == 4


def test_a_store_failure_drops_the_batch_and_the_writer_goes_on(tmp_path: Path) -> None:
    broken = Store.open(f"sqlite:///{tmp_path / 'unmigrated.db'}", migrate=False)  # no tables: every write fails
    dropped: list[int] = []
    trail = AuditTrail(broken.audit_add, on_dropped=dropped.append)
    trail.start()
    trail.association_refused(record(refusal=RefusalReason.TIMEOUT))
    wait_for(lambda: sum(dropped) == 1, 10, what="the failed batch counted")
    assert trail._thread.is_alive()
    trail.stop()
    broken.close()


@pytest.mark.parametrize(("text", "expected"), [
    ("30m", 10_000.0 - 1800), ("12h", 10_000.0 - 43_200), ("1.5d", 10_000.0 - 129_600), ("90s", 10_000.0 - 90),
    ("1970-01-02", 86_400.0), ("1970-01-01T01:00", 3600.0), ("1970-01-01T00:00:30Z", 30.0),
])
def test_since_takes_durations_and_utc_times(text: str, expected: float) -> None:
    assert since(text, now=10_000.0) == expected


def test_since_names_what_it_takes() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="30m, 12h, 7d"):
        since("yesterday")
