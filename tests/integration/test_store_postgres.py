"""The store on a real PostgreSQL server (tests/support/postgres.py, one per session, a database per test).

The store's SQL is written once for both backends, so its tests are too: the backend-neutral tests of
tests/unit (the store, retention, the audit table) are imported here and collected again, with the ``store`` and
``database_url`` fixtures overridden to give PostgreSQL databases; tests/unit stays fast and offline (SQLite
only), and a server starts only for this module. What only PostgreSQL has is tested below it: claimers in
several threads that pass over each other's locked rows (``FOR UPDATE SKIP LOCKED``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from agent.errors import StoreError
from agent.records import InputKind, Instance, JobStatus
from agent.store import EMPTY_FINGERPRINT, Store, inputs, migrations, schema
from agent.store.engine import read
from tests.support.postgres import PostgresServer
from tests.support.store_v5 import ROWS, create_legacy_database, rows
from tests.support.waiting import wait_for
from tests.unit.test_batch_runs import (  # noqa: F401  (collected again here, on PostgreSQL)
    test_a_batch_jobs_verdict_goes_to_the_newest_run_that_queued_it_once,
    test_a_daemon_that_restarts_interrupts_only_its_own_runs,
    test_a_run_whose_holder_is_gone_is_taken_over_and_the_old_holder_is_refused,
    test_a_slot_runs_once_and_its_record_says_what_and_who,
    test_an_input_is_taken_once_per_run_and_progress_comes_from_its_jobs,
    test_concurrent_daemons_firing_one_slot_record_one_run,
    test_latest_results_per_input_within_a_window,
)
from tests.unit.test_job_claims import (  # noqa: F401
    test_a_claim_names_its_daemon_and_holds_for_the_lease,
    test_a_daemon_puts_back_only_its_own_running_jobs,
    test_a_job_whose_lease_expired_is_claimed_again_and_only_its_new_owner_records_it,
    test_renewing_keeps_a_daemons_own_running_jobs_and_reports_the_lost_ones,
)
from tests.unit.test_ops_audit import (  # noqa: F401  (collected again here, on PostgreSQL)
    test_hostile_ae_titles_are_stored_escaped_and_bounded,
    test_records_come_back_newest_first_and_since_filters,
)
from tests.unit.test_outbox_claims import (  # noqa: F401
    test_a_dead_daemons_claims_lapse_for_the_others_and_its_restart_releases_them,
    test_a_sender_takes_back_its_own_unresolved_claims_at_once,
    test_entries_a_sender_claimed_are_not_due_for_another_until_resolved,
    test_retry_and_cancel_clear_a_claim,
)
from tests.unit.test_retention import (  # noqa: F401  (all but the SQLite-only version 3 database)
    test_a_failed_or_cancelled_outbox_entry_keeps_everything,
    test_a_job_without_outbox_entries_is_delivered_when_it_succeeded,
    test_a_purged_series_sent_again_is_new_and_processed_again,
    test_an_ignored_input_is_eligible_and_a_receiving_one_is_not,
    test_an_input_that_changed_since_it_was_listed_is_not_purged,
    test_high_water_purges_the_oldest_first_until_under_the_mark,
    test_nothing_younger_than_the_cutoff_is_eligible,
    test_queued_running_failed_and_cancelled_jobs_keep_their_inputs,
    test_results_are_eligible_only_once_every_outbox_entry_is_sent,
    test_results_kept_for_lack_of_patient_context_are_never_eligible,
)
from tests.unit.test_store import (  # noqa: F401
    test_a_batch_records_each_new_instance_once_and_grows_each_series_as_one_at_a_time_would,
    test_a_result_kept_locally_is_counted_listed_and_can_be_retried,
    test_claim_takes_stat_before_routine_and_oldest_first,
    test_duplicate_instance_is_idempotent_and_new_instance_changes_fingerprint,
    test_failure_retries_with_backoff_until_attempts_run_out,
    test_file_input_is_new_only_when_content_changes,
    test_forced_reprocess_requeues_a_succeeded_job,
    test_ignored_input_keeps_its_reason_and_counts,
    test_job_is_queued_once_per_content_and_version,
    test_permanent_failure_does_not_retry,
    test_receiving_inputs_respects_quiet_time,
    test_retry_and_cancel_only_from_the_right_states,
    test_running_jobs_are_requeued_without_using_an_attempt,
    test_succeed_requires_a_running_job,
    test_two_store_handles_share_one_database,
)
from tests.unit.test_store_migrations import (  # noqa: F401  (all but the SQLite-only WAL check)
    at_head,
    test_a_counter_newer_than_the_last_release_before_alembic_is_refused,
    test_a_database_from_a_newer_release_is_refused_unchanged,
    test_a_database_of_an_earlier_counter_version_is_upgraded_in_place,
    test_a_database_of_the_last_release_before_alembic_keeps_every_row,
    test_a_later_revision_that_rebuilds_a_referenced_table_keeps_every_row,
    test_a_new_database_reaches_head_matching_the_tables,
    test_a_revision_that_leaves_rows_referring_to_missing_ones_is_rolled_back,
)

LOCK_TIMEOUT = "&options=-c%20lock_timeout%3D20s"
"""Appended to a URL (whose query names the socket folder already): a statement that waits on a row lock fails
after 20 s instead of hanging, so a claim that blocks on another claimer's lock fails the test (a generous bound
for a loaded machine, not a timing goal)."""


@pytest.fixture
def database_url(postgres: PostgresServer) -> Callable[[str], str]:
    return postgres.new_database


@pytest.fixture
def store(database_url: Callable[[str], str]) -> Iterator[Store]:
    s = Store.open(database_url("store"))
    yield s
    s.close()


def queue_jobs(store: Store, count: int) -> list[int]:
    """``count`` more queued jobs, each on a slide of its own."""
    ids, first = [], store.counts()["slides"]
    for n in range(first, first + count):
        inp, _ = store.upsert_file_input(InputKind.SLIDE, Path(f"/slides/{n}.svs"), f"f{n}", {})
        ids.append(store.enqueue(inp.id, "p", "1")[0].id)
    return ids


def test_a_plain_postgresql_url_runs_on_psycopg_3_at_the_current_schema(store: Store) -> None:
    assert store.engine.dialect.name == "postgresql" and store.engine.dialect.driver == "psycopg"
    assert str(store.engine.url).startswith("postgresql+psycopg://")
    assert at_head(store)


@pytest.mark.parametrize("legacy", [False, True], ids=["new", "v5-with-rows"])
def test_daemons_starting_together_migrate_the_database_once(database_url: Callable[[str], str], legacy: bool) -> None:
    """Four stores migrate one database at once, a new one or one of the last release before Alembic: the
    advisory lock lets one migrate while the others wait, then find the database at head (without the lock
    this test does not pass: the stores' concurrent DDL collides)."""
    url = database_url("fresh")
    if legacy:
        create_legacy_database(url, version=5)
    before = rows(url)
    start = threading.Barrier(4)

    def open_and_migrate(_n: int) -> str:
        start.wait(timeout=60)
        store = Store.open(url, migrate=False)
        try:
            return store.migrate()
        finally:
            store.close()

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(open_and_migrate, range(4))) == [migrations.head()] * 4
    store = Store.open(url, migrate=False)
    try:
        assert at_head(store)  # one alembic_version row, the counter gone
        assert rows(url) == (before if legacy else {table: [] for table in ROWS})  # every row kept, none made twice
    finally:
        store.close()


