"""Outbox claims (agent.store.outbox.claim): the senders of several daemons on one store never take the same
entry. Each test uses two store handles on one database, one per daemon; tests/integration/test_store_postgres.py
runs them again on a real PostgreSQL server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.records import OutboxStatus
from agent.store import Store

LEASE_S = 60.0


def queue(store: Store, count: int) -> list[int]:
    return [store.outbox_add("pacs", Path(f"/r/{n}.dcm"), "1.2", f"2.25.{n}")[0].id for n in range(count)]


def test_entries_a_sender_claimed_are_not_due_for_another_until_resolved(daemons: tuple[Store, Store]) -> None:
    a, b = daemons
    ids = queue(a, 3)
    now = time.time()
    taken = a.outbox_claim("host-a", LEASE_S, now=now)
    assert [i.id for i in taken] == ids
    assert all(i.claimed_by == "host-a" and i.lease_until == pytest.approx(now + LEASE_S) for i in taken)
    assert b.outbox_claim("host-b", LEASE_S, now=now + 1) == [] and b.outbox_due(now=now + 1) == []
    a.outbox_sent(ids[0], 0)
    a.outbox_failed(ids[1], "peer busy", retry_at=now + 5)
    a.outbox_failed(ids[2], "refused for good", status=0xA900)
    items = {i.id: i for i in b.outbox_list()}
    assert [items[i].status for i in ids] == [OutboxStatus.SENT, OutboxStatus.PENDING, OutboxStatus.FAILED]
    assert all(items[i].claimed_by is None and items[i].lease_until is None for i in ids)
    assert [i.id for i in b.outbox_claim("host-b", LEASE_S, now=now + 6)] == [ids[1]]  # the retry, once due


def test_a_dead_daemons_claims_lapse_for_the_others_and_its_restart_releases_them(
        daemons: tuple[Store, Store]) -> None:
    a, b = daemons
    ids = queue(a, 2)
    now = time.time()
    assert len(a.outbox_claim("host-a", LEASE_S, now=now)) == 2  # then host-a dies mid-round
    assert b.outbox_next_due() == pytest.approx(now + LEASE_S)  # the other sender waits for the lease, not less
    assert [i.id for i in b.outbox_claim("host-b", LEASE_S, now=now + LEASE_S + 1)] == ids
    assert {i.claimed_by for i in a.outbox_list()} == {"host-b"}
    assert a.outbox_release("host-a") == 0  # host-a restarts: nothing of its own is left to release
    assert b.outbox_release("host-b") == 2
    assert [i.id for i in a.outbox_claim("host-a", LEASE_S)] == ids  # due at once after a release


def test_a_sender_takes_back_its_own_unresolved_claims_at_once(daemons: tuple[Store, Store]) -> None:
    a, b = daemons
    ids = queue(a, 2)
    now = time.time()
    a.outbox_claim("host-a", LEASE_S, now=now)
    a.outbox_sent(ids[0], 0)  # the round stopped before the second (the store refused a write, say)
    # read only (a store that refuses writes: the sender sends unclaimed), its own held entry is still its own
    assert [i.id for i in a.outbox_due(now=now + 1, owner="host-a")] == [ids[1]]
    assert a.outbox_due(now=now + 1) == []
    assert [i.id for i in a.outbox_claim("host-a", LEASE_S, now=now + 1)] == [ids[1]]
    assert b.outbox_claim("host-b", LEASE_S, now=now + 1) == []


def test_retry_and_cancel_clear_a_claim(daemons: tuple[Store, Store]) -> None:
    a, b = daemons
    first, second = queue(a, 2)
    a.outbox_claim("host-a", LEASE_S)
    a.outbox_failed(first, "refused for good")
    assert a.outbox_retry(first).claimed_by is None
    assert a.outbox_cancel(second).lease_until is None
    assert [i.id for i in b.outbox_claim("host-b", LEASE_S)] == [first]
