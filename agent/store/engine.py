"""The store's database: opening it, its read and write transactions, schema migration, and the differences
between SQLite and PostgreSQL, kept together in one visible spot.

SQLite (WAL, synchronous=FULL, immediate write transactions) by default; PostgreSQL (psycopg 3) by URL. Every
concept module of :mod:`agent.store` runs its SQL inside :func:`write` or :func:`read`, which turn database
errors into :class:`~agent.errors.StoreError`. The SQL is the same on both; where PostgreSQL's concurrent
writers need row locks that SQLite's single writer does not (:func:`for_claim`, :func:`locked`), the clause is
written once and SQLite's compiler drops it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Select, create_engine, event, func, make_url, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.sql import ColumnElement

from agent.errors import StoreError
from agent.store import migrations

log = logging.getLogger(__name__)

_Query = TypeVar("_Query", bound=Select[Any])

ERROR_TEXT_LIMIT = 4000
"""Longest error, reason or note text stored; longer ones are cut."""

MIGRATION_LOCK = 0x6F6E636F  # PostgreSQL advisory lock key of schema migrations ("onco")


def open_engine(url: str) -> Engine:
    """An engine for ``url``, with SQLite's folder created and its connections configured.

    A plain ``postgresql://`` URL runs on psycopg 3 (the driver the lock pins; SQLAlchemy's own default for that
    scheme is psycopg2, which is not installed); a URL naming its driver keeps it.
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed, future=True, pool_pre_ping=parsed.get_backend_name() != "sqlite")
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


# ------------------------------------------------------------------------------------------- transactions


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction (``BEGIN IMMEDIATE`` on SQLite), committed when the block ends without an error."""
    try:
        with engine.begin() as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise StoreError(f"job store write failed: {exc.__class__.__name__}: {getattr(exc, 'orig', exc)}") from exc


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """A read transaction (a deferred ``BEGIN`` on SQLite): one consistent snapshot for the block.

    On PostgreSQL that takes ``REPEATABLE READ``: its default, ``READ COMMITTED``, gives every statement a
    snapshot of its own, so the counts of one status page could disagree with each other."""
    try:
        with engine.connect() as plain:
            options: dict[str, Any] = {"oncoagent_readonly": True}
            if engine.dialect.name == "postgresql":
                options["isolation_level"] = "REPEATABLE READ"
            conn = plain.execution_options(**options)
            with conn.begin():
                yield conn
    except SQLAlchemyError as exc:
        raise StoreError(f"job store read failed: {exc.__class__.__name__}: {getattr(exc, 'orig', exc)}") from exc


def ping(engine: Engine) -> None:
    """Run a trivial read; raises StoreError when the database does not answer."""
    with read(engine) as conn:
        conn.exec_driver_sql("SELECT 1").scalar_one()


def insert_id(conn: Connection, statement: Any) -> int:
    """Run an INSERT and return the new row's id."""
    key = conn.execute(statement).inserted_primary_key
    if key is None:
        raise StoreError("the database returned no id for a new row")
    return int(key[0])


def grouped(conn: Connection, column: Any) -> dict[str, int]:
    """Row counts by the values of ``column``."""
    return {key: count for key, count in conn.execute(select(column, func.count()).group_by(column))}


# ------------------------------------------------------------------------------------------- migrations


def migrate(engine: Engine) -> str:
    """Create or upgrade the schema to the newest Alembic revision (:mod:`agent.store.migrations`) in one
    :func:`migration` transaction; return the revision now in force."""
    with migration(engine) as conn:
        return migrations.upgrade(conn)


@contextmanager
def migration(engine: Engine) -> Iterator[Connection]:
    """The write transaction of a schema migration, one migrating process at a time.

    On SQLite, foreign keys are not enforced while it runs and are checked whole before it commits: a revision
    may rebuild a table that others reference (Alembic's batch mode copies it, drops the original and renames
    the copy), which SQLite's checks would refuse at the drop. That pragma has no effect inside a transaction,
    so it is switched off before ``BEGIN`` and back on after, on this connection only."""
    try:
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                _sqlite_pragma(conn, "foreign_keys = OFF")
            try:
                with conn.begin():
                    _one_migration_at_a_time(conn)
                    yield conn
                    if sqlite:
                        _no_dangling_references(conn)
            finally:
                if sqlite:
                    _sqlite_pragma(conn, "foreign_keys = ON")
    except SQLAlchemyError as exc:
        raise StoreError(f"job store migration failed: {exc.__class__.__name__}: {getattr(exc, 'orig', exc)}"
                         ) from exc


def _sqlite_pragma(conn: Connection, pragma: str) -> None:
    """Run a pragma on the driver's connection, outside SQLAlchemy's transaction (none is begun for it)."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()


def _no_dangling_references(conn: Connection) -> None:
    dangling = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if dangling:
        raise StoreError(f"the migration left {len(dangling)} rows referring to missing rows, e.g. "
                         f"{dangling[0][0]} row {dangling[0][1]} -> {dangling[0][2]}; nothing was changed")


# ------------------------------------------------------------------------------------------- dialect differences


def locked(query: _Query) -> _Query:
    """Lock the rows a write transaction reads before it changes them (read, check, write): ``FOR UPDATE`` on
    PostgreSQL, where a concurrent writer of those rows waits for this transaction and then reads them anew,
    instead of overwriting them with values computed from an older read (a lost update). SQLite drops the clause:
    its write transactions already hold the whole database from ``BEGIN IMMEDIATE``."""
    return query.with_for_update()


def for_claim(query: _Query) -> _Query:
    """Lock the selected rows for a claim: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so that concurrent
    claimers pass over each other's rows; SQLite has no row locks and drops the clause, and its writers are
    serialized by ``BEGIN IMMEDIATE`` instead (see :func:`_configure_sqlite`)."""
    return query.with_for_update(skip_locked=True)


def _one_migration_at_a_time(conn: Connection) -> None:
    """Serialize concurrent migrations of one database (daemons starting together): on PostgreSQL a transaction
    advisory lock, held until the migration commits; on SQLite the write transaction already holds the lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))


def greatest(conn: Connection, a: Any, b: Any) -> ColumnElement[Any]:
    """The larger of two SQL values: SQLite's two-argument ``max()``, PostgreSQL's ``greatest()``."""
    return func.max(a, b) if conn.dialect.name == "sqlite" else func.greatest(a, b)


def _configure_sqlite(engine: Engine) -> None:
    """WAL for concurrent readers, FULL sync for durability, and immediate write transactions.

    pysqlite's own transaction handling is switched off so that SQLAlchemy's BEGIN is the one that runs:
    writers take the lock at BEGIN (no deadlock on lock upgrade), readers use a deferred BEGIN.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA busy_timeout = 30000")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        except Exception as exc:
            raise StoreError(f"cannot configure SQLite database: {exc}") from exc
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get("oncoagent_readonly", False)
        try:
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")
        except OperationalError as exc:
            raise StoreError(f"job store busy or unavailable: {exc.orig}") from exc
