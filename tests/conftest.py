from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agent.config import Settings
from agent.store import Store
from pipelines import registry

if TYPE_CHECKING:
    from tests.support.postgres import PostgresServer

REPO = Path(__file__).resolve().parent.parent
SHARED_TESTDATA = REPO.parent / "shared" / "testdata"

os.environ.setdefault("YOLO_OFFLINE", "1")
# every daemon a test starts serves its worklist on a free port, unless its config names one (tests.support.daemon)
os.environ.setdefault("ONCOAGENT_WEB__PORT", "0")


def deep_update(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_update(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


SCRIPTED_RULES = [{"name": "scripted", "pipeline": "test-scripted", "match": {"kind": "slide"}}]


@pytest.fixture(autouse=True)
def _root_logging_as_before() -> Iterator[None]:
    """A test that runs the CLI in-process configures logging (agent.logs): a handler on the stderr pytest
    captured for that test. Left in place, every later record from a thread of another test is written to that
    closed stream ("--- Logging error ---" in the suite's output). Restored after each test; pytest's own
    capture handlers are its to manage."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers and not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**sections: Any) -> Settings:
        base: dict[str, Any] = {
            "data_dir": str(tmp_path / "data"),
            "executor": {"workers": 2, "backoff_base_s": 0.2, "backoff_max_s": 1.0, "poll_interval_s": 0.1},
            "ingest": {"settle_seconds": 0, "quiet_seconds": 0, "scan_interval_s": 0.2},
            "plugins": ["tests.support.scripted_pipelines"],
        }
        settings = Settings.model_validate(deep_update(base, sections))
        settings.paths.create()
        registry.load_plugins(settings.plugins)
        return settings

    return make


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()


@pytest.fixture
def database_url(tmp_path: Path) -> Callable[[str], str]:
    """Makes the URL of a fresh, empty database per call: SQLite here; tests/integration/test_store_postgres.py
    overrides it (and ``store``) with databases of a real PostgreSQL server."""
    return lambda name: f"sqlite:///{tmp_path / name}.db"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session (tests/support/postgres.py); skips where none can run."""
    from tests.support.postgres import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
def daemons(database_url: Callable[[str], str]) -> Iterator[tuple[Store, Store]]:
    """Two store handles on one fresh database, one per daemon sharing it (the first migrates it): claims of
    jobs, outbox entries and batch runs."""
    url = database_url("claims")
    a, b = Store.open(url), Store.open(url, migrate=False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "ledger"
    folder.mkdir()
    monkeypatch.setenv("OA_TEST_LEDGER", str(folder))
    return folder / "ledger.txt"


def shared(path: str) -> Path:
    target = SHARED_TESTDATA / path
    if not target.exists():
        pytest.skip(f"shared test data {path} is not available beside this checkout")
    return target
