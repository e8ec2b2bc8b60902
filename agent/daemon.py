"""``oncoagent run``: ingest, routing, workers and schedules in one process until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import shutil
import threading
import time

from agent import systemd
from agent.config import Settings
from agent.dicom_wiring import outbox_sender, storage_scp
from agent.dispatch import Dispatcher
from agent.errors import OncoAgentError
from agent.executor import Executor
from agent.ingest import FolderWatcher
from agent.lockfile import DataDirLock
from agent.records import Job
from agent.router import Router
from agent.scheduler import BatchScheduler
from agent.signals import StopOnSignals
from agent.store import Store
from pipelines import registry

log = logging.getLogger(__name__)


def _remove_partial_writes(settings: Settings) -> None:
    """Files a crash left half-written (never acknowledged, never recorded) are removed at start."""
    paths = settings.paths
    leftovers = [*paths.storage.rglob(".incoming-*"), *paths.tmp.glob("*.partial")]
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if leftovers:
        log.info("removed %d partial write(s) left by an earlier stop", len(leftovers))


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def run(self) -> int:
        """Run until a stop signal; return the process exit status."""
        settings = self.settings
        paths = settings.paths
        paths.create()
        with DataDirLock(paths.lock), StopOnSignals() as stop:
            Router(settings.routing.rules).check_pipelines(registry.names())
            registry.validate_options(settings.pipelines)
            store = Store.open(settings.database_url)
            try:
                return self._serve(store, stop)
            finally:
                store.close()

    def _serve(self, store: Store, stop: threading.Event) -> int:
        settings = self.settings
        _remove_partial_writes(settings)
        requeued = store.requeue_running("daemon restarted after an unclean stop")
        if requeued:
            log.warning("re-queued %d job(s) left running by an earlier unclean stop: %s", len(requeued), requeued)
        sender = outbox_sender(store, settings.destinations, settings.outbox, settings.scp.ae_title)

        def finished(_job: Job) -> None:
            sender.wake()  # a success commits its outbox entries with it; the sender only needs to look

        scp = storage_scp(store, settings.scp, settings.paths.storage) if settings.scp.enabled else None
        if scp is not None:
            try:
                scp.start()
            except OSError as exc:
                raise OncoAgentError(
                    f"cannot listen for DICOM on {settings.scp.host}:{settings.scp.port}: {exc.strerror or exc}"
                ) from exc
        executor = Executor(store, settings, on_finished=finished)
        executor.start()
        exec_thread = threading.Thread(target=executor.run, name="executor", daemon=True)
        exec_thread.start()
        sender_thread = threading.Thread(target=sender.run, name="outbox", daemon=True)
        sender_thread.start()
        watcher = FolderWatcher(store, settings)
        dispatcher = Dispatcher(store, settings, receiving=scp.receiving_series if scp else frozenset)
        scheduler = BatchScheduler(store, settings, on_queued=executor.wake)
        scheduler.start()

        log.info(
            "oncoagent running: data %s, %d worker(s), watching %s, DICOM %s",
            settings.data_dir, settings.executor.workers, ", ".join(str(f) for f, _ in watcher.folders) or "nothing",
            f"{settings.scp.ae_title}@{settings.scp.host}:{settings.scp.port}" if scp else "off",
        )
        systemd.notify("READY=1\nSTATUS=running")
        ping_every = systemd.watchdog_interval()
        last_ping = 0.0
        status = 0
        tick = min(settings.ingest.scan_interval_s, 1.0)
        next_scan = 0.0
        while not stop.is_set():
            now = time.time()
            if ping_every is not None and now - last_ping >= ping_every:
                systemd.notify("WATCHDOG=1")
                last_ping = now
            if not exec_thread.is_alive():
                log.critical("executor thread ended unexpectedly; stopping")
                status = 1
                break
            if now >= next_scan:
                next_scan = now + settings.ingest.scan_interval_s
                self._ingest_cycle(watcher, dispatcher, executor, now)
            stop.wait(tick)

        systemd.notify("STOPPING=1")
        log.info("stopping: no new work accepted; waiting up to %.0f s for running jobs",
                 settings.executor.shutdown_grace_s)
        if scp is not None:
            scp.stop()
        watcher.close()
        scheduler.stop()
        sender.stop()
        executor.stop()
        exec_thread.join(timeout=settings.executor.shutdown_grace_s + 3)
        sender_thread.join(timeout=1)
        log.info("stopped")
        return status

    @staticmethod
    def _ingest_cycle(watcher: FolderWatcher, dispatcher: Dispatcher, executor: Executor, now: float) -> None:
        try:
            watcher.scan(now)
            if dispatcher.route_ready(now):
                executor.wake()
        except Exception:
            log.exception("ingest cycle failed; will retry")
