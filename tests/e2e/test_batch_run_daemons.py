"""Scheduled batch runs happen once (issue 11): a slot missed while the daemons were down runs once when they
start, on one of two daemons sharing a store; a run cut off by SIGKILL is resumed when its daemon starts again,
and what it had taken is not queued again. The missed slot is what makes a run start at once: no test waits for
a cron."""

from __future__ import annotations

import signal
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.crontab import crontab_trigger, last_fire
from agent.failpoints import ENV_POINTS, ENV_STATE
from agent.store import Store
from tests.e2e.test_daemon import BASE_CONFIG
from tests.support.daemon import DaemonProcess, record_finished_run, stopped
from tests.support.waiting import wait_for

BATCH = "nightly"
SLIDES = ("a.tiff", "b.tiff", "c.tiff")
LEASE_S = 5.0  # the shortest the configuration allows


def far_cron() -> str:
    """A daily schedule twelve hours from now: it does not fire while the test runs."""
    return f"0 {(datetime.now().astimezone() + timedelta(hours=12)).hour} * * *"


def archive_of(root: Path) -> Path:
    archive = root / "archive"
    archive.mkdir()
    for name in SLIDES:
        (archive / name).write_bytes(b"slide bytes " + name.encode())  # the scripted pipeline never opens it
    return archive


def config(url: str, node: str, archive: Path, cron: str, *, reprocess: bool = False) -> dict[str, Any]:
    return {**BASE_CONFIG, "store": {"url": url}, "ingest": {**BASE_CONFIG["ingest"], "inbox": False},
            "executor": {**BASE_CONFIG["executor"], "node": node, "lease_s": LEASE_S},
            "scheduler": {"batches": [{"name": BATCH, "cron": cron, "paths": [str(archive)], "reprocess": reprocess}]}}


def seed_earlier_run(url: str, archive: Path, cron: str) -> float:
    """Record that the batch ran two slots ago; return the slot due now, which the daemons missed."""
    due = last_fire(crontab_trigger(cron), time.time())
    assert due is not None
    record_finished_run(url, BATCH, due - 2 * 86400, [archive])
    return due


def runs(daemon: DaemonProcess) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = daemon.cli_json("batch", "runs", "--json")
    return listed


def finished_run(daemon: DaemonProcess, slot: float) -> dict[str, Any] | None:
    """The run for ``slot`` once every job of it finished (read in-process, for polling: a CLI every half second
    takes a core from the daemon)."""
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(slot))
    run = next((r for r in daemon.batch_runs() if r["slot"] == iso), None)
    return run if run is not None and run["status"] == "done" and run["done"] == len(SLIDES) else None


def ledger_lines(ledger: Path) -> list[str]:
    path = ledger / "ledger.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_two_daemons_started_after_a_missed_slot_run_it_once(tmp_path: Path) -> None:
    archive, url, cron = archive_of(tmp_path), f"sqlite:///{tmp_path / 'shared.db'}", far_cron()
    due = seed_earlier_run(url, archive, cron)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    daemons = []
    for node in ("node-a", "node-b"):
        (tmp_path / node).mkdir()
        daemons.append(DaemonProcess(tmp_path / node, config(url, node, archive, cron),
                                     env={"OA_TEST_LEDGER": str(ledger)}))
    try:
        for daemon in daemons:
            daemon.start(wait_ready=False)  # side by side: both catch up the missed slot as they start
        run = wait_for(lambda: finished_run(daemons[0], due), 90, interval=0.5, what="the missed slot's run")
        assert run["total"] == len(SLIDES) and run["failed"] == 0 and run["owner"] in ("node-a", "node-b")
        assert len(runs(daemons[0])) == 2  # the earlier run and this one: not one per missed slot, not one each
        ran = [d for d in daemons if f"run {run['id']} done" in d.log()]
        assert len(ran) == 1  # one daemon ran it; the other found it held (skipped) or done (nothing missed)
        assert "job(s) queued" not in next(d for d in daemons if d not in ran).log()
        done = [line for line in ledger_lines(ledger) if line.startswith("done")]
        assert sorted(done) == sorted(f"done {(archive / name).resolve()}" for name in SLIDES)  # each slide once
    finally:
        for daemon in daemons:
            daemon.discard()


def test_a_run_killed_midway_resumes_at_restart_and_queues_nothing_twice(tmp_path: Path) -> None:
    archive, cron = archive_of(tmp_path), far_cron()
    (tmp_path / "daemon").mkdir()
    url = f"sqlite:///{tmp_path / 'daemon' / 'data' / 'oncoagent.db'}"
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    daemon = DaemonProcess(tmp_path / "daemon", config(url, "node-a", archive, cron, reprocess=True),
                           env={"OA_TEST_LEDGER": str(ledger)})
    try:
        daemon.start()  # first, every slide is processed once (by hand): the nightly run reprocesses them
        assert daemon.cli("batch", str(archive)).returncode == 0
        wait_for(lambda: len([ln for ln in ledger_lines(ledger) if ln.startswith("done")]) == len(SLIDES), 60,
                 what="the first processing")
        daemon.stop()

        due = seed_earlier_run(url, archive, cron)
        state = tmp_path / "failpoints"
        state.mkdir()
        daemon.env = {**daemon.env, ENV_POINTS: "batch.after-queued", ENV_STATE: str(state)}
        daemon.start()  # catches up the missed slot, and freezes once it queued the first slide again
        assert daemon.proc is not None
        pid = daemon.proc.pid
        wait_for(lambda: stopped(pid), 60, interval=0.2, what="the daemon frozen in the middle of the run")
        daemon.signal(signal.SIGKILL)
        assert daemon.wait(30) == -signal.SIGKILL

        daemon.start()  # the failpoint fired once: this start runs free
        run = wait_for(lambda: finished_run(daemon, due), 90, interval=0.5, what="the resumed run to finish")
        assert run["resumed"] == 1 and run["owner"] == "node-a" and run["failed"] == 0
        assert "resuming run" in daemon.log().split("---- start 3 ----")[-1]
        store = Store.open(url, migrate=False)
        try:
            for job in store.list_jobs():
                reprocessed = [e for e in store.events(job.id)
                               if e["event"] == "requeued" and (e["detail"] or "").startswith("reprocess")]
                assert len(reprocessed) == 1, store.events(job.id)  # queued again once, by the run, not twice
        finally:
            store.close()
        done = [line for line in ledger_lines(ledger) if line.startswith("done")]
        assert sorted(done) == sorted(f"done {(archive / n).resolve()}" for n in SLIDES for _ in range(2))
    finally:
        daemon.discard()
