"""The daemon as a subprocess, for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml

from agent.batch_summary import run_document
from agent.records import BatchRunStatus
from agent.store import Store
from tests.conftest import REPO
from tests.support.net import free_port
from tests.support.waiting import wait_for


class DaemonProcess:
    """``oncoagent run`` with its own data folder; its DICOM SCP and its HTTP endpoint (``/metrics``,
    ``/healthz``) on free ports unless the config sets them."""

    def __init__(self, root: Path, config: dict[str, Any], env: dict[str, str] | None = None,
                 wrap: list[str] | None = None) -> None:
        self.root = root
        self.wrap = wrap or []  # a command the daemon runs under (a network namespace of its own)
        self.data_dir = root / "data"
        self.config_file = root / "oncoagent.yaml"
        config = {**config, "scp": {"port": free_port(), **config.get("scp", {})},
                  "http": {"port": free_port(), **config.get("http", {})},
                  "web": {"port": free_port(), **config.get("web", {})}}
        self.scp_port: int = config["scp"]["port"]
        self.http_port: int = config["http"]["port"]
        self.web_port: int = config["web"]["port"]
        self.scp_aet: str = config["scp"].get("ae_title", "ONCOAGENT")
        self.config_file.write_text(yaml.safe_dump(config))
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.env.pop("ONCOAGENT_WEB__PORT", None)  # the config's port (tests/conftest.py sets 0 for the others)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "daemon.log"
        self.starts = 0

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent.cli", "--config", str(self.config_file), "--data-dir", str(self.data_dir),
             *args],
            env=self.env, capture_output=True, text=True, timeout=120, check=False,
        )

    def start(self, wait_ready: bool = True) -> DaemonProcess:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"---- start {self.starts} ----\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [*self.wrap, sys.executable, "-m", "agent.cli", "--config", str(self.config_file), "--data-dir",
             str(self.data_dir), "run"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        if wait_ready:
            marker = f"---- start {self.starts} ----"
            wait_for(lambda: self._ready(marker), 60, what="daemon start")
        return self

    def _ready(self, marker: str) -> bool:
        """Whether this start logged it is running; fails at once, with the log, when the daemon exited."""
        since_start = self.log().split(marker)[-1]
        if "oncoagent running" in since_start:
            return True
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the daemon exited with {self.proc.returncode} before it was ready:\n{since_start}")
        return False

    def http_get(self, path: str) -> tuple[int, str]:
        """GET ``path`` from the daemon's HTTP endpoint: (status, body)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=30) as answer:
                return int(answer.status), answer.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli_json(self, *args: str) -> Any:
        """``oncoagent ARGS`` (a ``--json`` command) parsed; asserts it succeeded."""
        proc = self.cli(*args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def status(self) -> dict[str, Any]:
        found: dict[str, Any] = self.cli_json("status", "--json")
        return found

    def counts(self) -> dict[str, Any]:
        """What ``status()`` reports (jobs and outbox entries by status, ...), read from the daemon's store in
        this process: for polling. Each ``oncoagent status`` is a new Python process (about a second of CPU),
        which a poll every half second takes from the daemon's own workers on a two-core machine."""
        store = self._open_store()
        try:
            found: dict[str, Any] = json.loads(json.dumps(store.counts()))  # as the command prints it
        finally:
            store.close()
        return found

    def batch_runs(self) -> list[dict[str, Any]]:
        """What ``oncoagent batch runs --json`` lists, read in this process (for polling, as :meth:`counts`)."""
        store = self._open_store()
        try:
            found: list[dict[str, Any]] = json.loads(json.dumps([run_document(p) for p in store.batch_runs()]))
        finally:
            store.close()
        return found

    def _open_store(self) -> Store:
        config = yaml.safe_load(self.config_file.read_text()) or {}
        url = (config.get("store") or {}).get("url") or f"sqlite:///{self.data_dir / 'oncoagent.db'}"
        return Store.open(url, migrate=False)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.wait(20)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.wait(10)

    def discard(self) -> None:
        """End a daemon whose test has checked all it needs: SIGKILL it and its workers, and wait until they
        are gone. For teardown: a graceful stop spends two to three seconds shutting down for nobody, and what
        it does is tested where it is asserted (tests/e2e/test_daemon.py's SIGTERM and SIGINT tests)."""
        if not self.alive():
            return
        assert self.proc is not None
        try:
            family = [psutil.Process(self.proc.pid)]
            family += family[0].children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        for proc in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        self.wait(30)
        wait_for(lambda: not any(map(_running, family)), 30, what="the daemon's workers to end")


def _running(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is frozen (SIGSTOP: an armed failpoint fired in it); False once it is gone."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_STOPPED)
    except psutil.NoSuchProcess:
        return False


def record_finished_run(url: str, batch: str, slot: float, paths: list[Path] | None = None) -> None:
    """Record in the store at ``url`` that ``batch`` ran for ``slot`` and was done: a daemon starting later
    takes the latest slot of its cron since then as missed, and runs it at once."""
    store = Store.open(url)
    try:
        run = store.batch_run_begin(batch, slot, paths or [], False, owner="earlier", lease_s=60, now=slot)
        assert run is not None
        store.batch_run_finish(run.id, "earlier", BatchRunStatus.DONE, None, slot + 60)
    finally:
        store.close()
