"""When batch jobs may start (agent.batch_gate) and what claiming makes of it (agent.store.claims)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.batch_gate import BatchGate, window_minutes
from agent.config import Priority, load_settings
from agent.errors import ConfigError
from agent.store import Store
from tests.unit.test_store import slide_input


def at(hour: int, minute: int) -> float:
    """Today's local time hour:minute as epoch seconds."""
    now = time.localtime()
    return time.mktime((now.tm_year, now.tm_mon, now.tm_mday, hour, minute, 0, 0, 0, -1))


def test_a_window_across_midnight_is_open_late_and_early_and_closed_by_day() -> None:
    gate = BatchGate(None, window_minutes("20:00-06:00"))
    assert [gate.open_at(at(h, m)) for h, m in [(20, 0), (23, 59), (0, 0), (5, 59), (6, 0), (12, 0), (19, 59)]] == [
        True, True, True, True, False, False, False]
    day = BatchGate(None, window_minutes("09:30-17:00"))
    assert [day.open_at(at(h, m)) for h, m in [(9, 29), (9, 30), (16, 59), (17, 0)]] == [False, True, True, False]
    assert BatchGate(None, None).open_at(at(3, 0))


def test_batch_jobs_are_claimable_only_with_room_and_inside_the_window() -> None:
    gate = BatchGate(2, window_minutes("20:00-06:00"))
    assert gate.max_priority(1, at(22, 0)) is Priority.BATCH
    assert gate.max_priority(2, at(22, 0)) is Priority.ROUTINE  # batch_workers reached
    assert gate.max_priority(0, at(12, 0)) is Priority.ROUTINE  # outside the window
    assert BatchGate(None, None).max_priority(40, at(12, 0)) is Priority.BATCH


@pytest.mark.parametrize("window", ["20:00", "25:00-06:00", "20:00-06:60", "8:00-9:0", "20:00-20:00", "x-y"])
def test_a_malformed_window_is_a_configuration_error(tmp_path: Path, window: str) -> None:
    cfg = tmp_path / "oncoagent.yaml"
    cfg.write_text(f"executor:\n  batch_window: '{window}'\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={})
    assert "executor.batch_window" in str(err.value) and "HH:MM-HH:MM" in str(err.value)


def test_claims_below_routine_leave_batch_jobs_queued_and_their_due_time_out(store: Store) -> None:
    night, _ = store.enqueue(slide_input(store, "night.svs"), "p", "1", priority=Priority.BATCH)
    assert store.claim(max_priority=Priority.ROUTINE) is None
    assert store.next_due(Priority.ROUTINE) is None and store.next_due() == 0.0
    routine, _ = store.enqueue(slide_input(store, "day.svs"), "p", "1")
    taken = store.claim(max_priority=Priority.ROUTINE)
    assert taken is not None and taken.id == routine.id
    taken = store.claim()
    assert taken is not None and taken.id == night.id and taken.priority is Priority.BATCH
