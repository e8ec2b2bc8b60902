"""What the DICOM node hands to the daemon's store and reads back from it.

The node defines the record it produces (:class:`Instance`, a received instance on disk) and the protocols of
the collaborators the daemon hands in, the way pynetdicom hands a handler its dependencies: the SCP records
into an :class:`InstanceRecords`, the outbox sender sends from an :class:`Outbox` of :class:`OutboxEntry`.
The daemon's store satisfies both structurally; nothing here knows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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

    def outbox_due(self) -> Sequence[OutboxEntry]:
        """Pending entries whose next attempt is due."""
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
