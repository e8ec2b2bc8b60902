"""Two ``oncoagent run`` sharing one store (issue 12: daemons side by side for redundancy): a daemon killed while
it runs a job loses it to the other once its lease expires, the job's result is recorded once, and the killed
daemon, restarted, does not take back or re-queue what the other one holds."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from agent.records import JobStatus
from agent.store import Store
from tests.e2e.test_daemon import BASE_CONFIG, drop, ledger
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_for

LEASE_S = 5.0  # the shortest the configuration allows


def config(store_url: str, node: str) -> dict[str, Any]:
    return {**BASE_CONFIG, "store": {"url": store_url},
            "executor": {**BASE_CONFIG["executor"], "workers": 1, "node": node, "lease_s": LEASE_S}}


def test_a_killed_daemons_job_is_finished_once_by_the_other(tmp_path: Path) -> None:
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {"OA_TEST_LEDGER": str(ledger_dir)}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ledger").symlink_to(ledger_dir)  # one ledger for both (tests.e2e.test_daemon.ledger)
    a = DaemonProcess(tmp_path / "a", config(url, "node-a"), env=env)
    b = DaemonProcess(tmp_path / "b", config(url, "node-b"), env=env)
    store = Store.open(url)
    a.start()
    b.start()
    try:
        drop(a, "slow-sleep4.tiff")
        wait_for(lambda: len(ledger(a)) == 1, 60, what="the job to start on one of the daemons")
        [job] = store.list_jobs()
        holder, other = (a, b) if job.claimed_by == "node-a" else (b, a)
        holder.signal(signal.SIGKILL)
        holder.wait(10)

        wait_for(lambda: store.get_job(job.id).status is JobStatus.SUCCEEDED, 60,
                 what="the other daemon to claim the job again once the lease expired, and finish it")
        holder.start()  # restarted while nothing is left to take: it re-queues none of the other's work
        done = store.get_job(job.id)
        survivor = "node-b" if holder is a else "node-a"
        assert done.claimed_by == survivor and done.attempts == 1  # the cut-off run did not count
        details = [e["detail"] for e in store.events(job.id) if e["event"] == "started"]
        assert details[-1] == f"claimed again by {survivor}: the lease of {job.claimed_by} expired"
        assert [e["event"] for e in store.events(job.id)].count("succeeded") == 1
        runs = ledger(a)
        assert [line.split()[0] for line in runs] == ["start", "start", "done"]  # one run cut off, one finished
        assert "re-queued" not in holder.log().split("---- start 2 ----")[-1]
        assert other.alive()
    finally:
        store.close()
        a.discard()
        b.discard()
