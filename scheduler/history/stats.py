"""Read-only figures about runs, schedules and beats (the dashboard, the API and /metrics).

Every query over job_runs is keyed: by a `created_at >= :since` window (the index of
migration 0005), by the (state, id) index, or by the partial index of scheduled runs on eta,
so each stays fast with millions of rows. Time buckets are in UTC.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import text

from models import RunState, Schedule, db, utcnow
from models.email import UNSENT
from models.job import RUN_SECONDS_SQL
from models.states import FAILURE_STATES, FINAL_STATES, UNFINISHED_STATES, names
from scheduler.beat import schedules
from scheduler.beat.slots import ScheduleError

#: Bucket boundaries are multiples of the bucket length from this origin (midnight UTC).
_ORIGIN = datetime(2000, 1, 1, tzinfo=timezone.utc)
#: Longest error message shown in lists.
MESSAGE_CHARS = 300


# -- runs over time -------------------------------------------------------------------------

@dataclass
class Histogram:
    """Runs per time bucket by state; `counts[state][i]` belongs to the bucket at `starts[i]`."""

    starts: list[datetime]
    step: timedelta
    counts: dict[str, list[int]]

    @property
    def totals(self) -> list[int]:
        return [sum(c[i] for c in self.counts.values()) for i in range(len(self.starts))]

    @property
    def total(self) -> int:
        return sum(self.totals)

    def last(self, buckets: int) -> Histogram:
        """The last `buckets` buckets (states that occur in them only)."""
        counts = {state: values[-buckets:] for state, values in self.counts.items()
                  if any(values[-buckets:])}
        return Histogram(self.starts[-buckets:], self.step, counts)


def floor_time(moment: datetime, step: timedelta) -> datetime:
    """The start of the bucket of length `step` holding `moment` (same rule as SQL date_bin)."""
    return _ORIGIN + (moment - _ORIGIN) // step * step


def runs_histogram(step: timedelta, buckets: int, now: datetime | None = None) -> Histogram:
    """Runs created per bucket by state, for the `buckets` buckets up to the one holding `now`.

    Empty buckets are zeros; only states that occur are listed, in the order of RunState.
    """
    last = floor_time(now or utcnow(), step)
    first = last - (buckets - 1) * step
    rows = db.session.execute(text("""
        WITH counts AS (
            SELECT date_bin(:step, created_at, :origin) AS start, state, count(*) AS n
            FROM job_runs
            WHERE created_at >= :first AND created_at < :end
            GROUP BY 1, 2
        )
        SELECT b.start, c.state, coalesce(c.n, 0) AS n
        FROM generate_series(CAST(:first AS timestamptz), :last, :step) AS b(start)
        LEFT JOIN counts c ON c.start = b.start
        ORDER BY b.start
    """), {"step": step, "origin": _ORIGIN, "first": first, "last": last,
           "end": last + step}).all()
    starts = [first + i * step for i in range(buckets)]
    index = {start: i for i, start in enumerate(starts)}
    found: dict[str, list[int]] = {}
    for row in rows:
        if row.state is not None:
            found.setdefault(row.state, [0] * buckets)[index[row.start]] = row.n
    counts = {s.value: found[s.value] for s in RunState if s.value in found}
    return Histogram(starts, step, counts)


def daily_histogram(days: int, now: datetime | None = None) -> Histogram:
    """Runs created per UTC day by state, for the `days` days up to today's.

    Days up to the newest one rolled up (scheduler.retention) are read from job_run_daily,
    so they count runs pruned since; the later ones (today, and yesterday until the nightly
    prune has rolled it up) from job_runs, as in runs_histogram.
    """
    step = timedelta(days=1)
    today = floor_time(now or utcnow(), step)
    first = today - (days - 1) * step
    # The primary key (day, task_name, state) answers both queries on job_run_daily.
    through = db.session.scalar(text("SELECT max(day) FROM job_run_daily WHERE day < :today"),
                                {"today": today.date()})
    live_from = first if through is None else max(first, _day_start(through) + step)
    histogram = runs_histogram(step, (today - live_from) // step + 1, now)
    if live_from == first:
        return histogram
    rows = db.session.execute(text("""
        SELECT day, state, sum(runs) AS n FROM job_run_daily
        WHERE day >= :first AND day <= :through GROUP BY day, state
    """), {"first": first.date(), "through": through}).all()
    found: dict[str, list[int]] = {}
    offset = days - len(histogram.starts)  # the live days are the last ones
    for state, values in histogram.counts.items():
        found.setdefault(state, [0] * days)[offset:] = values
    for row in rows:
        found.setdefault(row.state, [0] * days)[(row.day - first.date()).days] = int(row.n)
    counts = {s.value: found[s.value] for s in RunState if s.value in found}
    return Histogram([first + i * step for i in range(days)], step, counts)


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


# -- failure rate and per-task figures ------------------------------------------------------

@dataclass
class FailureRate:
    failures: int  #: failed + lost
    final: int  #: runs in a final state
    runs: int  #: every run created in the window

    @property
    def rate(self) -> float | None:
        return self.failures / self.final if self.final else None


def failure_rates(now: datetime | None = None) -> dict[str, FailureRate]:
    """Failed+lost over final runs created in the last 24 h and 7 d, and all runs created in
    them: {"24h": ..., "7d": ...}."""
    now = now or utcnow()
    row = db.session.execute(text("""
        SELECT count(*) FILTER (WHERE state = ANY(:failure) AND created_at >= :day),
               count(*) FILTER (WHERE state = ANY(:final) AND created_at >= :day),
               count(*) FILTER (WHERE created_at >= :day),
               count(*) FILTER (WHERE state = ANY(:failure)),
               count(*) FILTER (WHERE state = ANY(:final)),
               count(*)
        FROM job_runs WHERE created_at >= :week
    """), {"day": now - timedelta(hours=24), "week": now - timedelta(days=7),
           "failure": names(FAILURE_STATES), "final": names(FINAL_STATES)}).one()
    return {"24h": FailureRate(*row[:3]), "7d": FailureRate(*row[3:])}


@dataclass
class TaskStats:
    task: str
    runs: int
    final: int
    failed: int
    lost: int
    #: Percentiles of the duration (end minus start of the last attempt) of runs that
    #: succeeded or failed; None when none did.
    p50_s: float | None
    p95_s: float | None

    @property
    def failures(self) -> int:
        return self.failed + self.lost

    @property
    def failure_rate(self) -> float | None:
        return self.failures / self.final if self.final else None


def task_stats(since: timedelta = timedelta(hours=24),
               now: datetime | None = None) -> list[TaskStats]:
    """Per task, runs created in the window: counts, and p50/p95 duration; by task name."""
    # Only runs that ran to an end have a duration: lost_at is when the sweep noticed, and a
    # revoked or skipped run may never have started.
    rows = db.session.execute(text(f"""
        SELECT task_name, count(*) AS runs,
               count(*) FILTER (WHERE state = ANY(:final)) AS final,
               count(*) FILTER (WHERE state = 'failed') AS failed,
               count(*) FILTER (WHERE state = 'lost') AS lost,
               percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP
                   (ORDER BY {RUN_SECONDS_SQL}) AS pct
        FROM job_runs
        WHERE created_at >= :since
        GROUP BY task_name
        ORDER BY task_name
    """), {"since": (now or utcnow()) - since, "final": names(FINAL_STATES)}).all()
    return [TaskStats(r.task_name, r.runs, r.final, r.failed, r.lost,
                      r.pct[0] if r.pct else None, r.pct[1] if r.pct else None) for r in rows]


def slowest(stats: list[TaskStats], limit: int = 10) -> list[TaskStats]:
    """The tasks with the highest p95 duration."""
    timed = [s for s in stats if s.p95_s is not None]
    return sorted(timed, key=lambda s: (-s.p95_s, s.task))[:limit]


def most_failing(stats: list[TaskStats], limit: int = 10) -> list[TaskStats]:
    """The tasks with the most failures (failed + lost), then the highest failure rate."""
    failing = [s for s in stats if s.failures]
    return sorted(failing, key=lambda s: (-s.failures, -(s.failure_rate or 0), s.task))[:limit]


def recent_failures(limit: int = 10) -> list[Any]:
    """The newest failed runs (by id, on the (state, id) index), with error type and message."""
    return db.session.execute(text(f"""
        SELECT id, task_id, task_name, attempts, failed_at, error_type,
               left(error_message, {MESSAGE_CHARS}) AS error_message
        FROM job_runs WHERE state = 'failed' ORDER BY id DESC LIMIT :limit
    """), {"limit": limit}).all()


# -- what comes next ------------------------------------------------------------------------

@dataclass
class Upcoming:
    schedule: Schedule
    description: str


def next_scheduled(limit: int = 10) -> list[Upcoming]:
    """The next enabled schedules by next fire time (those beat has yet to plan come last)."""
    found = db.session.scalars(
        db.select(Schedule).where(Schedule.enabled.is_(True))
        .order_by(Schedule.next_fire_at.asc().nulls_last(), Schedule.name).limit(limit)
    ).all()
    upcoming = []
    for schedule in found:
        try:
            description = schedules.describe(schedule)
        except ScheduleError as exc:  # a row edited by hand into something invalid
            description = f"invalid: {exc}"
        upcoming.append(Upcoming(schedule, description))
    return upcoming


@dataclass
class Countdowns:
    """Runs held in PostgreSQL until due (countdowns, ETAs, fired slots not yet released)."""

    count: int
    next_id: int | None = None
    next_task: str | None = None
    next_eta: datetime | None = None


def countdowns() -> Countdowns:
    # Both read the partial index of scheduled runs on eta (the dispatcher's).
    count = db.session.scalar(text("SELECT count(*) FROM job_runs WHERE state = 'scheduled'"))
    first = db.session.execute(text(
        "SELECT id, task_name, eta FROM job_runs WHERE state = 'scheduled' AND eta IS NOT NULL "
        "ORDER BY eta LIMIT 1")).first()
    if first is None:
        return Countdowns(count)
    return Countdowns(count, first.id, first.task_name, first.eta)


def pending_counts() -> dict[str, int]:
    """Runs not finished yet, per state (scheduled, queued, running, retrying)."""
    rows = db.session.execute(text(
        "SELECT state, count(*) FROM job_runs WHERE state = ANY(:unfinished) GROUP BY state"),
        {"unfinished": names(UNFINISHED_STATES)}).all()
    found = dict(rows)
    return {state: found.get(state, 0) for state in names(UNFINISHED_STATES)}


# -- figures for /metrics -------------------------------------------------------------------

@dataclass
class Durations:
    """Durations of one task's runs that ran to an end, as a cumulative histogram."""

    task: str
    count: int
    total_s: float
    #: (upper bound in seconds, runs at or under it), for each bound asked for.
    buckets: list[tuple[float, int]]


