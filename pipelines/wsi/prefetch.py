"""Reading tiles ahead of inference: worker threads fill a bounded queue; results come back in order.

openslide decodes in C without the Python lock, so readers overlap with inference (which also runs outside
it). At most ``depth`` tiles are queued or in flight, which bounds memory whatever the slide size. A reader's
exception is raised in the consumer when its tile's turn comes; closing the iterator cancels what is queued.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def read_ahead(items: Iterable[T], read: Callable[[T], R], *, workers: int, depth: int) -> Iterator[tuple[T, R]]:
    """``(item, read(item))`` for every item, in order, with up to ``depth`` reads queued ahead."""
    if workers < 1 or depth < 1:
        raise ValueError("workers and depth must be at least 1")
    source = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tile-reader") as pool:
        queue: deque[tuple[T, Future[R]]] = deque((item, pool.submit(read, item)) for item in islice(source, depth))
        try:
            while queue:
                item, future = queue.popleft()
                result = future.result()
                for following in islice(source, 1):
                    queue.append((following, pool.submit(read, following)))
                yield item, result
        finally:
            for _, pending in queue:
                pending.cancel()


def batched(pairs: Iterable[tuple[T, R]], size: int) -> Iterator[list[tuple[T, R]]]:
    batch: list[tuple[T, R]] = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
