"""How the admin pages show times, durations and rates (template globals and filters)."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Flask

from scheduler.beat import slots
from scheduler.beat.slots import ScheduleError


def when(dt: datetime | None, tz: str | None = None) -> str:
    """A moment for people, in UTC; in `tz` first when that is another zone."""
    if dt is None:
        return "—"
    text = f"{dt.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
    if tz and tz != "UTC":
        try:
            return f"{dt.astimezone(slots.zone(tz)):%Y-%m-%d %H:%M:%S} {tz} ({text})"
        except ScheduleError:
            pass
    return text


def seconds(value: float | None) -> str:
    """A duration in seconds as "850 ms", "12.3 s", "4 min 10 s", "2 h 5 min"; "–" for None."""
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.3g} s"
    if value < 3600:
        return f"{int(value // 60)} min {int(value % 60)} s"
    if value < 86400:
        return f"{int(value // 3600)} h {int(value % 3600 // 60)} min"
    return f"{int(value // 86400)} d {int(value % 86400 // 3600)} h"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def init_app(app: Flask) -> None:
    app.add_template_global(when)
    app.add_template_filter(seconds)
    app.add_template_filter(percent)
