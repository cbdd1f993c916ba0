"""Read-only figures about runs, schedules, beats, queues and workers (dashboard, API, metrics).

Every query over job_runs is keyed: by a `created_at >= :since` window (the index of
migration 0005), by the (state, id) index, or by the partial index of scheduled runs on eta,
so each stays fast with millions of rows. Time buckets are in UTC.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from celery import Celery
from sqlalchemy import text

from models import RunState, Schedule, db
from models.states import FINAL_STATES
from scheduler import schedules
from scheduler.enqueue import PUBLISH_ERRORS
from scheduler.slots import ScheduleError

#: Errors that mean "Redis or the workers did not answer".
BROKER_ERRORS = PUBLISH_ERRORS + (redis.RedisError,)
#: Runs that ended badly: the numerator of the failure rate.
FAILURE_STATES = (RunState.FAILED.value, RunState.LOST.value)
_FINAL = tuple(s.value for s in RunState if s in FINAL_STATES)
#: States of work not finished yet, counted on the workers page.
PENDING_STATES = ("scheduled", "queued", "running", "retrying")
#: A beat whose heartbeat is older than this is gone (a live beat ticks at least every 1 s).
BEAT_STALE_S = 10.0
#: Bucket boundaries are multiples of the bucket length from this origin (midnight UTC).
_ORIGIN = datetime(2000, 1, 1, tzinfo=timezone.utc)
#: Longest error message shown in lists.
MESSAGE_CHARS = 300
#: Seconds to wait for Redis and for the workers' answers on the workers page.
BROKER_TIMEOUT_S = 1.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


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
    row = db.session.execute(text(f"""
        SELECT count(*) FILTER (WHERE state IN ({_in(FAILURE_STATES)}) AND created_at >= :day),
               count(*) FILTER (WHERE state IN ({_in(_FINAL)}) AND created_at >= :day),
               count(*) FILTER (WHERE created_at >= :day),
               count(*) FILTER (WHERE state IN ({_in(FAILURE_STATES)})),
               count(*) FILTER (WHERE state IN ({_in(_FINAL)})),
               count(*)
        FROM job_runs WHERE created_at >= :week
    """), {"day": now - timedelta(hours=24), "week": now - timedelta(days=7)}).one()
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
               count(*) FILTER (WHERE state IN ({_in(_FINAL)})) AS final,
               count(*) FILTER (WHERE state = 'failed') AS failed,
               count(*) FILTER (WHERE state = 'lost') AS lost,
               percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY extract(epoch FROM
                   CASE state WHEN 'succeeded' THEN succeeded_at WHEN 'failed' THEN failed_at
                   END - started_at)) AS pct
        FROM job_runs
        WHERE created_at >= :since
        GROUP BY task_name
        ORDER BY task_name
    """), {"since": (now or utcnow()) - since}).all()
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
        f"SELECT state, count(*) FROM job_runs WHERE state IN ({_in(PENDING_STATES)}) "
        "GROUP BY state")).all()
    found = dict(rows)
    return {state: found.get(state, 0) for state in PENDING_STATES}


# -- beats ----------------------------------------------------------------------------------

@dataclass
class Beat:
    node: str
    host: str
    pid: int
    role: str
    started_at: datetime
    last_tick_at: datetime
    age_s: float

    @property
    def alive(self) -> bool:
        return self.age_s <= BEAT_STALE_S


def beats() -> list[Beat]:
    """Every beat heartbeat, the leader first, then by last tick (newest first)."""
    rows = db.session.execute(text(
        "SELECT node, host, pid, role, started_at, last_tick_at, "
        "extract(epoch FROM now() - last_tick_at) AS age_s FROM beat_heartbeats "
        "ORDER BY role = 'leader' DESC, last_tick_at DESC")).all()
    return [Beat(r.node, r.host, r.pid, r.role, r.started_at, r.last_tick_at,
                 max(float(r.age_s), 0.0)) for r in rows]


