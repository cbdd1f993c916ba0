"""Admin page: the dashboard (runs over time, failure rates, slow and failing tasks, what is next)."""
from __future__ import annotations

from datetime import timedelta

from flask import render_template

from models import utcnow
from app.admin import bp
from app.charts import stacked_bars
from scheduler.history import stats

HOUR = timedelta(hours=1)


def _chart(histogram: stats.Histogram, label_format: str, title: str):
    labels = [start.strftime(label_format) for start in histogram.starts]
    return stacked_bars(labels, histogram.counts, title=title)


@bp.get("/")
def dashboard() -> str:
    now = utcnow()
    hourly = stats.runs_histogram(HOUR, 24, now)
    # Complete days come from the daily rollups (they outlive pruning), today from job_runs.
    monthly = stats.daily_histogram(30, now)
    daily = monthly.last(7)
    per_task = stats.task_stats(timedelta(hours=24), now)
    return render_template(
        "admin/dashboard.html",
        now=now,
        hourly=hourly,
        daily=daily,
        monthly=monthly,
        hourly_chart=_chart(hourly, "%H:00", "Runs per hour by state, last 24 h (UTC)"),
        daily_chart=_chart(daily, "%a %d %b", "Runs per day by state, last 7 days (UTC)"),
        monthly_chart=_chart(monthly, "%d %b", "Runs per day by state, last 30 days (UTC)"),
        rates=stats.failure_rates(now),
        slowest=stats.slowest(per_task),
        failing=stats.most_failing(per_task),
        failures=stats.recent_failures(),
        upcoming=stats.next_scheduled(),
        countdowns=stats.countdowns(),
    )
