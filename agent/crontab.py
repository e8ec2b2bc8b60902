"""Crontab expressions with crontab(5)'s meaning, as APScheduler triggers (used by the scheduler and by the
validation of ``scheduler.batches``, so that a schedule that validates is the schedule that runs)."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

CRONTAB_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab(5): 0 (and 7) is Sunday
_LONGEST_GAP_S = 5 * 366 * 86400.0  # a schedule that fires less often than this is taken never to fire


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


def last_fire(trigger: BaseTrigger, now: float, after: float | None = None) -> float | None:
    """The latest time the trigger fired at or before ``now`` (and after ``after``), as epoch seconds; None when
    it did not fire in that span. Searched backwards from ``now`` in doubling spans, so a minutely schedule and a
    yearly one cost the same few steps, however long ago ``after`` is."""
    span = 60.0
    while True:
        start = now - span
        if after is not None and start <= after:
            start = after + 1.0  # fire times are whole minutes: one second after is strictly after
        fired = _next_fire(trigger, start)
        if fired is not None and fired <= now:
            break
        if (after is not None and start == after + 1.0) or span > _LONGEST_GAP_S:
            return None
        span *= 2
    while (later := _next_fire(trigger, fired + 1.0)) is not None and later <= now:
        fired = later
    return fired


def _next_fire(trigger: BaseTrigger, at_or_after: float) -> float | None:
    fire = trigger.get_next_fire_time(None, datetime.fromtimestamp(at_or_after, UTC))
    return None if fire is None else fire.timestamp()
