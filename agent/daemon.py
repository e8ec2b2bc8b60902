"""``oncoagent run``: ingest, routing, workers and schedules in one process until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent import systemd
from agent.config import Settings
from agent.dicom_wiring import NamedOutbox, outbox_sender, storage_scp
from agent.dispatch import Dispatcher
from agent.errors import OncoAgentError
from agent.executors import JobExecutor, executor_for
from agent.ingest import FolderWatcher
from agent.job_outcomes import node_name
from agent.lockfile import DataDirLock
from agent.ops.wiring import Operations
from agent.purge import PeriodicPurge
from agent.records import Job
from agent.router import Router
from agent.scheduler import BatchScheduler
from agent.signals import StopOnSignals
from agent.store import Store
from agent.web.server import WebServer
from pipelines import registry

log = logging.getLogger(__name__)


def _remove_partial_writes(settings: Settings) -> None:
    """Files a crash left half-written (never acknowledged, never recorded) are removed at start. In a shared
    root (``storage.shared_root``, the Dask staging folder) other hosts write too: there only what is older
    than the longest a job may run is this start's to remove."""
    paths = settings.paths
    incoming = list(paths.storage.rglob(".incoming-*"))
    shared = [*paths.shared_staging.glob("*.partial"), *(incoming if paths.shared else [])]
    local = [*paths.tmp.glob("*.partial"), *([] if paths.shared else incoming)]
    old = time.time() - settings.executor.job_timeout_s
    leftovers = [*(p for p in shared if _mtime(p) < old), *local]
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if leftovers:
        log.info("removed %d partial write(s) left by an earlier stop", len(leftovers))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")  # gone already


# How long a stop waits for a folder scan in progress (taking a file) before leaving it to the process's end.
SCAN_STOP_GRACE_S = 5.0

WatcherFactory = Callable[[Store, Settings], FolderWatcher]


