"""A real dask.distributed cluster for tests and benchmarks: ``dask scheduler`` and ``dask worker`` processes.

Each worker runs under its nanny (as deployed), with one thread unless told otherwise, and sees the repository
on its ``PYTHONPATH`` (for test plugins) and the environment it is given (``OA_TEST_LEDGER``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support.net import free_port
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).parent / "dask")


class DaskCluster:
    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None, port: int | None = None) -> None:
        self.log_dir = log_dir
        self.port = port or free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
                    **(env or {})}
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        return subprocess.Popen([DASK, *args], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start(self, workers: int = 2, threads: int = 1, resources: str | None = None) -> DaskCluster:
        self.scheduler = self._spawn("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                                   "--no-dashboard", "--no-show"])
        for n in range(workers):
            self.add_worker(f"w{n}", threads, resources)
        self.wait_workers(workers)
        return self

    def add_worker(self, name: str, threads: int = 1, resources: str | None = None) -> None:
        args = ["worker", self.address, "--name", name, "--nthreads", str(threads), "--nworkers", "1",
                "--no-dashboard", "--host", "127.0.0.1", "--death-timeout", "60"]
        if resources:
            args += ["--resources", resources]
        self.workers[name] = self._spawn(name, args)

    def client_info(self) -> dict[str, object]:
        from distributed import Client

        with Client(self.address, timeout=10, set_as_default=False) as client:
            info: dict[str, object] = client.scheduler_info(n_workers=-1)
            info["datasets"] = list(client.list_datasets())
            info["tasks"] = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
            return info

    def wait_workers(self, count: int, timeout: float = 90) -> None:
        def enough() -> bool:
            try:
                workers = self.client_info()["workers"]
            except OSError:
                return False
            return isinstance(workers, dict) and len(workers) >= count

        wait_for(enough, timeout, what=f"{count} Dask worker(s) at {self.address}")

    def stop(self) -> None:
        procs = [*self.workers.values(), *([self.scheduler] if self.scheduler else [])]
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.log_dir.glob("*.log")))
