"""The daemon's Prometheus metrics, on a registry of its own (never the library's global one).

Events count themselves as they happen (instances received, associations accepted, refused by reason, job and
association durations). What the store holds (jobs by status, the queue, the outbox backlog) is read from the
store at scrape time by :class:`StoreCollector`, so it is right after a restart. Labels take values from small
fixed sets only (refusal reasons, statuses, pipeline names): never a peer's AE title or address.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.errors import StoreError
from agent.records import Job, JobStatus, OutboxStatus
from agent.store import Store
from dicom_node.records import AssociationRecord, RefusalReason

log = logging.getLogger(__name__)

PREFIX = "oncoagent"
JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)
ASSOCIATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)


class DaemonMetrics:
    """The event-fed metrics; an :class:`~dicom_node.records.AssociationObserver` (counts only, at once)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.instances_received = Counter(f"{PREFIX}_dicom_instances_received", "DICOM instances received and "
                                          "stored by the SCP (a resent instance counts again)", registry=r)
        self.associations_accepted = Counter(f"{PREFIX}_dicom_associations_accepted",
                                             "DICOM associations accepted", registry=r)
        self.associations_refused = Counter(f"{PREFIX}_dicom_associations_refused", "DICOM associations refused, "
                                            "or connections dropped before one, by reason", ["reason"], registry=r)
        for reason in RefusalReason:
            self.associations_refused.labels(reason.value)  # every reason present from the start, at 0
        self.association_seconds = Histogram(f"{PREFIX}_dicom_association_duration_seconds",
                                             "how long accepted associations lasted", buckets=ASSOCIATION_BUCKETS,
                                             registry=r)
        self.job_seconds = Histogram(f"{PREFIX}_job_run_seconds", "run time of finished jobs (last attempt)",
                                     ["pipeline"], buckets=JOB_BUCKETS, registry=r)
        self.audit_dropped = Counter(f"{PREFIX}_audit_records_dropped", "association audit records dropped "
                                     "because the audit queue was full or the store refused them", registry=r)

    # ---------------------------------------------------------------------- AssociationObserver

    def association_accepted(self, record: AssociationRecord, /) -> None:
        self.associations_accepted.inc()

    def association_refused(self, record: AssociationRecord, /) -> None:
        if record.refusal is not None:
            self.associations_refused.labels(record.refusal.value).inc()

    def association_ended(self, record: AssociationRecord, /) -> None:
        self.association_seconds.observe(max(0.0, record.ended_at - record.started_at))

    # ---------------------------------------------------------------------- other events

    def instance_received(self, _received: object = None) -> None:
        self.instances_received.inc()

    def job_finished(self, job: Job) -> None:
        if job.started_at is not None and job.finished_at is not None:
            self.job_seconds.labels(job.pipeline).observe(max(0.0, job.finished_at - job.started_at))


class StoreCollector(Collector):
    """Jobs by status, the queue depth and the outbox backlog by status, read from the store per scrape; and
    the associations open now. When the store does not answer, ``oncoagent_store_up`` is 0 and its numbers are
    left out of that scrape (an absent series, not a wrong zero)."""

    def __init__(self, store: Store, active_associations: Callable[[], int]) -> None:
        self.store = store
        self.active_associations = active_associations

    def collect(self) -> Iterator[Metric]:
        active = GaugeMetricFamily(f"{PREFIX}_dicom_associations_active", "DICOM associations open now")
        active.add_metric([], self.active_associations())
        yield active
        up = GaugeMetricFamily(f"{PREFIX}_store_up", "1 when the job store answered this scrape")
        try:
            counts = self.store.backlog()
        except StoreError as exc:
            log.warning("metrics: the store did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily(f"{PREFIX}_jobs", "jobs in the store by status", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts["jobs"].get(status.value, 0))
        yield jobs
        queue = GaugeMetricFamily(f"{PREFIX}_queue_depth", "jobs queued, waiting for a worker or a retry")
        queue.add_metric([], counts["jobs"].get(JobStatus.QUEUED.value, 0))
        yield queue
        outbox = GaugeMetricFamily(f"{PREFIX}_outbox_entries", "outbox entries by status (pending: the backlog "
                                   "to PACS)", labels=["status"])
        for entry_status in OutboxStatus:
            outbox.add_metric([entry_status.value], counts["outbox"].get(entry_status.value, 0))
        yield outbox
