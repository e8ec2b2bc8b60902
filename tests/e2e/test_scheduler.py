"""Scheduled batches (``scheduler.batches``) inside ``oncoagent run``: the cron fires in the running daemon and
every input under the batch's paths becomes a job, with nothing dropped in a watched folder; the run is a record
that shows done (``oncoagent batch runs``)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.store import Store
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_for

BATCH = "archive-test"
# crontab's finest step is a minute (scheduler.batches[].cron has five fields): the batch fires at the next
# minute boundary, at most 60 s after the daemon starts
EVERY_MINUTE = "* * * * *"
FIRE_TIMEOUT_S = 90


def config(archive: Path) -> dict[str, Any]:
    return {
        "plugins": ["tests.support.scripted_pipelines"],
        "routing": {"rules": [
            {"name": "slides", "pipeline": "test-scripted", "match": {"kind": "slide"}},
            {"name": "series", "pipeline": "inspect", "match": {"kind": "dicom-series"}},
        ]},
        "executor": {"workers": 2, "poll_interval_s": 0.1, "shutdown_grace_s": 1.0},
        "ingest": {"inbox": False, "scan_interval_s": 0.2},  # nothing is watched: only the batch finds the archive
        # reprocess: what had results runs again, and what is new to the store still runs once
        "scheduler": {"batches": [{"name": BATCH, "cron": EVERY_MINUTE, "paths": [str(archive)], "reprocess": True}]},
    }


def settled(daemon: DaemonProcess) -> dict[str, int] | None:
    """The job counts once some jobs exist and none is queued or running (read in-process, for polling)."""
    counts: dict[str, int] = daemon.counts()["jobs"]
    return counts if sum(counts.values()) and counts["queued"] + counts["running"] == 0 else None


def test_a_cron_batch_queues_the_archive_inside_the_running_daemon(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    slides = [archive / "slides" / f"case{i}.tiff" for i in range(2)]
    for slide in slides:
        slide.parent.mkdir(parents=True, exist_ok=True)
        slide.write_bytes(b"slide bytes " + slide.name.encode())  # the scripted pipeline never opens it
    series = write_mr_series(archive / "mr" / "s1", MRSeriesSpec(rows=32, columns=32, slices=6, seed=4242))
    archived = sorted(p for p in archive.rglob("*") if p.is_file())
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    (tmp_path / "daemon").mkdir()
    daemon = DaemonProcess(tmp_path / "daemon", config(archive), env={"OA_TEST_LEDGER": str(ledger)})
    daemon.start()
    try:
        scheduled = re.search(rf"batch {BATCH} next runs at (\S+ \S+)", daemon.log())
        assert scheduled, daemon.log()
        first_run = datetime.fromisoformat(scheduled.group(1))
        assert (first_run.second, first_run.microsecond) == (0, 0)  # a minute boundary, as the cron says
        fired = wait_for(
            lambda: re.search(rf"batch {BATCH}: (\d+) file\(s\), (\d+) input\(s\), (\d+) job\(s\) queued",
                              daemon.log()),
            FIRE_TIMEOUT_S, what=f"batch {BATCH} to fire")
        assert fired.groups() == (str(len(archived)), "3", "3")  # two slides and one series
        wait_for(lambda: settled(daemon), 60, interval=0.5, what="the batch's jobs to finish")
        counts = daemon.status()["jobs"]
        assert counts["succeeded"] == sum(counts.values()) == 3
        # the run is a record: its slot is the minute the cron named, and it shows done, every job finished
        listed = daemon.cli("batch", "runs", "--json")
        assert listed.returncode == 0, listed.stderr
        [run] = json.loads(listed.stdout)
        assert (run["batch"], run["status"], run["done"], run["total"], run["failed"]) == (BATCH, "done", 3, 3, 0)
        assert run["slot"] == first_run.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        shown = daemon.cli("batch", "show", str(run["id"]))
        assert shown.returncode == 0 and "jobs        done 3/3: queued 0, running 0, succeeded 3" in shown.stdout

        store = Store.open(f"sqlite:///{daemon.data_dir / 'oncoagent.db'}", migrate=False)
        try:
            jobs = store.list_jobs()
            queued = {store.get_input(job.input_id).key: job.pipeline for job in jobs}
        finally:
            store.close()
        assert queued == {
            **{str(slide.resolve()): "test-scripted" for slide in slides},
            series.series_uid: "inspect",
        }
        # queued when the schedule said, not at start-up
        assert all(job.created_at >= first_run.timestamp() for job in jobs)
        # each new slide ran once, though the daemon's own loop routes a slide the moment the batch records it
        done = (ledger / "ledger.txt").read_text().splitlines()
        assert sorted(done) == sorted(f"{step} {slide.resolve()}" for slide in slides for step in ("start", "done"))
        # the archive is read in place: nothing moved or deleted
        assert sorted(p for p in archive.rglob("*") if p.is_file()) == archived
    finally:
        daemon.discard()


# crontab(5) meanings the schedules must keep: weekday 0 and 7 are Sunday, and a day of month and a day of week
# both restricted run on either
WEEKDAY_SCHEDULES: dict[str, tuple[str, Callable[[date], bool]]] = {
    "mondays": ("0 2 * * 1", lambda d: d.weekday() == 0),
    "weekdays": ("0 2 * * 1-5", lambda d: d.weekday() < 5),
    "sundays": ("0 2 * * 0", lambda d: d.weekday() == 6),
    "weekends": ("30 2 * * sat,sun", lambda d: d.weekday() >= 5),
    "every-other-day": ("0 2 * * */2", lambda d: d.isoweekday() % 7 in {0, 2, 4, 6}),
    "fridays-and-13ths": ("0 2 13 * 5", lambda d: d.day == 13 or d.weekday() == 4),
}


def first_run(after: datetime, hour: int, minute: int, runs_on: Callable[[date], bool]) -> datetime:
    """The first hour:minute after ``after`` on a day the crontab names, worked out day by day."""
    day = after.date()
    while True:
        at = after.replace(year=day.year, month=day.month, day=day.day, hour=hour, minute=minute, second=0,
                           microsecond=0)
        if runs_on(day) and at > after:
            return at
        day += timedelta(days=1)


def test_batch_schedules_keep_the_crontab_weekdays(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    batches = [{"name": name, "cron": cron, "paths": [str(tmp_path / "archive")]}
               for name, (cron, _) in WEEKDAY_SCHEDULES.items()]
    daemon = DaemonProcess(tmp_path, {"ingest": {"inbox": False}, "scheduler": {"batches": batches}})
    before = datetime.now().astimezone()
    daemon.start()
    after = datetime.now().astimezone()
    try:
        log = daemon.log()
    finally:
        daemon.discard()
    for name, (cron, runs_on) in WEEKDAY_SCHEDULES.items():
        found = re.search(rf"batch {name} next runs at (\S+ \S+)", log)
        assert found, f"no next run logged for batch {name}:\n{log}"
        next_run = datetime.fromisoformat(found.group(1))
        minute, hour = (int(v) for v in cron.split()[:2])
        # worked out from just before and just after the daemon started (the same unless a run fell between)
        # compared as local wall-clock times: a daylight-saving change before the run shifts its UTC offset
        expected = {first_run(t, hour, minute, runs_on).replace(tzinfo=None) for t in (before, after)}
        assert next_run.replace(tzinfo=None) in expected, f"batch {name} ({cron}) next runs at {next_run}"
