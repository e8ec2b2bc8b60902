"""What the DICOM node hands to the daemon's store and reads back from it.

The node defines the record it produces (:class:`Instance`, a received instance on disk) and the protocols of
the collaborators the daemon hands in, the way pynetdicom hands a handler its dependencies: the SCP records
into an :class:`InstanceRecords`, the outbox sender sends from an :class:`Outbox` of :class:`OutboxEntry`, and
the acceptor tells an :class:`AssociationObserver` of every :class:`AssociationRecord` (the daemon's metrics and
audit trail).
The daemon's store satisfies both structurally; nothing here knows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Instance:
    """A DICOM instance written to storage."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    path: Path
    size: int
    attrs: dict[str, Any]
    source: str  # "scp:<calling AE>", "folder:<path>", "cli"


class InstanceRecords(Protocol):
    """Where received instances are recorded (their files are already on disk under their final names)."""

    def has_instance(self, sop_instance_uid: str, /) -> bool:
        """Whether an instance with this SOP Instance UID is recorded."""
        ...

    def add_instances(self, instances: Sequence[Instance], /) -> Sequence[bool]:
        """Record the instances together (one commit); for each, whether it was new. Raises when they cannot
        be recorded: then none of them is."""
        ...


class OutboxEntry(Protocol):
    """An object waiting for a destination, as the sender reads it."""

    @property
    def id(self) -> int: ...
    @property
    def destination(self) -> str: ...
    @property
    def path(self) -> Path: ...
    @property
    def sop_class_uid(self) -> str: ...
    @property
    def sop_instance_uid(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def note(self) -> str | None: ...


class Outbox(Protocol):
    """The entries the sender delivers, and what it records of each attempt."""

    def outbox_claim(self) -> Sequence[OutboxEntry]:
        """Pending entries whose next attempt is due, now this sender's to deliver: no other sender (of another
        daemon on the same store) takes them until each is resolved or the claim lapses."""
        ...

    def outbox_next_due(self) -> float | None:
        """When the next pending entry is due (epoch seconds), or None when none is pending."""
        ...

    def outbox_sent(self, item_id: int, status: int, /) -> object:
        """The destination acknowledged the entry with ``status`` (success or a warning)."""
        ...

    def outbox_failed(self, item_id: int, error: str, /, *, status: int | None = None,
                      retry_at: float | None = None) -> object:
        """An attempt failed: pending again at ``retry_at``, or failed for good when it is None."""
        ...

    def outbox_substitute(self, item_id: int, path: Path, sop_class_uid: str, sop_instance_uid: str, note: str, /,
                          ) -> object:
        """Send another object (a fallback the destination accepts) in this entry's place, at once."""
        ...


class RefusalReason(StrEnum):
    """Why a connection got no association: a small fixed set (a metrics label; never the peer's AE title or
    address, which are unbounded). A-ASSOCIATE-RJ reasons follow PS3.8 table 9-21."""

    CALLING_AE = "calling-ae"  # not in the allow-list, or not from its allowed hosts
    CALLED_AE = "called-ae"  # the request called another AE title
    PROTOCOL = "protocol"  # unsupported protocol version or application context, a malformed or oversize request
    LOCAL_LIMIT = "local-limit"  # the SCP's own limit (free disk space under the watermark)
    ASSOCIATION_LIMIT = "association-limit"  # max_associations open already
    PENDING_LIMIT = "pending-limit"  # max_pending_connections waiting for their request already
    TIMEOUT = "timeout"  # no whole A-ASSOCIATE-RQ within the ARTIM deadline
    TLS = "tls"  # the TLS handshake failed
    INTERNAL = "internal"  # our own failure (out of file descriptors, a defect)


@dataclass(frozen=True)
class AssociationRecord:
    """One association (or a connection refused before one): who called, from where, and how it went.

    AE titles are as the peer sent them (any characters); ``refusal`` is None for an accepted association,
    ``detail`` says more in words (the refusal's text)."""

    calling_ae: str
    called_ae: str
    address: str
    started_at: float  # epoch seconds: the connection was handed to the association
    ended_at: float
    refusal: RefusalReason | None = None
    detail: str = ""
    instances_stored: int = 0

    @property
    def accepted(self) -> bool:
        return self.refusal is None


class AssociationObserver(Protocol):
    """Told about every association as it is accepted, refused or ends. Called on the acceptor's and the
    associations' threads: it must return at once (queue, count) and never raise."""

    def association_accepted(self, record: AssociationRecord, /) -> None:
        """Negotiation succeeded (``ended_at`` is the time of acceptance)."""
        ...

    def association_refused(self, record: AssociationRecord, /) -> None:
        """Refused, or dropped before its A-ASSOCIATE-RQ was whole (AE titles empty then)."""
        ...

    def association_ended(self, record: AssociationRecord, /) -> None:
        """An accepted association ended (released, aborted or lost), with the instances stored on it."""
        ...
