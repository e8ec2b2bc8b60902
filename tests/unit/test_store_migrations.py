"""Schema migrations (Alembic, agent/store/migrations): a new database reaches the newest revision, a database of
a release before Alembic (the old ``schema_info`` counter, versions 1 to 5) is upgraded in place with every row
kept, a database newer than the code is refused. Backend-neutral: tests/integration/test_store_postgres.py runs
them again on PostgreSQL."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from agent.errors import StoreError
from agent.records import InputState, JobStatus, OutboxStatus
from agent.store import Store, migrations, schema
from agent.store.engine import migration
from tests.support.store_v5 import ROWS, create_legacy_database, rows
from tests.unit.test_store import instance


def differences(store: Store) -> list[object]:
    """What separates the database from agent/store/schema.py's tables (Alembic's autogenerate comparison)."""
    with store.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), schema.metadata))


def at_head(store: Store) -> bool:
    with store.engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        revisions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return revisions == [migrations.head()] and "schema_info" not in tables


def test_a_new_database_is_created_at_head_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = Store.open(f"sqlite:///{db}")
    assert store.migrate() == migrations.head()  # idempotent
    assert at_head(store) and differences(store) == []
    store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_new_database_reaches_head_matching_the_tables(database_url: Callable[[str], str]) -> None:
    store = Store.open(database_url("new"), migrate=False)
    try:
        assert store.migrate() == migrations.head() == "0006"
        assert at_head(store) and differences(store) == []
    finally:
        store.close()


def test_a_database_of_the_last_release_before_alembic_keeps_every_row(database_url: Callable[[str], str]) -> None:
    """The schema at ``schema_info`` version 5 with a row in every table that holds data: opened by the new
    store, every row is there as it was, and the schema is the newest revision's, the counter gone."""
    url = database_url("v5")
    create_legacy_database(url, version=5)
    before = rows(url)
    assert {table: len(found) for table, found in before.items()} == dict.fromkeys(ROWS, 1)
    store = Store.open(url)
    try:
        assert at_head(store) and differences(store) == []
        assert rows(url) == before
        inp = store.get_input(7)
        assert inp.state is InputState.ROUTED and inp.fingerprint == "f1" and inp.instance_count == 1
        job = store.get_job(11)
        assert job.status is JobStatus.SUCCEEDED and job.unsent_reason is None
        assert job.models == [{"name": "m", "version": "1"}]
        assert [e["event"] for e in store.events(11)] == ["succeeded"]
        (item,) = store.outbox_list()
        assert item.status is OutboxStatus.SENT and item.sop_instance_uid == "2.25.42" and item.job_id == 11
        (association,) = store.audit_list()
        assert association.calling_ae == "MODALITY" and association.instances_stored == 1
        # the new store writes beside the old rows: the old instance is known, a new one joins its series
        assert store.add_instance(instance("1.2.3.4.1")) is False
        assert store.add_instance(instance("1.2.3.4.2")) is True
        assert store.find_input("1.2.3.4").instance_count == 2
    finally:
        store.close()


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_a_database_of_an_earlier_counter_version_is_upgraded_in_place(
        database_url: Callable[[str], str], version: int) -> None:
    """Versions 1 to 4 lack what later ones added (outbox notes, unsent reasons, purge columns, the audit table):
    the old steps add it, rows intact, and the result is the same schema a new database gets."""
    url = database_url(f"v{version}")
    create_legacy_database(url, version=version)
    before = rows(url)
    store = Store(Store.open(url, migrate=False).engine)
    try:
        assert store.migrate() == migrations.head()
        assert at_head(store) and differences(store) == []
        after = rows(url)
        assert {table: [{k: row[k] for k in kept[0]} for row in after[table]] for table, kept in before.items()
                } == before
        assert store.get_job(11).unsent_reason is None and store.outbox_list()[0].note is None
        assert store.get_input(7).fingerprint == "f1"
        assert store.audit_list() == []
        # the purge columns came in empty: the input, its job succeeded and its SR sent, is eligible for retention
        assert [purge.input_id for purge in store.purgeable_inputs(time.time())] == [7]
    finally:
        store.close()


