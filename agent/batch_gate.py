"""When batch jobs may start: ``executor.batch_workers`` bounds how many of a daemon's workers batch work holds,
and ``executor.batch_window`` (e.g. ``20:00-06:00``, local time) the hours in which batch jobs start. New work
(stat, urgent, routine) is never held back; a batch job already running is not stopped when the window closes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent.config import ExecutorSettings, Priority


@dataclass(frozen=True)
class BatchGate:
    workers: int | None  # None: batch work may hold every worker
    window: tuple[int, int] | None  # (start, end) in minutes after local midnight; end < start spans midnight

    @classmethod
    def of(cls, cfg: ExecutorSettings) -> BatchGate:
        return cls(cfg.batch_workers, window_minutes(cfg.batch_window) if cfg.batch_window else None)

    def open_at(self, when: float) -> bool:
        """Whether ``when`` (epoch seconds) is inside the window (always, without one)."""
        if self.window is None:
            return True
        local = time.localtime(when)
        minute = local.tm_hour * 60 + local.tm_min
        start, end = self.window
        return start <= minute < end if start <= end else minute >= start or minute < end

    def max_priority(self, running_batch: int, now: float) -> Priority:
        """The lowest priority a worker may claim now, with ``running_batch`` batch jobs running."""
        room = self.workers is None or running_batch < self.workers
        return Priority.BATCH if room and self.open_at(now) else Priority.ROUTINE


def window_minutes(text: str) -> tuple[int, int]:
    """``HH:MM-HH:MM`` as (start, end) minutes after midnight; ValueError when it is not one."""
    try:
        start, end = (part.strip() for part in text.split("-"))
        values = []
        for part in (start, end):
            hours, minutes = part.split(":")
            if not (0 <= int(hours) <= 23 and 0 <= int(minutes) <= 59 and len(minutes) == 2):
                raise ValueError(part)
            values.append(int(hours) * 60 + int(minutes))
    except ValueError:
        raise ValueError(f"a window HH:MM-HH:MM, e.g. 20:00-06:00 (got {text!r})") from None
    if values[0] == values[1]:
        raise ValueError(f"a window HH:MM-HH:MM whose start and end differ (got {text!r})")
    return values[0], values[1]
