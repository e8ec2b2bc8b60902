from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.records import Input, InputKind, InputState
from dicom_node.assembly import expected_count, is_ready, waiting_for


def series(count: int, attrs: dict[str, Any] | None = None, created: float = 1000.0, updated: float = 1000.0) -> Input:
    return Input(1, InputKind.DICOM_SERIES, "1.2.3", Path("/s"), "f", attrs or {}, count, InputState.RECEIVING,
                 None, created, updated, "1.2", "1.2.3")


def test_quiet_time_must_pass() -> None:
    assert not is_ready(series(5), now=1005, quiet_seconds=10)
    assert is_ready(series(5), now=1010, quiet_seconds=10)


def test_open_association_holds_the_series() -> None:
    assert not is_ready(series(5), now=1500, quiet_seconds=10, receiving={"1.2.3"})
    assert is_ready(series(5), now=1500, quiet_seconds=10, receiving={"9.9"})


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


def test_an_open_association_holds_the_series_at_most_the_maximum_wait() -> None:
    # a long-lived forwarding association stays open: the series is processed max_wait_s after its first instance
    quiet = series(5, created=1000, updated=1005)
    assert waiting_for(quiet, {"1.2.3"}) == ("an open association",)
    assert not is_ready(quiet, now=1599, quiet_seconds=10, receiving={"1.2.3"}, max_wait_s=600)
    assert is_ready(quiet, now=1600, quiet_seconds=10, receiving={"1.2.3"}, max_wait_s=600)


def test_the_maximum_wait_caps_an_open_association_and_a_missing_count_together() -> None:
    partial = series(5, {"ImagesInAcquisition": 8}, created=1000, updated=1005)
    assert waiting_for(partial, {"1.2.3"}) == ("an open association", "5 of 8 declared instances")
    assert not is_ready(partial, now=1599, quiet_seconds=10, receiving={"1.2.3"}, max_wait_s=600)
    assert is_ready(partial, now=1600, quiet_seconds=10, receiving={"1.2.3"}, max_wait_s=600)
    assert is_ready(partial, now=1015, quiet_seconds=10, receiving={"1.2.3"}, max_wait_s=0)


def test_instances_still_arriving_are_not_cut_short_by_the_maximum_wait() -> None:
    # the quiet time is the one wait the cap does not end: a later instance would queue a new job anyway
    arriving = series(500, created=1000, updated=1995)
    assert not is_ready(arriving, now=2000, quiet_seconds=10, receiving={"1.2.3"}, max_wait_s=600)
    assert is_ready(arriving, now=2005, quiet_seconds=10, receiving={"1.2.3"}, max_wait_s=600)
    assert not is_ready(arriving, now=2005, quiet_seconds=10, receiving={"1.2.3"}, max_wait_s=1006)


def test_a_series_waiting_for_nothing_is_ready_after_the_quiet_time() -> None:
    assert waiting_for(series(5), {"9.9"}) == ()
    assert is_ready(series(5, created=1000, updated=1000), now=1010, quiet_seconds=10, receiving={"9.9"})
