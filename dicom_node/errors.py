"""The DICOM node's errors: every error it raises on purpose derives from :class:`DicomNodeError`.

- :class:`InvalidUIDError`: a UID is missing or is not a UID (digits and dots, at most 64 characters), so it is
  never made part of a path. It is also a :class:`pipelines.errors.InputError`, the one class that means "this
  input cannot be processed" in every room: a drop folder quarantines such a file and the one-shot command
  reports it without knowing this room.
- :class:`UnreadableHeaderError`: a received dataset's header cannot be parsed or ends inside an element; the
  SCP answers 0xC210 (cannot understand) and keeps no file.
- :class:`PeerError`: the peer of an association broke the protocol, closed the connection or went silent; the
  association ends (after an A-ABORT where the protocol wants one).
- :class:`RecordError`: received instances could not be made durable or recorded by the collaborator the
  daemon handed in; the SCP answers 0xA700 (out of resources) and keeps no file.
- :class:`QueryRetrieveError`: a C-FIND, C-MOVE or C-GET to a PACS did not complete: no association (peer down,
  rejected, aborted, silent past the deadline) or a failure status, which it carries.

Where a C-STORE arrives, every error becomes a DICOM status at that edge (:mod:`dicom_node.scp`).
"""

from __future__ import annotations

from pipelines.errors import InputError


class DicomNodeError(Exception):
    """Base of every error the DICOM node raises on purpose."""


class InvalidUIDError(DicomNodeError, InputError):
    """A UID is missing or malformed; the message names the attribute."""


class RecordError(DicomNodeError):
    """Received instances could not be made durable or recorded; none of them was accepted."""


class UnreadableHeaderError(DicomNodeError):
    """A received dataset's header cannot be parsed, or the dataset ends inside an element."""


class PeerError(DicomNodeError):
    """The peer broke the protocol, closed the connection or went silent."""


class QueryRetrieveError(DicomNodeError):
    """A query or retrieve from a PACS failed; ``status`` is the DIMSE status the PACS answered (None when
    there was no answer: no association, an abort or a timeout)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """True where trying again later may succeed: no answer, or out of resources (0xA7xx)."""
        return self.status is None or (self.status & 0xFF00) == 0xA700
