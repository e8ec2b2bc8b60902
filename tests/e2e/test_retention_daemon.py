"""The daemon purges on its own thread: a delivered slide and its results go once past their retention, a
slide whose job failed stays in quarantine (a person must look), and SIGTERM still stops the daemon at once."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.store import Store
from tests.e2e.test_daemon import BASE_CONFIG, all_finished, drop
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_for


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    config = {**BASE_CONFIG, "retention": {"instances_days": 1e-5, "results_days": 1e-5, "interval_s": 10}}
    d = DaemonProcess(tmp_path, config, env={"OA_TEST_LEDGER": str(ledger)})
    yield d
    d.discard()


def test_the_daemon_purges_what_was_delivered_and_keeps_a_failed_input(daemon: DaemonProcess) -> None:
    daemon.start()
    drop(daemon, "done.svs")
    drop(daemon, "fail-input.svs")
    wait_for(lambda: all_finished(daemon, 2), timeout=30, what="both jobs")
    slides = daemon.data_dir / "storage" / "slides"
    results = daemon.data_dir / "results"
    assert (slides / "done.svs").is_file() and len(list(results.glob("job-*"))) == 1
    # at most one interval (10 s) later the delivered slide and its results are gone (1e-5 days is < 1 s)
    wait_for(lambda: not (slides / "done.svs").exists(), timeout=30, what="the purge")
    wait_for(lambda: not list(results.glob("job-*")), timeout=5, what="the results' purge")
    store = Store.open(f"sqlite:///{daemon.data_dir / 'oncoagent.db'}")
    try:  # the failed input (its slide in quarantine) is not purged: a person must look
        purged = {Path(i.path).name: i.key.startswith("purged:") for i in store.list_inputs()}
    finally:
        store.close()
    assert purged == {"done.svs": True, "fail-input.svs": False}
    assert "purged input" in daemon.log()
    assert daemon.status()["jobs"] == {"queued": 0, "running": 0, "succeeded": 1, "failed": 1, "cancelled": 0}
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
