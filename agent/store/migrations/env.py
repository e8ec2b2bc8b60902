"""Alembic's environment for the job store: runs the revisions under ``versions/``.

At run time :func:`agent.store.migrations.upgrade` hands in its connection (``config.attributes["connection"]``),
in the :func:`agent.store.engine.migration` transaction already begun, so the revisions run inside it. From a
developer's ``alembic`` command line there is none: the database is the URL given with ``-x url=…``
(``alembic -x url=sqlite:///var/dev.db upgrade head``), migrated in such a transaction of its own.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from agent.store import schema
from agent.store.engine import migration, open_engine


def run(conn: Connection) -> None:
    context.configure(connection=conn, target_metadata=schema.metadata,  # SQLite alters a table by copying it:
                      render_as_batch=conn.dialect.name == "sqlite")  # autogenerate writes op.batch_alter_table
    with context.begin_transaction():
        context.run_migrations()


handed_in = context.config.attributes.get("connection")
if handed_in is not None:
    run(handed_in)
else:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url or context.is_offline_mode():
        raise SystemExit("give the database as: alembic -x url=<database URL> … (offline --sql is not supported)")
    engine = open_engine(url)
    try:
        with migration(engine) as conn:  # as Store.migrate runs it: the lock, SQLite's foreign keys
            run(conn)
    finally:
        engine.dispose()
