"""The web worklist's store on a real PostgreSQL server (tests/support/postgres.py): the backend-neutral tests of
tests/unit/test_review_store.py collected again, plus what only PostgreSQL's concurrent writers can show: two
sign-offs of one review at once (one succeeds), reviewers opening or reopening a case at once (one new version),
and an account name taken by another writer between the check and the insert."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import insert

from agent.errors import ReviewStateError, UserExistsError
from agent.review_records import Review, ReviewStatus, Role
from agent.store import Store, schema
from tests.integration.test_store_postgres import waiting_on_a_lock
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_for
from tests.unit.test_review_store import (  # noqa: F401  (collected again here, on PostgreSQL)
    T0,
    succeeded_job,
    test_a_case_without_a_result_cannot_be_reviewed,
    test_a_new_password_replaces_the_hash_and_signs_the_account_out,
    test_a_note_is_kept_while_in_review_and_refused_once_signed,
    test_a_session_holds_until_it_expires_and_only_its_hash_is_stored,
    test_a_signed_review_refuses_every_change,
    test_accounts_are_unique_by_name_and_listed_by_name,
    test_decisions_are_upserted_per_target_undone_and_listed_in_target_order,
    test_disabling_an_account_ends_its_sessions_and_refuses_new_ones,
    test_opening_a_case_starts_version_1_held_by_the_first_reviewer,
    test_reopening_copies_the_decisions_to_version_2_and_keeps_version_1_signed,
    test_review_summaries_give_each_jobs_newest_version,
    test_signed_reviews_give_each_jobs_signed_version_since_a_time,
    test_signing_out_and_purging_expired_sessions,
    test_web_audit_events_come_back_oldest_first_with_hostile_text_escaped,
    user,
)

READERS = 4


@pytest.fixture
def database_url(postgres: PostgresServer) -> Callable[[str], str]:
    return postgres.new_database


@pytest.fixture
def store(database_url: Callable[[str], str]) -> Iterator[Store]:
    s = Store.open(database_url("store"))
    yield s
    s.close()


def together(store: Store, count: int, action: Callable[[Store, int], Any]) -> list[Any]:
    """``action`` run by ``count`` store handles on one database at once (released by one barrier), each on a
    connection of its own; what each returned or raised."""
    url = store.engine.url.render_as_string(hide_password=False)
    handles = [Store.open(url, migrate=False) for _ in range(count)]
    start = threading.Barrier(count)

    def run(n: int) -> Any:
        start.wait(timeout=60)
        try:
            return action(handles[n], n)
        except ReviewStateError as exc:
            return exc

    try:
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(run, range(count)))
    finally:
        for handle in handles:
            handle.close()


def test_of_concurrent_sign_offs_of_one_review_exactly_one_succeeds(store: Store) -> None:
    reviewers = [user(store, f"r{n}") for n in range(READERS)]
    review = store.start_review(succeeded_job(store), reviewers[0].id, T0)
    outcomes = together(store, READERS, lambda s, n: s.sign_off(review.id, reviewers[n].id, {"n": n}, None, T0 + n))
    signed = [o for o in outcomes if isinstance(o, Review)]
    refused = [o for o in outcomes if isinstance(o, ReviewStateError)]
    assert len(signed) == 1 and len(refused) == READERS - 1
    assert all("signed_off: it cannot be signed off" in str(e) for e in refused)
    assert store.latest_review(review.job_id) == signed[0]
    winner = [r.id for r in reviewers].index(signed[0].signed_by)  # type: ignore[arg-type]
    assert signed[0].status is ReviewStatus.SIGNED_OFF and signed[0].result == {"n": winner}


def test_reviewers_opening_a_new_case_at_once_share_one_version_1(store: Store) -> None:
    reviewers = [user(store, f"r{n}") for n in range(READERS)]
    job = succeeded_job(store)
    outcomes = together(store, READERS, lambda s, n: s.start_review(job, reviewers[n].id, T0 + n))
    opened = [o for o in outcomes if isinstance(o, Review)]
    assert len(opened) == READERS  # none failed on the unique (job, version)
    assert {(o.id, o.version) for o in opened} == {(opened[0].id, 1)}
    assert store.latest_review(job) == opened[0]


def test_reopening_a_case_twice_at_once_starts_one_version_2(store: Store) -> None:
    reviewers = [user(store, f"r{n}") for n in range(READERS)]
    job = succeeded_job(store)
    first = store.start_review(job, reviewers[0].id, T0)
    store.decide(first.id, "d:0", "confirmed", "CTC", None, "det-1.0", reviewers[0].id, T0 + 1)
    store.sign_off(first.id, reviewers[0].id, {"ctc": 1}, None, T0 + 2)
    outcomes = together(store, READERS, lambda s, n: s.reopen_review(job, reviewers[n].id, T0 + 10))
    reopened = [o for o in outcomes if isinstance(o, Review)]
    assert len(reopened) == 1 and reopened[0].version == 2
    assert all("version 2 is in_review" in str(o) for o in outcomes if isinstance(o, ReviewStateError))
    assert [d.target for d in store.decisions(reopened[0].id)] == ["d:0"]


def test_a_name_added_by_another_writer_since_the_check_is_refused_as_taken(store: Store) -> None:
    """The other insert of the name is not committed when this one checks the name (it finds none), so this
    insert waits on the unique index and then fails: that is told as the name being taken, not as a failure."""
    with store.engine.connect() as other, ThreadPoolExecutor(1) as pool:
        other.begin()
        other.execute(insert(schema.users).values(name="alice", role="viewer", created_at=T0))
        adding = pool.submit(store.add_user, "alice", Role.ADMIN, None, T0 + 1)
        wait_for(lambda: waiting_on_a_lock(store), timeout=60, what="the insert waiting on the other's name")
        other.commit()
        with pytest.raises(UserExistsError, match="'alice' exists already"):
            adding.result(timeout=60)
    assert [(u.name, u.role) for u in store.list_users()] == [("alice", Role.VIEWER)]
