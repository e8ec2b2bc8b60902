"""The job store's schema migrations, run with Alembic from :func:`agent.store.engine.migrate`.

The revisions are under ``versions/`` (``r0001_baseline.py`` first, each naming the one before it); ``env.py``
runs them on the connection handed in through the Alembic config, inside the caller's transaction (which on
PostgreSQL holds the migration advisory lock), so no ``alembic.ini`` is read at run time. The database records
the revision in force in Alembic's ``alembic_version`` table.

A developer adds a revision from the checkout with the ``alembic`` command (configured in pyproject.toml's
``[tool.alembic]``): ``alembic revision -m "what changes" --rev-id 0002``; see docs/architecture.md.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from agent.errors import StoreError

log = logging.getLogger(__name__)

FOLDER = Path(__file__).resolve().parent


def _config(folder: Path, conn: Connection | None = None) -> Config:
    """Alembic's configuration for the scripts in ``folder``, built in memory (no ini file)."""
    config = Config()
    config.set_main_option("script_location", str(folder).replace("%", "%%"))  # configparser interpolates %
    if conn is not None:
        config.attributes["connection"] = conn
    return config


@cache
def _scripts(folder: Path) -> ScriptDirectory:
    return ScriptDirectory.from_config(_config(folder))


def head(folder: Path = FOLDER) -> str:
    """The newest revision this OncoAgent knows (of the scripts in ``folder``: this package's, but for tests)."""
    newest = _scripts(folder).get_current_head()
    if newest is None:
        raise StoreError(f"no schema revisions under {folder / 'versions'}")
    return newest


def current(conn: Connection) -> str | None:
    """The revision the database is at; None for a database Alembic has not stamped (new, or of an earlier
    release that counted its own versions in ``schema_info``)."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(conn: Connection, folder: Path = FOLDER) -> str:
    """Bring the database on ``conn`` to :func:`head` within the caller's transaction; return the revision.

    A database at a revision this OncoAgent does not know (made by a newer release) is refused, unchanged."""
    before = current(conn)
    newest = head(folder)
    if before is not None and before not in {script.revision for script in _scripts(folder).walk_revisions()}:
        raise StoreError(f"database schema {before} is newer than this OncoAgent ({newest}); "
                         "upgrade OncoAgent or use another --data-dir")
    if before != newest:
        command.upgrade(_config(folder, conn), "head")
        log.info("migrated job store schema from %s to %s", before or "none (new, or counted by schema_info)", newest)
    return newest
