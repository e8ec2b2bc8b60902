"""The daemon's operations put together: metrics, the audit trail, the health checks and their HTTP server,
built from the settings and the store, with the few hooks the daemon calls (an association observer for the
SCP, ``instance_received``, ``job_finished``, ``tick``)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from agent.config import Settings
from agent.errors import OncoAgentError
from agent.ops.audit import AuditTrail
from agent.ops.health import HealthChecks, thread_alive
from agent.ops.http import OpsServer
from agent.ops.metrics import DaemonMetrics, StoreCollector
from agent.records import Job
from agent.store import Store
from dicom_node.records import AssociationObserver, AssociationRecord


class Observers:
    """Tells each observer in turn (an :class:`~dicom_node.records.AssociationObserver` itself)."""

    def __init__(self, *observers: AssociationObserver) -> None:
        self.observers = observers

    def association_accepted(self, record: AssociationRecord, /) -> None:
        for observer in self.observers:
            observer.association_accepted(record)

    def association_refused(self, record: AssociationRecord, /) -> None:
        for observer in self.observers:
            observer.association_refused(record)

    def association_ended(self, record: AssociationRecord, /) -> None:
        for observer in self.observers:
            observer.association_ended(record)


class Operations:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.metrics = DaemonMetrics()
        self.audit = AuditTrail(store.audit_add, on_dropped=self.metrics.audit_dropped.inc)
        self.observer = Observers(self.metrics, self.audit)
        self.health = HealthChecks(settings.http.stale_after_s)
        self.health.add("store", self._store_answers)
        self._server = OpsServer(settings.http, self.metrics.registry, self.health) if settings.http.enabled \
            else None

    def watch(self, executor: threading.Thread, scp_listening: Callable[[], bool] | None,
              active_associations: Callable[[], int]) -> None:
        """Add the daemon's parts to the checks and the metrics once they exist."""
        self.health.add("executor", thread_alive(executor))
        if scp_listening is not None:
            self.health.add("scp", lambda: (scp_listening(), "listening" if scp_listening() else "not listening"))
        self.metrics.registry.register(StoreCollector(self.store, active_associations))

    def start(self) -> None:
        self.audit.start()
        if self._server is not None:
            http = self.settings.http
            try:
                self._server.start()
            except OSError as exc:
                self.audit.stop()
                raise OncoAgentError(f"cannot listen for HTTP (metrics, health) on {http.host}:{http.port}: "
                                     f"{exc.strerror or exc}") from exc

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self.audit.stop()

    def tick(self) -> None:
        self.health.tick()

    def job_finished(self, job: Job) -> None:
        self.metrics.job_finished(job)

    def _store_answers(self) -> tuple[bool, str]:
        self.store.ping()
        return True, "answers"
