"""What the acceptor tells its :class:`~dicom_node.records.AssociationObserver`: each association accepted,
refused (with a :class:`~dicom_node.records.RefusalReason`) or ended with the instances stored on it, and each
connection dropped before an association for a reason of the acceptor's own.

Called on the acceptor's and the associations' threads; the observer's errors are logged, never raised: the
daemon's bookkeeping must not take an association down.
"""

from __future__ import annotations

import logging
import threading
import time

from dicom_node.association import AssociationInfo
from dicom_node.records import AssociationObserver, AssociationRecord, RefusalReason

log = logging.getLogger(__name__)

# The acceptor's own reasons for dropping a connection before its association, as the observer hears them; the
# rest ("closed by the peer", "shutdown", a connection lost) are not refusals and are not reported.
DROP_REASONS = {
    "pending limit": RefusalReason.PENDING_LIMIT, "no resources": RefusalReason.INTERNAL,
    "internal error": RefusalReason.INTERNAL, "protocol error": RefusalReason.PROTOCOL,
    "oversize request": RefusalReason.PROTOCOL, "TLS handshake failed": RefusalReason.TLS,
    "ARTIM timeout": RefusalReason.TIMEOUT, "association limit": RefusalReason.ASSOCIATION_LIMIT,
}


def refusal_reason(rsd: tuple[int, int, int]) -> RefusalReason:
    """The reason of an A-ASSOCIATE-RJ (result, source, reason; PS3.8 table 9-21) as a :class:`RefusalReason`."""
    _, source, reason = rsd
    if source == 0x01 and reason == 0x03:
        return RefusalReason.CALLING_AE
    if source == 0x01 and reason == 0x07:
        return RefusalReason.CALLED_AE
    if source == 0x03:
        return RefusalReason.LOCAL_LIMIT
    return RefusalReason.PROTOCOL


class AssociationReports:
    def __init__(self, observer: AssociationObserver | None) -> None:
        self.observer = observer
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}  # id(AssociationInfo) -> when its thread began
        self._accepted: set[int] = set()

    def begun(self, info: AssociationInfo) -> None:
        """A whole A-ASSOCIATE-RQ was handed to an association thread."""
        with self._lock:
            self._started[id(info)] = time.time()

    def accepted(self, info: AssociationInfo) -> None:
        """Negotiation succeeded (on the association's thread, before any message)."""
        now = time.time()
        with self._lock:
            self._accepted.add(id(info))
            started = self._started.get(id(info), now)
        self._tell("association_accepted", AssociationRecord(info.calling_ae, info.called_ae, info.address,
                                                             started, now))

    def ended(self, info: AssociationInfo) -> None:
        """The association's thread is done with it: ended, refused, or its request could not be decoded."""
        now = time.time()
        with self._lock:
            started = self._started.pop(id(info), now)
            accepted = id(info) in self._accepted
            self._accepted.discard(id(info))
        if accepted:
            self._tell("association_ended", AssociationRecord(info.calling_ae, info.called_ae, info.address, started,
                                                              now, instances_stored=info.instances_stored))
        elif info.refusal is not None:
            detail, rsd = info.refusal
            self.refused(info.address, refusal_reason(rsd), detail, info.calling_ae, info.called_ae, started)
        elif not info.called_ae:  # aborted: no association
            self.refused(info.address, RefusalReason.PROTOCOL, "malformed A-ASSOCIATE-RQ", started=started)

    def dropped(self, address: str, reason: str) -> None:
        """The acceptor dropped a connection before an association (reported when it is a refusal)."""
        if reason in DROP_REASONS:
            self.refused(address, DROP_REASONS[reason], reason)

    def refused(self, address: str, reason: RefusalReason, detail: str, calling_ae: str = "", called_ae: str = "",
                started: float | None = None) -> None:
        now = time.time()
        self._tell("association_refused", AssociationRecord(calling_ae, called_ae, address,
                                                            now if started is None else started, now, reason, detail))

    def _tell(self, event: str, record: AssociationRecord) -> None:
        if self.observer is None:
            return
        try:
            getattr(self.observer, event)(record)
        except Exception:
            log.exception("association observer failed on %s", event)
