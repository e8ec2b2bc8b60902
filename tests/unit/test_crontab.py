"""Crontab expressions keep crontab(5)'s meaning, and the config accepts exactly what the scheduler runs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config import BatchSettings
from agent.crontab import crontab_trigger, last_fire

SATURDAY = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _next(expr: str, after: datetime = SATURDAY) -> datetime:
    fire = crontab_trigger(expr, timezone=UTC).get_next_fire_time(None, after)
    assert fire is not None
    return fire


@pytest.mark.parametrize(
    ("expr", "weekday"),
    [("0 2 * * 1-5", "Monday"), ("0 2 * * 0", "Sunday"), ("0 2 * * 7", "Sunday"), ("0 2 * * sun-sat", "Sunday"),
     ("0 2 * * fri-mon", "Sunday"), ("0 2 * * 2/2", "Tuesday")],
)
def test_weekdays_count_from_sunday(expr: str, weekday: str) -> None:
    assert _next(expr).strftime("%A") == weekday


def test_day_of_month_or_weekday_as_cron_does() -> None:
    assert _next("0 2 1 * mon") == datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # Monday 30th, before the 1st


@pytest.mark.parametrize("expr", ["0 2 * * 7", "0 2 * * sun-sat", "*/5 20-23,0-5 * * 1-5"])
def test_the_config_accepts_what_the_scheduler_runs(expr: str) -> None:
    assert BatchSettings(name="nightly", cron=expr, paths=[Path("/archive")]).cron == expr


@pytest.mark.parametrize("expr", ["0 2 * *", "0 2 * * * *", "0 2 * * 8", "0 2 * * mon/0"])
def test_the_config_refuses_what_is_not_crontab(expr: str) -> None:
    with pytest.raises(ValidationError, match="crontab expression"):
        BatchSettings(name="nightly", cron=expr, paths=[Path("/archive")])


@pytest.mark.parametrize(
    ("expr", "now", "after", "expected"),
    [
        ("0 2 * * *", datetime(2026, 11, 28, 12, 0, tzinfo=UTC), None, datetime(2026, 11, 28, 2, 0, tzinfo=UTC)),
        ("0 2 * * *", datetime(2026, 11, 28, 2, 0, tzinfo=UTC), None, datetime(2026, 11, 28, 2, 0, tzinfo=UTC)),
        ("0 2 * * *", datetime(2026, 11, 28, 12, 0, tzinfo=UTC), datetime(2026, 11, 28, 2, 0, tzinfo=UTC), None),
        ("0 2 * * *", datetime(2026, 11, 28, 12, 0, tzinfo=UTC), datetime(2026, 11, 1, 2, 0, tzinfo=UTC),
         datetime(2026, 11, 28, 2, 0, tzinfo=UTC)),  # four weeks missed: the latest slot only
        ("* * * * *", datetime(2026, 11, 28, 12, 0, 30, tzinfo=UTC), datetime(2025, 11, 28, tzinfo=UTC),
         datetime(2026, 11, 28, 12, 0, tzinfo=UTC)),  # a year of minutes, found without stepping through them
        ("0 0 1 1 *", datetime(2026, 11, 28, tzinfo=UTC), None, datetime(2026, 1, 1, tzinfo=UTC)),
        ("0 2 * * 1-5", SATURDAY, None, datetime(2026, 11, 27, 2, 0, tzinfo=UTC)),  # Friday's, crontab weekdays
    ],
)
def test_last_fire_is_the_latest_slot_due(expr: str, now: datetime, after: datetime | None,
                                          expected: datetime | None) -> None:
    since = None if after is None else after.timestamp()
    fired = last_fire(crontab_trigger(expr, timezone=UTC), now.timestamp(), since)
    assert fired == (None if expected is None else expected.timestamp())
