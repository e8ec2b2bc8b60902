"""The outbox sender: C-STORE of queued objects to PACS destinations, with retries across restarts.

Objects wait in the outbox (the daemon's store, handed in as an :class:`~dicom_node.records.Outbox`) until
the destination answers success. One association per destination and round, proposing each object's own
transfer syntax (and the uncompressed ones for uncompressed data). Outcomes:

* success or a warning status (0xB000, 0xB006, 0xB007): sent;
* the destination refused the SOP class or transfer syntax during negotiation, or answered a failure status
  that will not change (0xA9xx, 0xCxxx, 0x0122 SOP class not supported): failed for good, status recorded;
* no connection, association rejected or aborted, 0xA7xx out of resources, timeouts: retried with capped
  exponential backoff, the next attempt time kept in the outbox so a restart does not reset it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import Comprehensive3DSRStorage, ComprehensiveSRStorage
from pynetdicom import AE
from pynetdicom.association import Association

from dicom_node.records import Outbox, OutboxEntry
from dicom_node.settings import DestinationConfig, OutboxConfig
from dicom_node.sop_classes import UNCOMPRESSED
from dicom_node.transport import associate
from pipelines.retry import RetryStrategy

log = logging.getLogger(__name__)

WARNING_STATUSES = frozenset({0xB000, 0xB006, 0xB007})

FALLBACK_FOLDER = "fallback"
FALLBACK_CHAIN: dict[str, tuple[str, ...]] = {
    str(Comprehensive3DSRStorage): ("sr-comprehensive.dcm", "report-pdf.dcm"),
    str(ComprehensiveSRStorage): ("report-pdf.dcm",),
}


@dataclass(frozen=True)
class SendReport:
    sent: int = 0
    retry: int = 0
    failed: int = 0


class OutboxSender:
    def __init__(self, outbox: Outbox, destinations: Iterable[DestinationConfig], settings: OutboxConfig,
                 calling_ae_title: str) -> None:
        self.outbox = outbox
        self.destinations = {d.name: d for d in destinations}
        self.settings = settings
        self.calling_ae_title = calling_ae_title
        self.retry = RetryStrategy(settings.max_attempts, settings.backoff_base_s, settings.backoff_max_s)
        self._stop = threading.Event()
        self._wake = threading.Event()
        # outbox entry id -> the status a destination acknowledged it with, when the outbox could not record
        # that (its store on a full disk): recorded before each round, never sent again meanwhile
        self._acknowledged: dict[int, int] = {}

    # ----------------------------------------------------------------------------------- loop

    def run(self) -> None:
        """Send what is due until :meth:`stop`. After a failed round (the outbox's store refusing writes) the
        next one waits ``scan_interval_s``; the failure is logged once, not once per round."""
        failed_rounds = 0
        while not self._stop.is_set():
            try:
                self.send_due()
            except Exception as exc:  # whatever the daemon's outbox raises: this round failed, the next retries
                if not failed_rounds:
                    log.exception("outbox round failed (will keep trying): %s", exc)
                failed_rounds += 1
            else:
                if failed_rounds:
                    log.info("outbox rounds work again after %d failed", failed_rounds)
                failed_rounds = 0
            wait_s = self.settings.scan_interval_s if failed_rounds or self._acknowledged else self._next_wait()
            self._wake.wait(wait_s)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def _next_wait(self) -> float:
        due = self.outbox.outbox_next_due()
        if due is None:
            return self.settings.scan_interval_s
        return min(self.settings.scan_interval_s, max(0.05, due - time.time()))

    # ----------------------------------------------------------------------------------- sending

    def send_due(self) -> SendReport:
        for item_id, status in list(self._acknowledged.items()):
            with contextlib.suppress(Exception):  # still not recordable: logged when it was kept
                self.outbox.outbox_sent(item_id, status)
                del self._acknowledged[item_id]
                log.info("outbox %d: its delivery is recorded now", item_id)
        by_destination: dict[str, list[OutboxEntry]] = defaultdict(list)
        for item in self.outbox.outbox_claim():
            if item.id not in self._acknowledged:
                by_destination[item.destination].append(item)
        totals = SendReport()
        for name, items in by_destination.items():
            if self._stop.is_set():
                break
            destination = self.destinations.get(name)
            if destination is None:
                for item in items:
                    self.outbox.outbox_failed(item.id, f"destination {name!r} is no longer configured")
                totals = _add(totals, SendReport(failed=len(items)))
                continue
            totals = _add(totals, self._send_to(destination, items))
        return totals

    def _send_to(self, destination: DestinationConfig, items: list[OutboxEntry]) -> SendReport:
        ready: list[tuple[OutboxEntry, str]] = []
        failed = 0
        for item in items:
            try:
                meta = pydicom.dcmread(item.path, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
                ready.append((item, str(meta.TransferSyntaxUID)))
            except (OSError, InvalidDicomError, ValueError, AttributeError) as exc:
                self.outbox.outbox_failed(item.id, f"cannot read {item.path}: {exc}")
                failed += 1
        if not ready:
            return SendReport(failed=failed)

        ae = AE(ae_title=destination.calling_ae_title or self.calling_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.settings.timeout_s
        for sop_class, syntax in sorted({(i.sop_class_uid, ts) for i, ts in ready}):
            syntaxes = list(dict.fromkeys([syntax, *UNCOMPRESSED])) if syntax in UNCOMPRESSED else [syntax]
            if len(ae.requested_contexts) < 128:
                ae.add_requested_context(sop_class, syntaxes)
        assoc = associate(ae, destination)
        if not assoc.is_established:
            refused = {str(cx.abstract_syntax) for cx in assoc.rejected_contexts}
            if refused and not assoc.is_rejected:  # negotiation refused every class we proposed
                return _add(SendReport(failed=failed), self._refuse_all(destination, ready))
            why = "association rejected" if assoc.is_rejected else "no association (peer down or unreachable)"
            return _add(SendReport(failed=failed), self._retry_all([i for i, _ in ready], f"{destination.name}: {why}"))
        try:
            return _add(SendReport(failed=failed), self._store_each(assoc, destination, ready))
        finally:
            if assoc.is_established:
                assoc.release()

    def _store_each(self, assoc: Association, destination: DestinationConfig,
                    ready: list[tuple[OutboxEntry, str]]) -> SendReport:
        accepted: dict[str, set[str]] = defaultdict(set)
        for cx in assoc.accepted_contexts:
            accepted[str(cx.abstract_syntax)].add(str(cx.transfer_syntax[0]))
        sent = retry = failed = 0
        for index, (item, syntax) in enumerate(ready):
            if not assoc.is_established:
                report = self._retry_all([i for i, _ in ready[index:]], f"{destination.name}: association lost")
                return SendReport(sent, retry + report.retry, failed + report.failed)
            syntaxes = accepted.get(item.sop_class_uid, set())
            payload: Path | Dataset
            if syntax in syntaxes:
                payload = item.path  # sent as stored, no re-encoding
            elif syntax in UNCOMPRESSED and syntaxes & set(UNCOMPRESSED):
                payload = pydicom.dcmread(item.path)  # pynetdicom re-encodes to the accepted uncompressed syntax
            else:
                report = self._refuse_all(destination, [(item, syntax)])
                retry, failed = retry + report.retry, failed + report.failed
                continue
            try:
                response = assoc.send_c_store(payload)
            except (OSError, ValueError, RuntimeError) as exc:
                retry += self._retry_one(item, f"{destination.name}: C-STORE failed: {exc}")
                continue
            status = int(response.Status) if response and "Status" in response else None
            if status is None:
                retry += self._retry_one(item, f"{destination.name}: no C-STORE response (timeout or abort)")
            elif status == 0x0000 or status in WARNING_STATUSES:
                self._record_sent(item, destination, status)
                sent += 1
            elif (status & 0xFF00) == 0xA700:
                retry += self._retry_one(item, f"{destination.name}: out of resources (0x{status:04X})", status)
            else:
                self.outbox.outbox_failed(item.id, f"{destination.name} refused the object: status 0x{status:04X}",
                                         status=status)
                log.warning("outbox %d: %s refused with 0x%04X", item.id, destination.name, status)
                failed += 1
        return SendReport(sent, retry, failed)

    def _record_sent(self, item: OutboxEntry, destination: DestinationConfig, status: int) -> None:
        try:
            self.outbox.outbox_sent(item.id, status)
        except Exception:  # whatever the daemon's outbox raises: keep the acknowledgement, do not send it again
            log.exception("outbox %d: %s stored %s (status 0x%04X) but that cannot be recorded yet; it will not "
                          "be sent again", item.id, destination.name, item.sop_instance_uid, status)
            self._acknowledged[item.id] = status
            return
        log.info("outbox %d: %s stored %s (status 0x%04X)", item.id, destination.name, item.sop_instance_uid,
                 status)

    def _refuse_all(self, destination: DestinationConfig, items: list[tuple[OutboxEntry, str]]) -> SendReport:
        """Items whose SOP class the destination refused: send their fallback next, or fail them for good."""
        retry = failed = 0
        for item, syntax in items:
            refusal = (f"{destination.name} refused SOP class {item.sop_class_uid} "
                       f"with transfer syntax {syntax} during association negotiation")
            if self._fall_back(item, refusal):
                retry += 1
            else:
                self.outbox.outbox_failed(item.id, refusal)
                log.warning("outbox %d: %s", item.id, refusal)
                failed += 1
        return SendReport(retry=retry, failed=failed)

    def _fall_back(self, item: OutboxEntry, refusal: str) -> bool:
        """Queue the next object of the fallback chain in place of a refused one; False when there is none."""
        fallback = fallback_for(item.path, item.sop_class_uid)
        if fallback is None:
            return False
        try:
            header = pydicom.dcmread(fallback, stop_before_pixels=True)
        except (OSError, InvalidDicomError) as exc:
            log.error("outbox %d: fallback %s is unreadable: %s", item.id, fallback, exc)
            return False
        step = f"{refusal}; sending {fallback.name} ({header.SOPClassUID.name}) instead"
        note = f"{item.note}\n{step}" if item.note else step  # the whole chain stays on record
        self.outbox.outbox_substitute(item.id, fallback, str(header.SOPClassUID), str(header.SOPInstanceUID), note)
        log.warning("outbox %d: %s", item.id, step)
        return True

    def _retry_one(self, item: OutboxEntry, error: str, status: int | None = None) -> int:
        retry_at = self.retry.retry_at(item.attempts + 1, time.time())
        self.outbox.outbox_failed(item.id, error, status=status, retry_at=retry_at)
        if retry_at is None:
            log.error("outbox %d: giving up after %d attempts: %s", item.id, item.attempts + 1, error)
            return 0
        log.warning("outbox %d: %s; next attempt in %.0f s", item.id, error, retry_at - time.time())
        return 1

    def _retry_all(self, items: list[OutboxEntry], error: str) -> SendReport:
        retried = sum(self._retry_one(item, error) for item in items)
        return SendReport(retry=retried, failed=len(items) - retried)


def _add(a: SendReport, b: SendReport) -> SendReport:
    return SendReport(a.sent + b.sent, a.retry + b.retry, a.failed + b.failed)


def fallback_for(path: Path, sop_class_uid: str) -> Path | None:
    """The object to send when a destination refuses ``sop_class_uid``: Comprehensive 3D SR falls back to
    Comprehensive SR, which falls back to the report as Encapsulated PDF. Fallbacks live in ``fallback/``
    of the result folder."""
    folder = path.parent if path.parent.name == FALLBACK_FOLDER else path.parent / FALLBACK_FOLDER
    for candidate in FALLBACK_CHAIN.get(sop_class_uid, ()):
        target = folder / candidate
        if target.is_file():
            return target
    return None

