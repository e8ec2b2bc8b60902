"""The web worklist served for a test: a SQLite store with one account per role (one password for all) and the
real web server (uvicorn in-process, on a free port) over it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.config import Settings, WebSettings
from agent.passwords import hash_password
from agent.review_records import Role
from agent.store import Store
from agent.store.users import add_user
from agent.web.server import WebServer

PASSWORD = "correct horse battery staple"
ACCOUNTS = (("root", Role.ADMIN), ("path", Role.PATHOLOGIST), ("rad", Role.RADIOLOGIST), ("view", Role.VIEWER))


@contextmanager
def store_with_accounts(folder: Path) -> Iterator[Store]:
    store = Store.open(f"sqlite:///{folder / 'store.db'}")
    try:
        now = time.time()
        for name, role in ACCOUNTS:
            add_user(store.engine, name, role, hash_password(PASSWORD), now)
        yield store
    finally:
        store.close()


@contextmanager
def served(store: Store) -> Iterator[str]:
    """The server's base URL (no trailing slash) while it runs."""
    web = WebServer(Settings(web=WebSettings(port=0)), store)
    web.start()
    try:
        yield web.url.rstrip("/")
    finally:
        web.stop()
