"""Crontab expressions with crontab(5)'s meaning, as APScheduler triggers (used by the scheduler and by the
validation of ``scheduler.batches``, so that a schedule that validates is the schedule that runs)."""

from __future__ import annotations

from datetime import tzinfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

CRONTAB_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab(5): 0 (and 7) is Sunday


def crontab_trigger(expr: str, timezone: tzinfo | str | None = None) -> BaseTrigger:
    """A trigger for a five-field crontab expression that keeps crontab's meaning where APScheduler 3's
    ``CronTrigger.from_crontab`` does not: weekday numbers count from Sunday = 0 (from_crontab counts from
    Monday, so ``1-5`` would run Tuesday to Saturday), and when both the day of month and the day of week are
    restricted (neither starts with ``*``) a day matching either runs the batch, as cron does."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"expected five crontab fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, weekday = fields
    common = {"minute": minute, "hour": hour, "month": month, "timezone": timezone}
    days = _weekday_names(weekday)
    if day.startswith("*") or weekday.startswith("*"):
        return CronTrigger(day=day, day_of_week=days, **common)
    return OrTrigger([CronTrigger(day=day, **common), CronTrigger(day_of_week=days, **common)])


def _weekday_names(field: str) -> str:
    """A crontab weekday field (numbers 0-7 or names, ranges, steps, lists) as APScheduler weekday names."""
    days: set[int] = set()
    for item in field.lower().split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"weekday step {step_text!r} is not a positive number")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            first, last = (_weekday(part) for part in span.split("-", 1))
        else:
            first = _weekday(span)
            last = first if step is None else 6  # "3/2" steps from 3 to the end of the week
        if last < first:  # "fri-sun" wraps round to Sunday
            last += 7
        days.update(d % 7 for d in range(first, last + 1, step or 1))
    return "*" if len(days) == 7 else ",".join(CRONTAB_WEEKDAYS[d] for d in sorted(days))


def _weekday(text: str) -> int:
    if text in CRONTAB_WEEKDAYS:
        return CRONTAB_WEEKDAYS.index(text)
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    raise ValueError(f"weekday {text!r} is not 0-7 or sun-sat")