def waiting_on_a_lock(store: Store) -> bool:
    """Whether a session of the store's database is waiting for a row lock another transaction holds."""
    with store.engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )).scalar_one())


def test_a_cancel_waits_for_a_claim_in_progress_and_then_refuses(store: Store) -> None:
    """A change decided on a row's state locks the row first: the cancel reads the job after the claim commits
    (running: refused), where reading first and writing later would mark a running job cancelled."""
    (job_id,) = queue_jobs(store, 1)
    with store.engine.connect() as claimer, ThreadPoolExecutor(1) as pool:
        claimer.begin()  # a claim between its update and its commit
        claimer.execute(update(schema.jobs).where(schema.jobs.c.id == job_id).values(status="running"))
        cancel = pool.submit(store.cancel, job_id)
        wait_for(lambda: waiting_on_a_lock(store), timeout=60, what="the cancel waiting for the claim's row lock")
        claimer.commit()
        with pytest.raises(StoreError, match="only queued jobs"):
            cancel.result(timeout=60)
    assert store.get_job(job_id).status is JobStatus.RUNNING


def test_instances_of_one_series_recorded_concurrently_are_all_counted(store: Store) -> None:
    """Two transactions growing one series: the second reads the count and fingerprint after the first commits
    (the series row is locked by the lookup), so neither instance is lost from them."""
    uids = ["1.3.1", "1.3.2", "1.3.3"]
    series = [Instance(uid, "1.2", "1.3", "1.3.0", Path(f"/s/{uid}.dcm"), 1, {}, "t") for uid in uids]
    store.add_instance(series[0])
    with store.engine.connect() as other, ThreadPoolExecutor(1) as pool:
        other.begin()  # another recorder, between growing the series and its commit
        found = inputs.find_series(other, series[1].series_uid)
        assert found is not None
        input_id, fingerprint, count = found
        inputs.instances_added(other, input_id, fingerprint, count, [uids[1]], time.time())
        third = pool.submit(store.add_instance, series[2])
        wait_for(lambda: waiting_on_a_lock(store), timeout=60, what="the recorder waiting for the series' row lock")
        other.commit()
        assert third.result(timeout=60) is True
    expected = EMPTY_FINGERPRINT
    for uid in uids:
        expected = inputs.xor_fingerprint(expected, uid)
    grown = store.find_input("1.3.0")
    assert grown is not None and (grown.instance_count, grown.fingerprint) == (3, expected)


