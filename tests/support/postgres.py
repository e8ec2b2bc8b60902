"""A real PostgreSQL server for the tests: Debian's ``postgresql`` binaries, a cluster made by ``initdb`` in a
temporary folder, listening only on a Unix socket in that folder (no port to collide with, nothing reachable from
outside), stopped and deleted at the end of the test session.

PostgreSQL refuses to run as root: when the tests run as root, the server runs as the ``postgres`` account
(``runuser``) and owns the folder. Every test gets a database of its own (:meth:`PostgresServer.new_database`), so
tests stay independent while sharing one server. Durability is switched off (``fsync=off``): a test cluster
that is thrown away needs none, and the store's own crash tests run on SQLite.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started here (binaries or a usable account missing); tests skip."""


def binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: the newest /usr/lib/postgresql/<version>/bin, else PATH's."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name), reverse=True
    ) if Path("/usr/lib/postgresql").is_dir() else []
    found = versions[0] if versions else (Path(p) if (p := shutil.which("pg_ctl")) else None)
    return None if found is None or not (found.parent / "initdb").exists() else found.parent


class PostgresServer:
    """One running cluster; :meth:`start` makes it, :meth:`stop` removes it."""

    def __init__(self, folder: Path, bindir: Path, account: str | None) -> None:
        self.folder = folder  # holds the cluster (data/), its log and its socket
        self.bindir = bindir
        self.account = account  # whom the server runs as (None: this process's user)
        self._names = itertools.count(1)
        self._admin: psycopg.Connection[tuple[object, ...]] | None = None

    @classmethod
    def start(cls, *, durable: bool = False) -> PostgresServer:
        """A new cluster, started; ``durable`` keeps PostgreSQL's own fsync and synchronous commit on (a benchmark
        compares it with SQLite's synchronous commits; the tests need neither)."""
        bindir = binaries()
        if bindir is None:
            raise PostgresUnavailable("PostgreSQL binaries (initdb, pg_ctl) not found: install Debian's postgresql")
        account = None
        folder = Path(tempfile.mkdtemp(prefix="oa-pg-"))  # short: a socket path has at most 107 bytes
        if os.geteuid() == 0:
            account = SUPERUSER
            try:
                entry = pwd.getpwnam(account)
            except KeyError as exc:
                shutil.rmtree(folder)
                raise PostgresUnavailable("running as root and there is no 'postgres' account to run the server as") \
                    from exc
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        server = cls(folder, bindir, account)
        try:
            server._run("initdb", "-D", str(folder / "data"), "-U", SUPERUSER, "--auth=trust", "--no-sync",
                        "-E", "UTF8", "--locale=C")
            server._run("pg_ctl", "-D", str(folder / "data"), "-l", str(folder / "server.log"), "-w", "-t", "60",
                        "-o", f"-k {folder} -c listen_addresses='' -c max_connections=200"
                              + ("" if durable else " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"),
                        "start")
        except FileNotFoundError as exc:  # runuser (util-linux) missing
            shutil.rmtree(folder, ignore_errors=True)
            raise PostgresUnavailable(f"cannot run PostgreSQL as {account!r}: {exc}") from exc
        except subprocess.CalledProcessError as exc:
            log = folder / "server.log"
            detail = (exc.stderr or "") + (log.read_text(errors="replace") if log.exists() else "")
            shutil.rmtree(folder, ignore_errors=True)
            if account is not None and "runuser" in detail:  # root of a user namespace: no other account exists
                raise PostgresUnavailable(f"cannot run PostgreSQL as {account!r} here: {detail.strip()}") from exc
            raise RuntimeError(f"PostgreSQL did not start: {' '.join(exc.cmd)}: {detail.strip()}") from exc
        return server

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self.account is not None:
            command = ["runuser", "-u", self.account, "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120, cwd=self.folder)

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of a database of this server (plain ``postgresql://``: the store picks psycopg 3)."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.folder}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit connection to the ``postgres`` database (for CREATE DATABASE and inspection)."""
        if self._admin is None or self._admin.closed:
            self._admin = psycopg.connect(host=str(self.folder), user=SUPERUSER, dbname="postgres", autocommit=True)
        return self._admin

    def new_database(self, hint: str = "db") -> str:
        """Create an empty database; return its URL."""
        name = f"oa_{next(self._names)}_{''.join(c for c in hint.lower() if c.isalnum())[:30]}"
        self.admin().execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
