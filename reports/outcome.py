"""What writing a result's reports produced: files, the DICOM objects for PACS, and what could not be made.

An output the input calls for (the SR and SEG of a series with patient context, a slide's bulk annotations or
overview, the PDF report, the fallbacks the outbox may need) that could not be made is a
:class:`MissingOutput`: the caller fails the job's delivery with its reason instead of letting the result go
out incomplete. Optional pieces (figures, key slices) that fail are warnings on the result.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DicomOutput:
    """A DICOM object written at the top level of the result folder, to be sent to PACS."""

    file: str  # relative to the result folder
    sop_class_uid: str
    sop_instance_uid: str

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "sop_class_uid": self.sop_class_uid, "sop_instance_uid": self.sop_instance_uid}


@dataclass(frozen=True)
class MissingOutput:
    """An output the input calls for that could not be made, and why."""

    what: str
    reason: str
    transient: bool = False  # the cause may pass (an OS error such as a full disk): worth retrying

    def __str__(self) -> str:
        return f"{self.what} not produced: {self.reason}"


@dataclass(frozen=True)
class ReportOutcome:
    """What :func:`reports.render.write_reports` wrote (paths relative to the result folder) and what it could
    not. ``unsent_reason`` says why a result has no DICOM objects for PACS although its pipeline makes them
    (a slide without patient context); None when nothing is held back."""

    files: tuple[str, ...]
    warnings: tuple[str, ...]
    dicom: tuple[DicomOutput, ...] = ()
    missing: tuple[MissingOutput, ...] = ()
    unsent_reason: str | None = None