def beat_leader(found: list[Beat]) -> Beat | None:
    """The leading beat, if its heartbeat is fresh."""
    return next((b for b in found if b.role == "leader" and b.alive), None)


# -- broker queues --------------------------------------------------------------------------

def redis_client(url: str, timeout_s: float = BROKER_TIMEOUT_S) -> redis.Redis:
    """A redis-py client for a broker URL: redis://, rediss:// or kombu's redis+socket://."""
    if url.startswith("redis+socket://"):
        parts = urlsplit(url)
        vhost = parse_qs(parts.query).get("virtual_host", ["0"])[0].strip("/") or "0"
        return redis.Redis(unix_socket_path=parts.path, db=int(vhost),
                           password=parts.password, socket_timeout=timeout_s,
                           socket_connect_timeout=timeout_s)
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def queue_names(celery_app: Celery, since: timedelta = timedelta(hours=24),
                now: datetime | None = None) -> list[str]:
    """The default queue, and every queue named by a schedule or by a recent run."""
    names = {celery_app.conf.task_default_queue or "celery"}
    names.update(q.name for q in (celery_app.conf.task_queues or ()))
    names.update(db.session.scalars(text(
        "SELECT DISTINCT queue FROM schedules WHERE queue IS NOT NULL "
        "UNION SELECT DISTINCT queue FROM job_runs "
        "WHERE created_at >= :since AND queue IS NOT NULL"),
        {"since": (now or utcnow()) - since}))
    return sorted(names)


def queue_depths(celery_app: Celery, names: list[str],
                 timeout_s: float = BROKER_TIMEOUT_S) -> dict[str, int]:
    """Messages waiting in each queue, in one round trip to Redis (raises redis errors).

    Kombu keeps a queue as one list per priority step, named "<queue><sep><step>" except for
    step 0 (kombu.transport.redis.Channel._q_for_pri), so a depth is their sum, as in
    kombu's own `_size`.
    """
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    options = celery_app.conf.broker_transport_options or {}
    steps = options.get("priority_steps", PRIORITY_STEPS)
    sep = options.get("sep", Channel.sep)
    prefix = options.get("global_keyprefix", "")
    client = redis_client(celery_app.conf.broker_url, timeout_s)
    try:
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                for step in steps:
                    pipe.llen(f"{prefix}{name}{sep}{step}" if step else f"{prefix}{name}")
            sizes = pipe.execute()
    finally:
        client.close()
    return {name: sum(sizes[i * len(steps):(i + 1) * len(steps)])
            for i, name in enumerate(names)}


# -- workers --------------------------------------------------------------------------------

@dataclass
class Worker:
    node: str
    pid: int | None = None
    concurrency: int | None = None
    uptime_s: float | None = None
    active: list[dict] = field(default_factory=list)
    reserved: list[dict] = field(default_factory=list)
    scheduled: list[dict] = field(default_factory=list)


def workers(celery_app: Celery, timeout_s: float = BROKER_TIMEOUT_S) -> list[Worker]:
    """The workers that answer within `timeout_s`, with what they run and hold.

    A broadcast waits its whole timeout unless it knows how many replies to expect, so only
    the first one (stats, which also tells who is online) waits; the others go to the nodes
    that answered and return as soon as all of them have. Raises on broker errors.
    """
    stats = celery_app.control.inspect(timeout=timeout_s).stats() or {}
    found = {node: Worker(node, info.get("pid"),
                          (info.get("pool") or {}).get("max-concurrency"), info.get("uptime"))
             for node, info in sorted(stats.items())}
    if not found:
        return []
    inspect = celery_app.control.inspect(destination=list(found), timeout=timeout_s,
                                         limit=len(found))
    for attribute in ("active", "reserved", "scheduled"):
        for node, tasks in (getattr(inspect, attribute)() or {}).items():
            if node in found:
                setattr(found[node], attribute, tasks or [])
    return list(found.values())
