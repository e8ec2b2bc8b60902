"""Failpoints (agent/failpoints.py): the trace a crash test reads its phases from, and the outbox points."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import failpoints
from agent.records import OutboxStatus
from agent.store import Store


def _names(trace: Path) -> list[str]:
    return [line.split()[2] for line in trace.read_text().splitlines()]


def test_unarmed_and_untraced_the_outbox_is_the_store_itself(store: Store) -> None:
    assert not failpoints.active()
    assert failpoints.outbox(store) is store
    failpoints.reached("outbox.before-sent")  # neither stops nor writes anything


def test_a_round_of_the_outbox_is_traced_from_its_start_to_its_last_entry(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "trace"
    monkeypatch.setattr(failpoints, "_trace", str(trace))
    first, _ = store.outbox_add("pacs", Path("/r/a.dcm"), "1.2", "2.25.1")
    second, _ = store.outbox_add("pacs", Path("/r/b.dcm"), "1.2", "2.25.2")
    outbox = failpoints.outbox(store)
    assert outbox is not store
    assert [e.id for e in outbox.outbox_claim()] == [first.id, second.id]
    outbox.outbox_sent(first.id, 0)
    assert _names(trace) == ["outbox.round-start", "outbox.before-sent", "outbox.after-sent"]
    outbox.outbox_failed(second.id, "peer gone", retry_at=None)
    assert _names(trace)[-1] == "outbox.round-end"
    assert {i.sop_instance_uid: i.status for i in store.outbox_list()} == {
        "2.25.1": OutboxStatus.SENT, "2.25.2": OutboxStatus.FAILED}
    assert outbox.outbox_claim() == [] and _names(trace)[-1] == "outbox.round-end"  # an empty round is no round


def test_each_trace_line_names_the_time_the_process_and_the_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "trace"
    monkeypatch.setattr(failpoints, "_trace", str(trace))
    failpoints.reached("results.before-pipeline")
    failpoints.reached("results.before-reports")
    lines = [line.split() for line in trace.read_text().splitlines()]
    assert [name for _, _, name in lines] == ["results.before-pipeline", "results.before-reports"]
    assert {pid for _, pid, _ in lines} == {str(os.getpid())}
    assert float(lines[0][0]) <= float(lines[1][0])