def runs_by_task_and_state(since: timedelta) -> list[tuple[str, str, int]]:
    """(task, state, runs) of the runs created in the window."""
    return [tuple(r) for r in db.session.execute(text(
        "SELECT task_name, state, count(*) FROM job_runs WHERE created_at >= :since "
        "GROUP BY task_name, state ORDER BY task_name, state"),
        {"since": utcnow() - since})]


def durations(since: timedelta, bounds: tuple[float, ...]) -> list[Durations]:
    """Per task, the durations of the runs created in the window that ran to an end, counted
    under each bound in one pass."""
    columns = ", ".join(f"count(*) FILTER (WHERE d <= {float(b)!r}) AS b{i}"
                        for i, b in enumerate(bounds))
    rows = db.session.execute(text(
        f"SELECT task_name, count(*) AS n, coalesce(sum(d), 0) AS total, {columns} "
        f"FROM (SELECT task_name, greatest({RUN_SECONDS_SQL}, 0) AS d FROM job_runs "
        "      WHERE created_at >= :since AND state IN ('succeeded', 'failed') "
        "      AND started_at IS NOT NULL) AS finished "
        "GROUP BY task_name ORDER BY task_name"), {"since": utcnow() - since}).mappings()
    return [Durations(r["task_name"], r["n"], float(r["total"]),
                      [(float(b), r[f"b{i}"]) for i, b in enumerate(bounds)]) for r in rows]


def scheduled_overdue() -> int:
    """Scheduled runs whose due time has passed (the dispatcher has yet to release them)."""
    return db.session.scalar(text(
        "SELECT count(*) FROM job_runs WHERE state = 'scheduled' AND eta < now()"))


def unsent_emails() -> dict[str, int]:
    """E-mails not sent yet, by state; the (state, id) index: sent ones are never counted."""
    found = dict(db.session.execute(text(
        "SELECT state, count(*) FROM emails WHERE state = ANY(:states) GROUP BY state"),
        {"states": list(UNSENT)}).all())
    return {state: found.get(state, 0) for state in UNSENT}


def emails_needing_review() -> int:
    """Failed e-mails whose delivery is uncertain (a person decides)."""
    return db.session.scalar(text(
        "SELECT count(*) FROM emails WHERE state = 'failed' AND needs_review"))
