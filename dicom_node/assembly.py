"""Series completeness: when a received DICOM series is ready to be processed."""

from __future__ import annotations

from agent.records import Input, InputKind


def is_ready(inp: Input, now: float, quiet_seconds: float) -> bool:
    """A series is ready once no instance arrived for ``quiet_seconds``; other inputs are ready at once."""
    if inp.kind is not InputKind.DICOM_SERIES:
        return True
    return now - inp.updated_at >= quiet_seconds
