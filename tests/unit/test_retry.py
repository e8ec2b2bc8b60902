from __future__ import annotations

import pytest

from pipelines.retry import RetryStrategy


def test_backoff_doubles_and_is_capped() -> None:
    strategy = RetryStrategy(max_attempts=10, base_s=5, cap_s=30)
    assert [strategy.delay(n) for n in range(1, 6)] == [5, 10, 20, 30, 30]


def test_no_retry_once_attempts_are_used() -> None:
    strategy = RetryStrategy(max_attempts=3, base_s=1, cap_s=10)
    assert strategy.retry_at(1, now=100.0) == 101.0
    assert strategy.retry_at(2, now=100.0) == 102.0
    assert strategy.retry_at(3, now=100.0) is None


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryStrategy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryStrategy(base_s=10, cap_s=1)
