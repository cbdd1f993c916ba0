"""Schedules in words, for the pages and the CLI: "every 10 minutes", "at 08:30 on weekdays
(Europe/Berlin)", "once at 2026-12-24 17:00 UTC"."""
from __future__ import annotations


from scheduler.beat.slots import (
    DAY_NAMES, US_PER_S, Cron, Timing, format_moment, parse_cron, validate,
)


def _describe_every(seconds: float) -> str:
    us = round(seconds * US_PER_S)
    for word, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if us % (size * US_PER_S) == 0:
            n = us // (size * US_PER_S)
            return f"every {word}" if n == 1 else f"every {n} {word}s"
    return f"every {us / US_PER_S!r} seconds"


def _describe_cron(c: Cron, tz: str) -> str:
    every_day = not c.dom_restricted and len(c.months) == 12
    all_hours = len(c.hours) == 24
    mins, hours = sorted(c.minutes), sorted(c.hours)
    if every_day and not c.dow_restricted and all_hours:
        step = mins[1] - mins[0] if len(mins) > 1 else 60
        if len(mins) == 1:
            return f"every hour at minute {mins[0]} {tz}"
        if 60 % step == 0 and mins == list(range(0, 60, step)):
            return f"every minute {tz}" if step == 1 else f"every {step} minutes {tz}"
    if every_day and len(mins) == 1 and len(hours) == 1:
        at = f"{hours[0]:02d}:{mins[0]:02d} {tz}"
        if not c.dow_restricted:
            return f"every day at {at}"
        if len(c.weekdays) == 1:
            return f"every {DAY_NAMES[next(iter(c.weekdays))]} at {at}"
    return f"cron '{c.expr}' in {tz}"


def describe(timing: Timing) -> str:
    """The schedule in plain words, e.g. "every day at 02:00 Europe/Berlin"."""
    validate(timing)
    if timing.kind == "interval":
        text = _describe_every(timing.every_s)
    elif timing.kind == "crontab":
        text = _describe_cron(parse_cron(timing.cron), timing.tz)
    else:
        text = f"once at {format_moment(timing.at)}"
    if timing.start_at:
        text += f" from {format_moment(timing.start_at)}"
    if timing.end_at:
        text += f" until {format_moment(timing.end_at)}"
    return text
