"""Group commit for received instances: one directory fsync and one database commit for all instances that
arrived meanwhile on concurrent associations.

Each C-STORE handler has already written and fsynced its file under its final name; it then hands the record
to :meth:`InstanceRecorder.record` and blocks until the folder holding the new name is fsynced and the record
is committed by the :class:`~dicom_node.records.InstanceRecords` the daemon handed in. Only then does it
answer success. When no commit is running and none is waiting (one association), the handler commits its
own record in its own thread: no hand-over to another thread. Otherwise the record waits in the queue of the
recorder thread, which commits everything queued meanwhile as soon as the running commit is done: with
several associations the fsyncs and the commit are shared.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from dicom_node.errors import RecordError
from dicom_node.records import Instance, InstanceRecords
from pipelines.durable import fsync_dir

log = logging.getLogger(__name__)

MAX_BATCH = 256


@dataclass
class _Pending:
    instance: Instance
    done: Future[bool]


class InstanceRecorder:
    def __init__(self, records: InstanceRecords) -> None:
        self.records = records
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._committing = threading.Lock()  # held by whichever thread commits: one commit at a time
        self._failing: str | None = None  # the store's last error while recording fails (under _committing)
        self._thread = threading.Thread(target=self._run, name="instance-recorder", daemon=True)
        self._thread.start()

    def record(self, instance: Instance, timeout: float = 60.0) -> bool:
        """Make the instance's file name durable and record it; True when it was new. Raises RecordError, also
        when its commit has not begun within ``timeout`` seconds: then it never will (the caller removes the
        file). A commit under way is waited for, whatever its length: its outcome is the instance's."""
        pending = _Pending(instance, Future())
        if self._queue.empty() and self._committing.acquire(blocking=False):
            try:  # nothing else to share the commit with: commit it here
                self._commit([pending])
            finally:
                self._committing.release()
        else:
            self._queue.put(pending)
        try:
            return pending.done.result(timeout=timeout)
        except TimeoutError:
            if pending.done.cancel():
                raise RecordError(f"not recorded: the store did not take it within {timeout:g} s") from None
            return pending.done.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            with self._committing:  # a handler's own commit first; what arrives meanwhile joins this batch
                if not self._gather(batch):
                    return

    def _gather(self, batch: list[_Pending]) -> bool:
        """Add what is queued to ``batch`` and commit it; False when the recorder is closing."""
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._commit(batch)
                return False
            batch.append(item)
        self._commit(batch)
        return True

    def _commit(self, batch: list[_Pending]) -> None:
        batch = [p for p in batch if p.done.set_running_or_notify_cancel()]  # not those given up on
        if not batch:
            return
        error: RecordError
        try:
            for folder in {p.instance.path.parent for p in batch}:
                fsync_dir(folder)
            results = self.records.add_instances([p.instance for p in batch])
        except OSError as exc:
            error = RecordError(f"cannot make instances durable: {exc}")
        except Exception as exc:  # whatever the daemon's store raises: not recorded, and the handlers must hear it
            if self._failing is None:  # the traceback once per outage (a full disk), not once per batch
                log.error("recording %d instance(s) failed", len(batch), exc_info=True)
            elif str(exc) != self._failing:
                log.error("recording %d instance(s) still fails: %s", len(batch), exc)
            self._failing = str(exc)
            error = RecordError(str(exc))
        else:
            if self._failing is not None:
                log.info("recording instances works again")
                self._failing = None
            for pending, new in zip(batch, results, strict=True):
                pending.done.set_result(new)
            return
        for pending in batch:
            pending.done.set_exception(error)
