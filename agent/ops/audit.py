"""The association audit trail, written off the accept path.

The acceptor tells :class:`AuditTrail` of every association as it ends or is refused (an
:class:`~dicom_node.records.AssociationObserver`); the record goes into a bounded queue at once and a
background thread writes what has gathered in one transaction per batch. A flood of refused connections is
thus a few batched inserts, never one synchronous transaction per connection on the acceptor's thread. When
the queue is full the record is dropped and counted (``oncoagent_audit_records_dropped_total``), with one
warning per ``WARN_INTERVAL_S`` saying how many.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from agent.errors import StoreError
from dicom_node.records import AssociationRecord

log = logging.getLogger(__name__)

QUEUE_BOUND = 10_000
MAX_BATCH = 500
WARN_INTERVAL_S = 60.0

Writer = Callable[[Sequence[AssociationRecord]], object]  # Store.audit_add


class AuditTrail:
    def __init__(self, write: Writer, on_dropped: Callable[[int], None] = lambda _n: None,
                 bound: int = QUEUE_BOUND, max_batch: int = MAX_BATCH) -> None:
        self.write = write
        self.on_dropped = on_dropped
        self.max_batch = max_batch
        self._queue: queue.Queue[AssociationRecord] = queue.Queue(maxsize=bound)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-trail", daemon=True)
        self._lock = threading.Lock()
        self._dropped_since_warning = 0
        self._next_warning = 0.0
        self.written = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (within ``timeout``), then end the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def queued(self) -> int:
        """Records waiting to be written."""
        return self._queue.qsize()

    # ---------------------------------------------------------------------- AssociationObserver

    def association_accepted(self, record: AssociationRecord, /) -> None:
        """Nothing yet: the association's record is written once it ends, with what was stored on it."""

    def association_refused(self, record: AssociationRecord, /) -> None:
        self._put(record)

    def association_ended(self, record: AssociationRecord, /) -> None:
        self._put(record)

    # ---------------------------------------------------------------------- the queue

    def _put(self, record: AssociationRecord) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._dropped(1, "the audit queue is full")

    def _dropped(self, count: int, why: str) -> None:
        self.on_dropped(count)
        with self._lock:
            self._dropped_since_warning += count
            now = time.monotonic()
            if now < self._next_warning:
                return
            dropped, self._dropped_since_warning = self._dropped_since_warning, 0
            self._next_warning = now + WARN_INTERVAL_S
        log.warning("dropped %d association audit record(s): %s (oncoagent_audit_records_dropped_total counts "
                    "them all; this is said at most once a minute)", dropped, why)

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write(batch)

    def _write(self, batch: list[AssociationRecord]) -> None:
        try:
            self.write(batch)
        except StoreError as exc:
            self._dropped(len(batch), f"the store refused them ({exc})")
        except Exception:  # a defect must not end the audit thread: the next batch may well be written
            log.exception("writing %d association audit record(s) failed", len(batch))
            self._dropped(len(batch), "writing them failed")
        else:
            self.written += len(batch)
