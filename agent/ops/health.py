"""What ``/healthz`` checks: the daemon's main loop ticked recently, the executor thread is alive, the DICOM
SCP (when enabled) is listening, the store answers. Each check is a name and a function returning whether it
passed and a short detail; a check that raises fails with the error as its detail."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Check = Callable[[], tuple[bool, str]]


@dataclass(frozen=True)
class Health:
    ok: bool
    checks: dict[str, tuple[bool, str]]

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "failing",
            "failing": [name for name, (ok, _) in self.checks.items() if not ok],
            "checks": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in self.checks.items()},
        }


class HealthChecks:
    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        self._last_tick: float | None = None
        self._checks: dict[str, Check] = {"main_loop": self._main_loop}

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def tick(self) -> None:
        """The daemon's main loop went round once."""
        self._last_tick = time.monotonic()

    def run(self) -> Health:
        results: dict[str, tuple[bool, str]] = {}
        for name, check in list(self._checks.items()):
            try:
                results[name] = check()
            except Exception as exc:  # noqa: BLE001 (a check that cannot run has failed; the endpoint answers)
                results[name] = (False, f"{exc.__class__.__name__}: {exc}")
        return Health(all(ok for ok, _ in results.values()), results)

    def _main_loop(self) -> tuple[bool, str]:
        if self._last_tick is None:
            return False, "the main loop has not ticked yet"
        age = time.monotonic() - self._last_tick
        return age <= self.stale_after_s, f"last tick {age:.1f} s ago (limit {self.stale_after_s:g} s)"


def thread_alive(thread: threading.Thread) -> Check:
    return lambda: (thread.is_alive(), "alive" if thread.is_alive() else f"thread {thread.name} has ended")
