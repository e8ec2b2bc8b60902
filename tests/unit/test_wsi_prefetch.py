"""Reading ahead: order kept, queue bounded, reader errors raised where the tile is consumed."""

from __future__ import annotations

import threading

import pytest

from pipelines.errors import InputError
from pipelines.wsi.prefetch import batched, read_ahead


def test_results_come_in_order_and_at_most_depth_reads_are_ahead() -> None:
    lock = threading.Lock()
    started: list[int] = []
    consumed: list[int] = []
    most_ahead = 0

    def read(i: int) -> int:
        nonlocal most_ahead
        with lock:
            started.append(i)
            most_ahead = max(most_ahead, len(started) - len(consumed))
        return i * i

    for i, value in read_ahead(range(200), read, workers=3, depth=5):
        assert value == i * i
        with lock:
            consumed.append(i)
    assert consumed == list(range(200))
    assert most_ahead <= 5 + 1  # the queue holds `depth`; one more may start as the consumer takes one


def test_a_reader_error_reaches_the_consumer_and_stops_the_reads() -> None:
    def read(i: int) -> int:
        if i == 7:
            raise InputError("tile 7 cannot be decoded")
        return i

    seen = []
    with pytest.raises(InputError, match="tile 7"):
        for i, _ in read_ahead(range(1000), read, workers=2, depth=4):
            seen.append(i)
    assert seen == list(range(7))


def test_batches_keep_order_and_the_remainder() -> None:
    pairs = [(i, i) for i in range(10)]
    sizes = [len(b) for b in batched(pairs, 4)]
    assert sizes == [4, 4, 2]
    assert [p for b in batched(pairs, 4) for p in b] == pairs
