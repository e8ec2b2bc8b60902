from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.records import Input, InputKind, InputState
from dicom_node.assembly import expected_count, is_ready


def series(count: int, attrs: dict[str, Any] | None = None, created: float = 1000.0, updated: float = 1000.0) -> Input:
    return Input(1, InputKind.DICOM_SERIES, "1.2.3", Path("/s"), "f", attrs or {}, count, InputState.RECEIVING,
                 None, created, updated, "1.2", "1.2.3")


def test_quiet_time_must_pass() -> None:
    assert not is_ready(series(5), now=1005, quiet_seconds=10)
    assert is_ready(series(5), now=1010, quiet_seconds=10)


def test_open_association_holds_the_series() -> None:
    assert not is_ready(series(5), now=2000, quiet_seconds=10, receiving={"1.2.3"})
    assert is_ready(series(5), now=2000, quiet_seconds=10, receiving={"9.9"})


def test_declared_count_is_awaited_up_to_the_maximum_wait() -> None:
    partial = series(5, {"ImagesInAcquisition": 8}, created=1000, updated=1001)
    assert expected_count(partial) == 8
    assert not is_ready(partial, now=1100, quiet_seconds=10, max_wait_s=600)
    assert is_ready(partial, now=1600, quiet_seconds=10, max_wait_s=600)
    complete = series(8, {"ImagesInAcquisition": "8"}, created=1000, updated=1001)
    assert is_ready(complete, now=1100, quiet_seconds=10, max_wait_s=600)


def test_meaningless_counts_are_ignored() -> None:
    assert expected_count(series(1, {"ImagesInAcquisition": 1})) is None
    assert expected_count(series(1, {"ImagesInAcquisition": "x"})) is None
    assert expected_count(series(1, {"NumberOfSeriesRelatedInstances": 40, "ImagesInAcquisition": 8})) == 40


def test_slides_are_ready_at_once() -> None:
    slide = Input(2, InputKind.SLIDE, "/a.svs", Path("/a.svs"), "f", {}, 1, InputState.RECEIVING, None, 0, 0)
    assert is_ready(slide, now=0, quiet_seconds=10)