NEXT = f"{int(migrations.head()) + 1:04d}"  # the revision after the shipped head


def next_revision(tmp_path: Path, upgrade: str) -> Path:
    """A copy of the migrations with a revision NEXT after the head whose ``upgrade()`` runs ``upgrade``."""
    folder = tmp_path / "migrations"
    shutil.copytree(migrations.FOLDER, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "versions" / f"r{NEXT}_next.py").write_text(
        '"""The next revision."""\n\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f'revision = "{NEXT}"\ndown_revision = "{migrations.head()}"\nbranch_labels = None\ndepends_on = None\n\n\n'
        f"def upgrade() -> None:{upgrade}", encoding="utf-8")
    return folder


def test_a_later_revision_that_rebuilds_a_referenced_table_keeps_every_row(
        database_url: Callable[[str], str], tmp_path: Path) -> None:
    """A next revision changes a column of ``inputs``, which jobs, instances and events reference, run as the
    store runs migrations: SQLite's batch alteration copies ``inputs`` to a new table, drops the old one and
    renames the copy (refused with SQLite's foreign keys enforced, as the store's connections have them: the
    migration transaction checks them once, before it commits); PostgreSQL alters the column in place. Every
    row is kept, the references still point at ``inputs``, and SQLite enforces foreign keys again after."""
    folder = next_revision(tmp_path, """
    with op.batch_alter_table("inputs") as batch:
        batch.alter_column("kind", existing_type=sa.String(32), type_=sa.String(48), existing_nullable=False)
""")
    url = database_url("next")
    create_legacy_database(url, version=5)
    store = Store.open(url)
    try:
        before = rows(url)
        with migration(store.engine) as conn:  # the transaction Store.migrate runs migrations.upgrade in
            assert migrations.upgrade(conn, folder) == NEXT
        assert rows(url) == before
        with store.engine.connect() as conn:
            kind = next(c for c in inspect(conn).get_columns("inputs") if c["name"] == "kind")
            assert kind["type"].length == 48
            assert {fk["referred_table"] for fk in inspect(conn).get_foreign_keys("jobs")} == {"inputs"}
            if conn.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        assert store.get_job(11).input_id == 7 and store.get_input(7).fingerprint == "f1"
    finally:
        store.close()


def test_a_revision_that_leaves_rows_referring_to_missing_ones_is_rolled_back(
        database_url: Callable[[str], str], tmp_path: Path) -> None:
    """The foreign keys a migration transaction leaves are checked before it commits (on SQLite, where they
    are not enforced while it runs; PostgreSQL refuses at the statement): nothing of it stays."""
    folder = next_revision(tmp_path, """
    op.execute("DELETE FROM inputs WHERE id = 7")
""")
    url = database_url("dangling")
    create_legacy_database(url, version=5)
    store = Store.open(url)
    try:
        before = rows(url)
        with pytest.raises(StoreError, match=r"rows referring to missing rows|violates foreign key constraint"), \
                migration(store.engine) as conn:
            migrations.upgrade(conn, folder)
        assert rows(url) == before and at_head(store)  # still at the head of the shipped scripts
    finally:
        store.close()


def test_a_database_from_a_newer_release_is_refused_unchanged(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreError, match=rf"database schema 9999 is newer than this OncoAgent \({migrations.head()}\)"):
        store.migrate()
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "9999"


def test_a_counter_newer_than_the_last_release_before_alembic_is_refused(database_url: Callable[[str], str]) -> None:
    url = database_url("v6")
    create_legacy_database(url, version=5)
    store = Store.open(url, migrate=False)
    try:
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE schema_info SET version = 6"))
        with pytest.raises(StoreError, match="database schema v6 is newer than this OncoAgent"):
            store.migrate()
        with store.engine.connect() as conn:  # the failed migration's transaction left nothing behind
            assert "alembic_version" not in inspect(conn).get_table_names()
            assert conn.execute(text("SELECT version FROM schema_info")).scalar_one() == 6
    finally:
        store.close()