def test_a_read_block_sees_one_snapshot(store: Store) -> None:
    """What :func:`agent.store.engine.read` promises on both backends: a write committed during the block is
    not seen by its later statements (``oncoagent status`` reads several counts in one block)."""
    queue_jobs(store, 1)
    count = select(func.count()).select_from(schema.jobs)
    with read(store.engine) as conn:
        before = conn.execute(count).scalar_one()
        queue_jobs(store, 1)  # committed on another connection meanwhile
        assert conn.execute(count).scalar_one() == before == 1
    assert store.counts()["jobs"]["queued"] == 2


def test_text_with_nul_characters_is_stored_escaped_not_refused(store: Store) -> None:
    """PostgreSQL refuses NUL in text: an exception message, a reason or a calling AE title carrying one is
    stored with it escaped, where a refusal would leave a job running or an instance unrecorded."""
    (job_id,) = queue_jobs(store, 1)
    assert store.claim() is not None
    failed = store.fail(job_id, "bad \x00 value")
    assert failed.status is JobStatus.FAILED and failed.last_error == "bad \\x00 value"
    assert store.events(job_id)[-1]["detail"] == "bad \\x00 value"
    store.mark_ignored(failed.input_id, "reason\x00")
    assert store.get_input(failed.input_id).reason == "reason\\x00"
    hostile = Instance("1.2.9.1", "1.2.840.10008.5.1.4.1.1.4", "1.2.9", "1.2.9.0", Path("/data/storage/1.dcm"), 10,
                       {"Modality": "MR\x00"}, "scp:EVIL\x00AE")
    assert store.add_instances([hostile]) == [True]  # the receive path's driver statements escape too
    with store.engine.connect() as conn:
        assert conn.execute(select(schema.instances.c.source)).scalar_one() == "scp:EVIL\\x00AE"
    assert store.find_input("1.2.9.0").attrs == {"Modality": "MR\x00"}  # type: ignore[union-attr]  # JSON keeps it


def test_long_import_folders_and_slide_paths_fit(store: Store) -> None:
    """PostgreSQL enforces VARCHAR lengths that SQLite ignores: an instance's source names its import folder and
    a slide's key is its path, both as long as the filesystem allows."""
    deep = Path("/" + "/".join(["folder-of-a-scanner-export"] * 60))
    inp, new = store.upsert_file_input(InputKind.SLIDE, deep / "a.svs", "f", {})
    assert new and store.find_input(str(deep / "a.svs")) == inp
    inst = Instance("1.2.8.1", "1.2", "1.2.8", "1.2.8.0", deep / "1.dcm", 10, {}, f"folder:{deep}")
    assert store.add_instances([inst]) == [True] and store.has_instance("1.2.8.1")


def test_an_instance_file_over_2_gib_is_recorded_with_its_size(store: Store) -> None:
    size = 5 * 2**30  # a whole-slide instance; PostgreSQL's INTEGER stops at 2 GiB, SQLite's does not
    big = Instance("1.2.7.1", "1.2", "1.2.7", "1.2.7.0", Path("/w.dcm"), size, {}, "t")
    assert store.add_instances([big]) == [True]
    with store.engine.connect() as conn:
        assert conn.execute(select(schema.instances.c.size)).scalar_one() == size


def test_a_claim_passes_over_a_job_another_claimer_holds_locked(database_url: Callable[[str], str]) -> None:
    url = database_url("locked")
    store = Store.open(url + LOCK_TIMEOUT)
    try:
        first, second = queue_jobs(store, 2)
        with store.engine.connect() as other:  # another claimer, between its SELECT … FOR UPDATE and its commit
            other.begin()
            held = other.execute(schema.jobs.select().where(schema.jobs.c.id == first).with_for_update()).first()
            assert held is not None
            claimed = store.claim()  # would wait on the lock (and fail at lock_timeout) without SKIP LOCKED
            assert claimed is not None and claimed.id == second
            assert store.claim() is None  # the only queued job left is locked: nothing to take now, no waiting
            other.rollback()
        again = store.claim()
        assert again is not None and again.id == first
    finally:
        store.close()


def test_concurrent_claimers_take_each_job_exactly_once(database_url: Callable[[str], str]) -> None:
    url = database_url("claims")
    setup = Store.open(url)
    jobs = queue_jobs(setup, 60)
    setup.close()
    claimers = [Store.open(url + LOCK_TIMEOUT, migrate=False) for _ in range(8)]
    start = threading.Barrier(len(claimers))

    def drain(store: Store) -> list[int]:
        start.wait(timeout=60)
        taken = []
        while (job := store.claim()) is not None:
            taken.append(job.id)
        return taken

    try:
        with ThreadPoolExecutor(len(claimers)) as pool:
            per_claimer = list(pool.map(drain, claimers))
        taken = [job_id for ids in per_claimer for job_id in ids]
        assert sorted(taken) == jobs  # every job, none twice
        final = claimers[0].list_jobs(limit=len(jobs))
        assert {(j.status, j.attempts) for j in final} == {(JobStatus.RUNNING, 1)}
        assert all([e["event"] for e in claimers[0].events(j)] == ["queued", "started"] for j in jobs)
    finally:
        for store in claimers:
            store.close()
