"""The systemd watchdog is pinged on time while a folder scan hangs on a share, and SIGTERM still stops cleanly.

The daemon runs as a subprocess with ``$NOTIFY_SOCKET`` on a unix datagram socket this test binds and
``WATCHDOG_USEC`` set, as systemd starts it; its folder watcher (``tests/support/blocked_scan.py``, handed in
through the daemon's constructor) blocks in ``open()`` on a FIFO until the test opens the other end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent.daemon import SCAN_STOP_GRACE_S
from tests.conftest import REPO
from tests.support.waiting import wait_for

WATCHDOG_USEC = 3_000_000  # systemd would kill the daemon after 3 s without WATCHDOG=1; it pings every 1.5 s


class NotifyListener:
    """The datagrams a daemon sends to ``$NOTIFY_SOCKET``, with when they arrived (monotonic seconds)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def times(self, message: str, since: float = 0.0) -> list[float]:
        return [t for t, m in list(self.messages) if message in m.splitlines() and t >= since]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    folder = Path(tempfile.mkdtemp(prefix="oa-notify-", dir="/tmp"))  # a socket path must stay under 108 bytes
    listener = NotifyListener(folder / "notify.sock")
    yield listener
    listener.close()
    shutil.rmtree(folder, ignore_errors=True)


def test_watchdog_pings_keep_coming_while_a_scan_hangs_and_sigterm_stops(tmp_path: Path,
                                                                         notify: NotifyListener) -> None:
    gate = tmp_path / "share-gate"
    os.mkfifo(gate)
    config = tmp_path / "oncoagent.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"),
        "scp": {"enabled": False},
        "executor": {"workers": 1, "shutdown_grace_s": 1.0},
        "ingest": {"scan_interval_s": 0.2, "settle_seconds": 0},
    }))
    env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(notify.path),
           "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    env.pop("WATCHDOG_PID", None)
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tests.support.blocked_scan", str(config), str(gate)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_for(lambda: notify.times("READY=1"), 60, what="READY=1 from the daemon")
        wait_for(lambda: Path(f"{gate}.blocked-1").exists(), 10, what="the first scan to hang")

        # while the scan hangs, six pings come, none later than the watchdog's deadline after the one before
        start = time.monotonic()
        wait_for(lambda: len(notify.times("WATCHDOG=1", since=start)) >= 6, 30,
                 what=f"six watchdog pings during the hung scan ({log_path})")
        pings = notify.times("WATCHDOG=1", since=start)
        assert not Path(f"{gate}.done-1").exists()  # the scan hung the whole time
        gaps = [b - a for a, b in zip([start, *pings], pings, strict=False)]
        assert max(gaps) < WATCHDOG_USEC / 1e6, gaps

        # the share answers: that scan ends, the next one starts (and hangs again)
        fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)  # the hung scan is the reader
        os.close(fd)
        wait_for(lambda: Path(f"{gate}.done-1").exists(), 10, what="the released scan to end")
        wait_for(lambda: Path(f"{gate}.blocked-2").exists(), 10, what="the next scan")

        # SIGTERM while a scan hangs: a clean stop, after at most the scan's grace
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=SCAN_STOP_GRACE_S + 30) == 0, log_path.read_text()
        assert notify.times("STOPPING=1", since=stopping)
        log_text = log_path.read_text()
        assert "a folder scan is still running" in log_text and "stopped" in log_text, log_text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
