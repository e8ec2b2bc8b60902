"""``oncoagent batch --wait`` (issue 11): the command queues an archive for a running daemon, follows the run's
jobs until every one has ended and exits 0 only when all succeeded; a failed input makes it exit 1 with the
reason; ``--wait-timeout`` gives up; on a terminal it draws its bars (tqdm) on stderr."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import EXIT_FAILED
from tests.e2e.test_daemon import BASE_CONFIG
from tests.support.daemon import DaemonProcess
from tests.support.waiting import wait_for


def new_daemon(root: Path) -> DaemonProcess:
    ledger = root / "ledger"
    ledger.mkdir()
    return DaemonProcess(root, {**BASE_CONFIG, "ingest": {**BASE_CONFIG["ingest"], "inbox": False}},
                         env={"OA_TEST_LEDGER": str(ledger)})


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One running daemon for the tests that follow a run to its end: each queues an archive of its own (a run
    of its own, its id read from the command's output), and each such run has ended when its test is over."""
    d = new_daemon(tmp_path_factory.mktemp("batch-wait"))
    d.start()
    yield d
    d.discard()


@pytest.fixture
def daemon(tmp_path: Path) -> DaemonProcess:
    """A daemon's config and data folder where no daemon runs: what is queued stays queued."""
    return new_daemon(tmp_path)


def archive_of(root: Path, *names: str) -> Path:
    archive = root / "archive"
    archive.mkdir()
    for name in names:  # the scripted pipeline never opens it; distinct bytes per archive: a new input each
        (archive / name).write_bytes(b"slide bytes " + str(archive / name).encode())
    return archive


def done_in_ledger(daemon: DaemonProcess, archive: Path) -> list[str]:
    """The names of the files of ``archive`` whose job ran to its end."""
    path = daemon.root / "ledger" / "ledger.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    done = [Path(line.removeprefix("done ")) for line in lines if line.startswith("done ")]
    return sorted(p.name for p in done if p.parent == archive)


def run_id(stdout: str) -> int:
    """The batch run the command queued, from its "(batch run N: oncoagent batch show N)"."""
    found = re.search(r"\(batch run (\d+): oncoagent batch show \1\)", stdout)
    assert found, stdout
    return int(found.group(1))


def test_batch_wait_returns_once_every_job_succeeded(running: DaemonProcess, tmp_path: Path) -> None:
    names = ("a-sleep0.5.tiff", "b-sleep1.tiff", "c.tiff")
    archive = archive_of(tmp_path, *names)
    proc = running.cli("batch", "--wait", str(archive))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert done_in_ledger(running, archive) == sorted(names)  # every job had run to its end when it returned
    assert "3 job(s) queued" in proc.stdout
    assert "3/3 job(s) done (3 succeeded)" in proc.stdout
    assert "FAILED" not in proc.stdout
    assert f"batch run {run_id(proc.stdout)}: 0/3 job(s) done" in proc.stderr  # not a terminal: plain lines, no bar
    assert "\r" not in proc.stderr


def test_a_failed_input_makes_batch_wait_exit_non_zero_with_the_reason(running: DaemonProcess, tmp_path: Path
                                                                       ) -> None:
    archive = archive_of(tmp_path, "good.tiff", "bad-fail-input.tiff")
    proc = running.cli("batch", "--wait", str(archive))
    assert proc.returncode == EXIT_FAILED, proc.stdout + proc.stderr
    assert "2/2 job(s) done (1 succeeded, 1 failed)" in proc.stdout
    failures = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failures) == 1
    assert f"{archive / 'bad-fail-input.tiff'}: bad-fail-input.tiff is marked as bad input" in failures[0]


def test_wait_timeout_gives_up_and_leaves_the_jobs_queued(daemon: DaemonProcess, tmp_path: Path) -> None:
    archive = archive_of(tmp_path, "a.tiff")  # no daemon runs: the job stays queued
    proc = daemon.cli("batch", "--wait-timeout", "1", str(archive))
    assert proc.returncode == EXIT_FAILED, proc.stdout + proc.stderr
    assert "gave up waiting" in proc.stderr and "0/1 job(s) done" in proc.stderr
    assert "go on in the daemon (oncoagent batch show 1)" in proc.stderr
    shown = daemon.cli("batch", "show", "1")
    assert "queued 1" in shown.stdout


@contextlib.contextmanager
def sigint_heeded() -> Iterator[None]:
    """SIGINT not ignored while a command starts: a suite run as a background job of a shell without job control
    has it ignored, a started program inherits that, and Python then never turns SIGINT into KeyboardInterrupt
    (the command would go on waiting). A handled signal is reset to its default in the new program."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_ctrl_c_stops_waiting_and_says_the_jobs_go_on(daemon: DaemonProcess, tmp_path: Path) -> None:
    archive = archive_of(tmp_path, "a.tiff")  # no daemon runs: the job stays queued
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as err, sigint_heeded():
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "--config", str(daemon.config_file), "--data-dir",
             str(daemon.data_dir), "batch", "--wait", str(archive)],
            env=daemon.env, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        wait_for(lambda: "batch run 1: 0/1 job(s) done" in stderr.read_text(), 60, what="the wait to begin")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "stopped waiting; the jobs go on in the daemon (oncoagent batch show 1)" in stderr.read_text()
    shown = daemon.cli("batch", "show", "1")
    assert "status      processing" in shown.stdout and "queued 1" in shown.stdout  # the run itself was done


def test_on_a_terminal_batch_wait_draws_its_bars(running: DaemonProcess, tmp_path: Path) -> None:
    archive = archive_of(tmp_path, "a-sleep0.5.tiff", "b.tiff")
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "--config", str(running.config_file), "--data-dir",
         str(running.data_dir), "batch", "--wait", str(archive)],
        env=running.env, stdout=subprocess.PIPE, stderr=terminal, text=True)
    os.close(terminal)
    drawn: list[bytes] = []

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the command and its terminal are gone
                return
            if not chunk:
                return
            drawn.append(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        stdout, _ = proc.communicate(timeout=120)
        reader.join(30)
    finally:
        os.close(controller)
    screen = b"".join(drawn).decode(errors="replace")
    assert proc.returncode == 0, stdout + screen
    assert "2/2 job(s) done (2 succeeded)" in stdout
    assert "reading: 100%" in screen and "2/2 [" in screen  # the files read, a tqdm bar
    assert "queueing: 2input" in screen
    assert f"batch run {run_id(stdout)}: 100%" in screen and "2/2 jobs" in screen  # the jobs followed to their end
    assert "\r" in screen  # redrawn in place
    recorded = next(line for line in screen.splitlines() if re.search(r"recorded as input \d+\b", line))
    assert recorded.startswith("20")  # the log record on a line of its own, above the bar, not after it
