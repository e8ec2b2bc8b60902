"""Series completeness: when a received DICOM series is ready to be processed.

A series is ready once no instance arrived for ``quiet_seconds`` and no association that delivered it is
still open. Where its instances declare how many there will be (ImagesInAcquisition,
NumberOfSeriesRelatedInstances), it also waits for that count, but never longer than ``max_wait_s`` after
its first instance: a declared count that never arrives must not hold a series back for ever.
"""

from __future__ import annotations

from collections.abc import Set

from agent.records import Input, InputKind

COUNT_KEYWORDS = ("NumberOfSeriesRelatedInstances", "ImagesInAcquisition")


def expected_count(inp: Input) -> int | None:
    """The number of instances the series says it has, when it says so."""
    for keyword in COUNT_KEYWORDS:
        value = inp.attrs.get(keyword)
        try:
            count = int(value) if value not in (None, "") else 0
        except (TypeError, ValueError):
            continue
        if count > 1:
            return count
    return None


def is_ready(
    inp: Input,
    now: float,
    quiet_seconds: float,
    receiving: Set[str] = frozenset(),
    max_wait_s: float = 600.0,
) -> bool:
    if inp.kind is not InputKind.DICOM_SERIES:
        return True
    if inp.series_uid in receiving or now - inp.updated_at < quiet_seconds:
        return False
    expected = expected_count(inp)
    if expected is None or inp.instance_count >= expected:
        return True
    return now - inp.created_at >= max_wait_s
