"""Admin page: the dashboard (runs over time, failure rates, slow and failing tasks, what is next)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import render_template

from app.admin import bp
from app.charts import stacked_bars
from scheduler import stats

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@bp.app_template_filter("seconds")
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


@bp.app_template_filter("percent")
def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


@bp.app_template_filter("utc")
def utc(value: datetime | None) -> str:
    return "–" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _chart(histogram: stats.Histogram, label_format: str, title: str):
    labels = [start.strftime(label_format) for start in histogram.starts]
    return stacked_bars(labels, histogram.counts, title=title)


@bp.get("/")
def dashboard() -> str:
    now = stats.utcnow()
    hourly = stats.runs_histogram(HOUR, 24, now)
    daily = stats.runs_histogram(DAY, 7, now)
    per_task = stats.task_stats(timedelta(hours=24), now)
    return render_template(
        "admin/dashboard.html",
        now=now,
        hourly=hourly,
        daily=daily,
        hourly_chart=_chart(hourly, "%H:00", "Runs per hour by state, last 24 h (UTC)"),
        daily_chart=_chart(daily, "%a %d %b", "Runs per day by state, last 7 days (UTC)"),
        rates=stats.failure_rates(now),
        slowest=stats.slowest(per_task),
        failing=stats.most_failing(per_task),
        failures=stats.recent_failures(),
        upcoming=stats.next_scheduled(),
        countdowns=stats.countdowns(),
    )
