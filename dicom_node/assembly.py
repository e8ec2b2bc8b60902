"""Series completeness: when a received DICOM series is ready to be processed.

A series is ready once no instance arrived for ``quiet_seconds``, no association that delivered it is still
open and, where its instances declare how many there will be (ImagesInAcquisition,
NumberOfSeriesRelatedInstances), that count arrived. The waits for the associations and for the count end
``max_wait_s`` after its first instance whatever happens: a declared count that never arrives, or a
long-lived forwarding association that stays open for hours, must not hold a series back. Only the quiet
time is never cut short (instances still arriving are not a finished series; a later instance queues a new
job anyway).

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


def waiting_for(inp: SeriesProgress, receiving: Set[str] = frozenset()) -> tuple[str, ...]:
    """What a quiet series still waits for (an open association, its declared count); empty when nothing."""
    if inp.kind != DICOM_SERIES:
        return ()
    waits = []
    if inp.series_uid in receiving:
        waits.append("an open association")
    expected = expected_count(inp)
    if expected is not None and inp.instance_count < expected:
        waits.append(f"{inp.instance_count} of {expected} declared instances")
    return tuple(waits)


def is_ready(
    inp: SeriesProgress,
    now: float,
    quiet_seconds: float,
    receiving: Set[str] = frozenset(),
    max_wait_s: float = 600.0,
) -> bool:
    """Whether ``inp`` may be processed at ``now`` (epoch seconds): quiet, and waiting for nothing or waited
    ``max_wait_s`` since its first instance."""
    if inp.kind != DICOM_SERIES:
        return True
    if now - inp.updated_at < quiet_seconds:
        return False
    return not waiting_for(inp, receiving) or now - inp.created_at >= max_wait_s
