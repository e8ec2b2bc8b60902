"""Series completeness: when a received DICOM series is ready to be processed.

A series is ready once no instance arrived for ``quiet_seconds`` and no association that delivered it is
still open. Where its instances declare how many there will be (ImagesInAcquisition,
NumberOfSeriesRelatedInstances), it also waits for that count, but never longer than ``max_wait_s`` after
its first instance: a declared count that never arrives must not hold a series back for ever.

The daemon asks about every input it holds (its ``agent.records.Input`` satisfies :class:`SeriesProgress`);
an input of another kind than :data:`DICOM_SERIES` (a slide file) is ready at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any, Final, Protocol

DICOM_SERIES: Final = "dicom-series"  # the kind of input a received DICOM series is
COUNT_KEYWORDS = ("NumberOfSeriesRelatedInstances", "ImagesInAcquisition")


class SeriesProgress(Protocol):
    """What is known of an input while its instances arrive."""

    @property
    def kind(self) -> str: ...
    @property
    def series_uid(self) -> str | None: ...
    @property
    def attrs(self) -> Mapping[str, Any]: ...  # DICOM keywords of its first instance
    @property
    def instance_count(self) -> int: ...
    @property
    def created_at(self) -> float: ...  # first instance (epoch seconds)
    @property
    def updated_at(self) -> float: ...  # latest instance


def expected_count(inp: SeriesProgress) -> int | None:
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
    inp: SeriesProgress,
    now: float,
    quiet_seconds: float,
    receiving: Set[str] = frozenset(),
    max_wait_s: float = 600.0,
) -> bool:
    if inp.kind != DICOM_SERIES:
        return True
    if inp.series_uid in receiving or now - inp.updated_at < quiet_seconds:
        return False
    expected = expected_count(inp)
    if expected is None or inp.instance_count >= expected:
        return True
    return now - inp.created_at >= max_wait_s
