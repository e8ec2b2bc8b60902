"""How far a pipeline run is: the callback a pipeline receives with its input, and its throttle.

A pipeline calls ``inp.progress(done, total, stage)`` as it goes: a slide's tiles analysed of those planned
(stage ``"tiles"``), an MR series' stages done of its stages (stage: the one it starts). The caller decides
where that goes (the job store, a terminal bar); the default does nothing. A call costs a function call and,
behind :class:`Throttled`, a look at a monotonic clock, so a pipeline may report once per tile.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Progress = Callable[[int, int, str], None]
"""``(done, total, stage)``: ``done`` units of ``total`` are finished; ``stage`` says what is being counted or
done (at most 64 characters). It must not raise; calls come from one thread at a time."""

REPORT_INTERVAL_S = 1.0


def no_progress(done: int, total: int, stage: str) -> None:
    """The progress callback of a run nobody follows."""


class Throttled:
    """Passes a run's progress on to ``sink`` at most once per ``interval_s``, except the first report, the last
    one (``done >= total``) and a change of stage, which always pass (a stage may last minutes: the one
    shown must be the one running). Reports in between are dropped; the next one that passes carries the
    newer figures."""

    def __init__(self, sink: Progress, interval_s: float = REPORT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = sink
        self._interval_s = interval_s
        self._clock = clock
        self._next_at: float | None = None  # None: nothing passed yet
        self._stage: str | None = None

    def __call__(self, done: int, total: int, stage: str) -> None:
        now = self._clock()
        if self._next_at is not None and now < self._next_at and done < total and stage == self._stage:
            return
        self._next_at = now + self._interval_s
        self._stage = stage
        self._sink(done, total, stage)
