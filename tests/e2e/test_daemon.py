"""``oncoagent run`` as a subprocess: crashes, restarts, signals, bad configuration."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import SCRIPTED_RULES
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_for

BASE_CONFIG: dict[str, Any] = {
    "plugins": ["tests.support.scripted_pipelines"],
    "routing": {"rules": SCRIPTED_RULES},
    "executor": {"workers": 2, "backoff_base_s": 0.2, "backoff_max_s": 1.0, "poll_interval_s": 0.1,
                 "shutdown_grace_s": 1.0},
    "ingest": {"settle_seconds": 0.3, "scan_interval_s": 0.2, "quiet_seconds": 0.5},
}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    d = DaemonProcess(tmp_path, BASE_CONFIG, env={"OA_TEST_LEDGER": str(ledger)})
    yield d
    d.discard()


def drop(daemon: DaemonProcess, name: str) -> Path:
    """Write a file into the inbox atomically (hidden name, then rename)."""
    inbox = daemon.data_dir / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    hidden = inbox / f".{name}"
    hidden.write_bytes(b"slide bytes " + name.encode())
    target = inbox / name
    hidden.rename(target)
    return target


def ledger(daemon: DaemonProcess) -> list[str]:
    path = daemon.root / "ledger" / "ledger.txt"
    return path.read_text().splitlines() if path.exists() else []


def jobs(daemon: DaemonProcess) -> list[dict[str, Any]]:
    proc = daemon.cli("jobs", "list", "--json", "--limit", "1000")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def all_finished(daemon: DaemonProcess, expected: int) -> bool:
    counts = daemon.status()["jobs"]
    return counts["succeeded"] + counts["failed"] == expected and counts["queued"] + counts["running"] == 0


def test_sigkill_mid_job_then_restart_finishes_every_job_exactly_once(daemon: DaemonProcess) -> None:
    daemon.start()
    names = [f"slide{i}-sleep1.5.tiff" for i in range(6)]
    for name in names:
        drop(daemon, name)
    wait_for(lambda: sum(1 for line in ledger(daemon) if line.startswith("start")) >= 2, 60, what="jobs to start")
    workers = psutil.Process(daemon.proc.pid).children(recursive=True)
    assert workers, "the daemon runs its jobs in worker processes"
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    # the workers die with the daemon: no orphan goes on to write results nobody records
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    interrupted = [line.removeprefix("start ") for line in ledger(daemon) if line.startswith("start")]
    assert interrupted

    daemon.start()
    wait_for(lambda: all_finished(daemon, len(names)), 90, what="all jobs to finish after restart")
    listed = jobs(daemon)
    assert len(listed) == len(names)  # one job per input: nothing duplicated, nothing lost
    assert all(j["status"] == "succeeded" for j in listed)
    done = Counter(line.removeprefix("done ") for line in ledger(daemon) if line.startswith("done"))
    assert len(done) == len(names) and set(done.values()) == {1}  # each input's pipeline completed once
    for job in listed:
        assert (Path(job["result_path"]) / "result.json").exists()
    assert "re-queued" in daemon.log() and "left running by an earlier unclean stop" in daemon.log()
    assert daemon.status()["inputs_by_state"]["routed"] == len(names)


def test_sigterm_requeues_the_running_job_and_exits_zero_within_10s(daemon: DaemonProcess) -> None:
    daemon.start()
    drop(daemon, "long-sleep60.tiff")
    wait_for(lambda: any(line.startswith("start") for line in ledger(daemon)), 60, what="the job to start")
    t0 = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(15) == 0
    assert time.monotonic() - t0 < 10
    (job,) = jobs(daemon)
    assert job["status"] == "queued" and job["attempts"] == 0
    assert "received SIGTERM" in daemon.log() and "stopped" in daemon.log()


def test_sigint_stops_an_idle_daemon_cleanly(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.signal(signal.SIGINT)
    assert daemon.wait(15) == 0


def test_failing_and_crashing_jobs_never_stop_the_daemon(daemon: DaemonProcess) -> None:
    daemon.start()
    for i in range(8):
        drop(daemon, f"bad{i}-error.tiff")
    drop(daemon, "crash-sigkill1.tiff")
    drop(daemon, "ok.tiff")
    wait_for(lambda: all_finished(daemon, 10), 90, what="all jobs to finish")
    assert daemon.alive()
    counts = daemon.status()["jobs"]
    assert counts["failed"] == 8 and counts["succeeded"] == 2
    failed = [j for j in jobs(daemon) if j["status"] == "failed"]
    assert all(j["last_error"].startswith("RuntimeError: unexpected condition in bad") for j in failed)
    # and it still takes new work afterwards
    drop(daemon, "later.tiff")
    wait_for(lambda: all_finished(daemon, 11), 60, what="the later job")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(15) == 0


def test_second_daemon_on_the_same_data_dir_is_refused(daemon: DaemonProcess) -> None:
    daemon.start()
    second = daemon.cli("run")
    assert second.returncode == 3
    assert "is in use by daemon pid" in second.stderr


def test_bad_config_fails_at_start_with_file_key_and_expectation(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, {**BASE_CONFIG, "executor": {"workers": "lots"}})
    proc = d.cli("run")
    assert proc.returncode == 2
    assert str(d.config_file) in proc.stderr
    assert "executor.workers: expected a valid integer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_scanner_folder_is_reported_and_the_daemon_keeps_running(tmp_path: Path) -> None:
    config = {**BASE_CONFIG, "ingest": {**BASE_CONFIG["ingest"], "folders": [str(tmp_path / "not-mounted")]}}
    d = DaemonProcess(tmp_path, config)
    check = d.cli("config", "check")
    assert check.returncode == 2 and "not-mounted is not a folder" in check.stderr
    d.start()
    try:
        wait_for(lambda: "does not exist or is not a folder" in d.log(), 30, what="the folder error")
        (tmp_path / "not-mounted").mkdir()  # the share comes back: its slides are taken
        (tmp_path / "not-mounted" / "late.tiff").write_bytes(b"x")
        wait_for(lambda: d.counts()["slides"] == 1, 30, what="the slide from the late folder")
        assert d.alive()
    finally:
        d.stop()


def test_systemd_ready_watchdog_and_stopping_notifications(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    d = DaemonProcess(tmp_path, BASE_CONFIG, env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"})
    try:
        d.start(wait_ready=False)
        messages: list[str] = []
        while not any(m.startswith("WATCHDOG=1") for m in messages):
            messages.append(sock.recv(4096).decode())
        assert messages[0].startswith("READY=1")
        d.signal(signal.SIGTERM)
        while "STOPPING=1" not in messages:
            messages.append(sock.recv(4096).decode())
        assert d.wait(15) == 0
    finally:
        d.stop()
        sock.close()
