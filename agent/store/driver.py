"""The receive path's database access: statements run straight on the driver, on a connection held open.

Recording received instances is the one write that runs hundreds of times a second while peers wait for it,
and every statement lets go of the GIL and must win it back from the associations that wait. So it avoids
SQLAlchemy's per-execution work (:class:`DriverStatement`: compiled once, run on the DBAPI cursor), the
pool's checkout and check-in (:class:`HeldConnection`: one connection kept for it) and, where no ORM-level
statement is needed, SQLAlchemy's transaction machinery too (:meth:`HeldConnection.raw_write`: BEGIN and
COMMIT on the driver). Everything else in the store uses :func:`agent.store.engine.write` and ``read``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, Engine
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from agent.errors import StoreError
from agent.store import schema


class DriverConnection(Protocol):
    """What a :class:`DriverStatement` runs on: a SQLAlchemy Connection, or a :class:`RawTransaction`."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def connection(self) -> Any: ...  # has cursor()


@dataclass(frozen=True)
class RawTransaction:
    """A transaction begun on the DBAPI connection itself (see :meth:`HeldConnection.raw_write`)."""

    connection: Any  # the DBAPI connection
    dialect: Dialect


class DriverStatement:
    """A statement compiled once per dialect and run straight on the DBAPI cursor of the caller's transaction.

    For the receive path only, where SQLAlchemy's work per execution (cache key, parameter and result
    processing) costs more than SQLite's: the columns it binds and reads must be of plain types (strings,
    numbers; no JSON). Literal values of the statement are bound as compiled. Driver errors become
    :class:`~agent.errors.StoreError`.

    Compiled per dialect, the SQL carries that driver's own placeholders, bound as it expects them: sqlite3's
    ``?`` by position (the compiler's ``positiontup`` orders the values), psycopg's ``%(name)s`` (with the casts
    SQLAlchemy renders for PostgreSQL) by name. The cursor is the one of the caller's transaction (a SQLAlchemy
    one, or a :class:`RawTransaction`), so these statements commit or roll back with the rest of it on either
    backend.
    """

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def _for(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            done = self.statement.compile(dialect=dialect)
            assert isinstance(done, SQLCompiler)
            names = tuple(done.positiontup or ()) if dialect.positional else None
            compiled = self._compiled[dialect.name] = (done.string, names, dict(done.params))
        return compiled

    def rows(self, conn: DriverConnection, values: Mapping[str, Any]) -> list[Sequence[Any]]:
        """Run once with ``values``; the rows it returns (none for a statement without results)."""
        sql, names, defaults = self._for(conn.dialect)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(sql, _bound(conn.dialect, names, defaults, values))
            return list(cursor.fetchall()) if cursor.description else []
        except conn.dialect.loaded_dbapi.Error as exc:
            raise StoreError(f"job store write failed: {exc.__class__.__name__}: {exc}") from exc
        finally:
            cursor.close()


def _bound(dialect: Dialect, names: tuple[str, ...] | None, defaults: dict[str, Any], values: Mapping[str, Any]
           ) -> Any:
    merged = {**defaults, **values}
    if dialect.name == "postgresql":  # no column types bind these values: escape NUL as schema.FreeText does
        merged = {k: schema.escape_nul(v) if isinstance(v, str) else v for k, v in merged.items()}
    return merged if names is None else tuple(merged[name] for name in names)


class HeldConnection:
    """One connection kept open for a hot path's write transactions (the receive path's group commits): no pool
    checkout and check-in per transaction. Used by one thread at a time (a lock sees to it). After a database
    error the connection is dropped and the next transaction opens a new one, as the pool would."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction on the held connection, as :func:`write`."""
        with self._lock:
            conn = self._connection()
            try:
                with conn.begin():
                    yield conn
            except SQLAlchemyError as exc:
                self._drop()
                raise _write_failed(exc) from exc
            except BaseException:
                self._drop()
                raise

    @contextmanager
    def raw_write(self) -> Iterator[RawTransaction]:
        """A write transaction begun and committed on the driver (SQLite: ``BEGIN IMMEDIATE`` as in
        :func:`~agent.store.engine.write`; psycopg: the transaction its first statement opens), for
        :class:`DriverStatement` only: no SQLAlchemy statement may run in it. An error rolls it back."""
        with self._lock:
            conn = self._connection()
            try:
                dbapi: Any = conn.connection.dbapi_connection
            except SQLAlchemyError as exc:
                self._drop()
                raise _write_failed(exc) from exc
            dialect = conn.dialect
            if dbapi is None:
                self._drop()
                raise StoreError("job store write failed: the held connection was invalidated")
            error = dialect.loaded_dbapi.Error
            try:
                if dialect.name == "sqlite":  # its connections run with the driver's own transactions off
                    dbapi.execute("BEGIN IMMEDIATE")
                try:
                    yield RawTransaction(dbapi, dialect)
                except BaseException:
                    with suppress(error):
                        dbapi.rollback()
                    raise
                dbapi.commit()
            except error as exc:
                self._drop()
                raise StoreError(f"job store write failed: {exc.__class__.__name__}: {exc}") from exc
            except StoreError:
                self._drop()  # a statement failed: the connection's state is not to be trusted
                raise

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _connection(self) -> Connection:
        """The held connection, opened when there is none (under the lock)."""
        if self._conn is None:
            try:
                self._conn = self.engine.connect()
            except SQLAlchemyError as exc:
                raise _write_failed(exc) from exc
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with suppress(SQLAlchemyError):
                self._conn.close()
            self._conn = None


def _write_failed(exc: SQLAlchemyError) -> StoreError:
    return StoreError(f"job store write failed: {exc.__class__.__name__}: {getattr(exc, 'orig', exc)}")
