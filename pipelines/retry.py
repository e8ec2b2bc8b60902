"""Retry strategy: capped exponential backoff between attempts (of a job, of an outbox delivery)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryStrategy:
    max_attempts: int = 3
    base_s: float = 5.0
    cap_s: float = 600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("need max_attempts >= 1 and 0 < base_s <= cap_s")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.cap_s, self.base_s * 2 ** max(attempt - 1, 0)))

    def retry_at(self, attempt: int, now: float) -> float | None:
        """When to try again, or None when the attempts are used up."""
        return None if attempt >= self.max_attempts else now + self.delay(attempt)