class FolderScans:
    """The folder watcher's scans on a thread of their own: a full rescan of a slow or hung share never delays
    the main loop (the systemd watchdog ping, routing, the executor's health)."""

    def __init__(self, watcher: FolderWatcher, interval_s: float, stop: threading.Event) -> None:
        self.watcher = watcher
        self.interval_s = interval_s
        self.stop = stop
        self.scanned = threading.Event()  # set after each scan: the main loop routes what it took
        self.thread = threading.Thread(target=self._run, name="folder-scans", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                if self.watcher.scan(time.time()):
                    self.scanned.set()
            except Exception:
                log.exception("folder scan failed; will retry")
            self.stop.wait(self.interval_s)

    def join(self, timeout: float) -> bool:
        """Wait for the scan in progress to end (``stop`` is set); False when it is still stuck."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.warning("a folder scan is still running after %.0f s (a share not answering?); not waiting for it",
                        timeout)
            return False
        return True


def _jobs_on(settings: Settings) -> str:
    cfg = settings.executor
    return f"Dask at {cfg.dask.scheduler}" if cfg.backend == "dask" else f"{cfg.workers} local worker(s)"


class Daemon:
    def __init__(self, settings: Settings, watcher_factory: WatcherFactory = FolderWatcher) -> None:
        self.settings = settings
        self.watcher_factory = watcher_factory  # tests hand in a watcher whose scan blocks
        self._routing_error: str | None = None  # the last routing failure while routing fails

    def run(self) -> int:
        """Run until a stop signal; return the process exit status."""
        settings = self.settings
        paths = settings.paths
        paths.create()
        with DataDirLock(paths.lock), StopOnSignals() as stop:
            Router(settings.routing.rules).check_pipelines(registry.names())
            registry.validate_options(settings.pipelines)
            store = Store.open(settings.database_url)
            ops = Operations(settings, store)
            web = WebServer(settings, store) if settings.web.enabled else None
            try:
                return self._serve(store, stop, ops, web)
            finally:
                if web is not None:
                    web.stop()
                ops.stop()  # after the SCP stopped: the last associations' records are written
                store.close()

    def _serve(self, store: Store, stop: threading.Event, ops: Operations, web: WebServer | None) -> int:
        settings = self.settings
        ops.start()  # /metrics and /healthz (first: a port in use stops the start before anything runs)
        if web is not None:
            web.start()  # the worklist; a port in use stops the start too
            ops.health.add("web", lambda: (web.alive(), "serving" if web.alive() else "stopped"))
        _remove_partial_writes(settings)
        node = node_name(settings)
        released = store.outbox_release(node)
        if released:
            log.info("released %d outbox entries this daemon held when it stopped", released)
        sender = outbox_sender(NamedOutbox(store, node, settings.outbox.lease_s), settings.destinations,
                               settings.outbox, settings.scp.ae_title)

        if web is not None:
            web.app.state.web.outbox_queued = sender.wake  # a sign-off's verified SR goes out at once

        def finished(job: Job) -> None:
            sender.wake()  # a success commits its outbox entries with it; the sender only needs to look
            ops.job_finished(job)

        scp = storage_scp(store, settings.scp, settings.paths.storage, ops.metrics.instance_received,
                          ops.observer) if settings.scp.enabled else None
        if scp is not None:
            try:
                scp.start()
            except OSError as exc:
                raise OncoAgentError(
                    f"cannot listen for DICOM on {settings.scp.host}:{settings.scp.port}: {exc.strerror or exc}"
                ) from exc
        executor = executor_for(store, settings, on_finished=finished)
        executor.start()
        exec_thread = threading.Thread(target=executor.run, name="executor", daemon=True)
        exec_thread.start()
        sender_thread = threading.Thread(target=sender.run, name="outbox", daemon=True)
        sender_thread.start()
        watcher = self.watcher_factory(store, settings)
        scans = FolderScans(watcher, settings.ingest.scan_interval_s, stop)
        scans.start()
        dispatcher = Dispatcher(store, settings, receiving=scp.receiving_series if scp else frozenset)
        scheduler = BatchScheduler(store, settings, on_queued=executor.wake)
        scheduler.start()
        purges = PeriodicPurge(store, settings, stop, busy=scp.receiving_series if scp else frozenset)
        purges.start()  # retention, on its own thread; only when configured
        ops.watch(exec_thread, scp.listening if scp else None, scp.active_associations if scp else lambda: 0)

        log.info(
            "oncoagent running: data %s, jobs on %s, watching %s, DICOM %s",
            settings.data_dir, _jobs_on(settings), ", ".join(str(f) for f, _ in watcher.folders) or "nothing",
            f"{settings.scp.ae_title}@{settings.scp.host}:{settings.scp.port}" if scp else "off",
        )
        systemd.notify("READY=1\nSTATUS=running")
        ping_every = systemd.watchdog_interval()
        last_ping = 0.0
        status = 0
        tick = min(settings.ingest.scan_interval_s, 1.0)
        if ping_every is not None:
            tick = min(tick, ping_every / 2)
        next_route = 0.0
        while not stop.is_set():
            now = time.time()
            ops.tick()
            if ping_every is not None and now - last_ping >= ping_every:
                systemd.notify("WATCHDOG=1")
                last_ping = now
            if not exec_thread.is_alive():
                log.critical("executor thread ended unexpectedly; stopping")
                status = 1
                break
            if now >= next_route or scans.scanned.is_set():
                scans.scanned.clear()
                next_route = now + settings.ingest.scan_interval_s
                self._route(dispatcher, executor, now)
            stop.wait(tick)

        systemd.notify("STOPPING=1")
        log.info("stopping: no new work accepted; waiting up to %.0f s for running jobs",
                 settings.executor.shutdown_grace_s)
        stop.set()  # the scan thread too, when the executor ended the loop
        if scp is not None:
            scp.stop()
        scans.join(SCAN_STOP_GRACE_S)
        purges.join(SCAN_STOP_GRACE_S)
        watcher.close()
        scheduler.stop()
        sender.stop()
        executor.stop()
        exec_thread.join(timeout=settings.executor.shutdown_grace_s + 3)
        sender_thread.join(timeout=1)
        log.info("stopped")
        return status

    def _route(self, dispatcher: Dispatcher, executor: JobExecutor, now: float) -> None:
        try:
            if dispatcher.route_ready(now):
                executor.wake()
        except Exception as exc:
            if self._routing_error is None:  # the traceback once per outage (a full disk), not every interval
                log.exception("routing failed; will retry each scan interval")
            elif str(exc) != self._routing_error:
                log.error("routing still fails: %s", exc)
            self._routing_error = str(exc)
        else:
            if self._routing_error is not None:
                log.info("routing works again")
            self._routing_error = None
