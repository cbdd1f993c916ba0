"""The dashboard's read queries on real PostgreSQL (and Redis), with rows of known times."""
from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone

import pytest
import redis
from sqlalchemy import text

from models import db, utcnow
from scheduler import broker
from scheduler.beat import schedules
from scheduler.history import processes, stats
from tests.factories import make_run

#: A fixed "now" for the windowed queries: 12:30 UTC.
NOW = datetime(2026, 3, 10, 12, 30, tzinfo=timezone.utc)
@pytest.fixture
def ctx(app, services):
    with app.app_context():
        yield
        db.session.rollback()


def at(hours: float = 0, minutes: float = 0, seconds: float = 0) -> datetime:
    return NOW - timedelta(hours=hours, minutes=minutes, seconds=seconds)


def test_hourly_histogram_counts_by_state_and_fills_empty_hours(app, ctx):
    done = "succeeded"
    make_run(app, state=done, created=at(minutes=25))                       # 12:05, this hour
    make_run(app, state=done, created=at(minutes=20))
    make_run(app, state="failed", created=at(minutes=1))                    # 12:29
    make_run(app, state=done, created=at(hours=2, minutes=30))              # 10:00:00 sharp: 10:00
    make_run(app, state=done, created=at(hours=2, minutes=30, seconds=1))   # 09:59:59: 09:00
    make_run(app, state=done, created=at(hours=23, minutes=30))             # 13:00 yesterday: 1st
    make_run(app, state=done, created=at(hours=23, minutes=30, seconds=1))  # just before: outside
    make_run(app, state=done, created=NOW + timedelta(hours=1))             # after last: outside
    db.session.commit()

    h = stats.runs_histogram(timedelta(hours=1), 24, NOW)

    assert h.starts[0] == datetime(2026, 3, 9, 13, tzinfo=timezone.utc)
    assert h.starts[-1] == datetime(2026, 3, 10, 12, tzinfo=timezone.utc)
    assert len(h.starts) == 24
    assert list(h.counts) == ["succeeded", "failed"]  # states that occur, in RunState order
    expected = [0] * 24
    expected[0], expected[20], expected[21], expected[23] = 1, 1, 1, 2
    assert h.counts["succeeded"] == expected
    assert h.counts["failed"] == [0] * 23 + [1]
    assert h.totals == [1] + [0] * 19 + [1, 1, 0, 3]
    assert h.total == 6


def test_histogram_of_an_empty_table_is_all_zero_buckets(ctx):
    h = stats.runs_histogram(timedelta(days=1), 7, NOW)
    assert len(h.starts) == 7 and h.counts == {} and h.totals == [0] * 7


def test_daily_and_six_hour_buckets(app, ctx):
    make_run(app, state="succeeded",
             created=datetime(2026, 3, 4, 0, 0, tzinfo=timezone.utc))    # first day
    make_run(app, state="succeeded",
             created=datetime(2026, 3, 3, 23, 59, tzinfo=timezone.utc))  # before it
    make_run(app, state="lost", created=datetime(2026, 3, 7, 18, tzinfo=timezone.utc))
    make_run(app, state="skipped", created=at(minutes=30))              # today 12:00
    db.session.commit()

    daily = stats.runs_histogram(timedelta(days=1), 7, NOW)
    assert daily.starts == [datetime(2026, 3, d, tzinfo=timezone.utc) for d in range(4, 11)]
    assert daily.counts == {"succeeded": [1, 0, 0, 0, 0, 0, 0], "lost": [0, 0, 0, 1, 0, 0, 0],
                            "skipped": [0, 0, 0, 0, 0, 0, 1]}

    six = stats.runs_histogram(timedelta(hours=6), 28, NOW)
    assert six.starts[-1] == datetime(2026, 3, 10, 12, tzinfo=timezone.utc)
    assert six.starts[0] == datetime(2026, 3, 3, 18, tzinfo=timezone.utc)
    assert six.counts["lost"][six.starts.index(datetime(2026, 3, 7, 18, tzinfo=timezone.utc))] == 1
    assert six.total == 4  # 03-03 23:59 is inside the first 6-hour bucket


def test_failure_rates_count_failed_and_lost_over_final_runs(app, ctx):
    assert stats.failure_rates(NOW)["24h"].rate is None  # nothing finished: no rate
    for state, n in [("succeeded", 6), ("failed", 2), ("lost", 1), ("skipped", 1),
                     ("queued", 3), ("running", 1)]:
        for _ in range(n):
            make_run(app, state=state, created=at(hours=3))
    for state, n in [("failed", 2), ("succeeded", 8)]:  # 2 days ago: in the week only
        for _ in range(n):
            make_run(app, state=state, created=at(hours=48))
    for _ in range(5):  # 8 days ago: in neither window
        make_run(app, state="failed", created=at(hours=8 * 24))
    db.session.commit()

    rates = stats.failure_rates(NOW)
    assert (rates["24h"].failures, rates["24h"].final, rates["24h"].runs) == (3, 10, 14)
    assert rates["24h"].rate == pytest.approx(0.3)
    assert (rates["7d"].failures, rates["7d"].final, rates["7d"].runs) == (5, 20, 24)
    assert rates["7d"].rate == pytest.approx(0.25)


def test_task_percentiles_slowest_and_most_failing(app, ctx):
    for s in range(1, 21):  # a: 1..20 s
        make_run(app, "task.a", state="succeeded", created=at(hours=1), duration_s=s)
    make_run(app, "task.a", state="running", created=at(minutes=5),
             started_at=at(minutes=5))  # no end yet
    make_run(app, "task.a", state="succeeded", created=at(hours=30),
             duration_s=9999)  # older than the window
    make_run(app, "task.b", state="failed", created=at(hours=2), duration_s=10, error_type="E")
    make_run(app, "task.b", state="failed", created=at(hours=2), duration_s=20, error_type="E")
    make_run(app, "task.b", state="lost", created=at(hours=2), lost_at=at(hours=1))  # no duration
    make_run(app, "task.c", state="failed", created=at(hours=2), duration_s=0.5)
    for _ in range(3):
        make_run(app, "task.c", state="succeeded", created=at(hours=2), duration_s=0.25)
    make_run(app, "task.d", state="failed", created=at(hours=2), duration_s=1)
    make_run(app, "task.d", state="succeeded", created=at(hours=2), duration_s=1)
    make_run(app, "task.e", state="skipped", created=at(hours=2),
             skip_reason="overlap")  # never ran
    db.session.commit()

    by_task = {s.task: s for s in stats.task_stats(timedelta(hours=24), NOW)}
    assert sorted(by_task) == ["task.a", "task.b", "task.c", "task.d", "task.e"]
    a, b = by_task["task.a"], by_task["task.b"]
    assert (a.runs, a.final, a.failures) == (21, 20, 0)
    assert a.p50_s == pytest.approx(10.5)    # percentile_cont: linear interpolation
    assert a.p95_s == pytest.approx(19.05)
    assert (b.failed, b.lost, b.failures, b.failure_rate) == (2, 1, 3, 1.0)
    assert (b.p50_s, b.p95_s) == (pytest.approx(15.0), pytest.approx(19.5))
    assert by_task["task.e"].p95_s is None and by_task["task.e"].failure_rate == 0

    assert [s.task for s in stats.slowest(list(by_task.values()))] == [
        "task.b", "task.a", "task.d", "task.c"]
    # Most failures first; at equal counts the higher rate (d: 1 of 2, c: 1 of 4).
    assert [s.task for s in stats.most_failing(list(by_task.values()))] == [
        "task.b", "task.d", "task.c"]


def test_recent_failures_are_the_newest_ten_with_their_errors(app, ctx):
    for i in range(12):
        make_run(app, "task.x", state="failed", created=at(hours=100 - i), duration_s=1,
                 error_type="KeyError", error_message=f"missing {i}")
    make_run(app, "task.x", state="failed", created=at(hours=1), duration_s=1,
             error_type="ValueError", error_message="x" * 1000)
    make_run(app, "task.x", state="succeeded", created=at(minutes=1), duration_s=1)
    db.session.commit()

    failures = stats.recent_failures()
    assert len(failures) == 10
    assert failures[0].error_type == "ValueError"
    assert failures[0].error_message == "x" * stats.MESSAGE_CHARS
    assert [f.error_message for f in failures[1:]] == [f"missing {i}" for i in range(11, 2, -1)]
    assert [f.id for f in failures] == sorted((f.id for f in failures), reverse=True)


def test_next_scheduled_lists_enabled_schedules_by_next_fire(ctx):
    soon = schedules.create("soon", {"task": "demo.noop", "every": "10s", "queue": "fast"})
    later = schedules.create("later", {"task": "demo.noop", "cron": "30 2 * * *",
                                       "tz": "Europe/Berlin"})
    unplanned = schedules.create("unplanned", {"task": "demo.noop", "every": "5m"})
    schedules.create("off", {"task": "demo.noop", "every": "1m"}, enabled=False)
    soon.next_fire_at = NOW + timedelta(seconds=10)
    later.next_fire_at = NOW + timedelta(hours=14)
    db.session.commit()

    upcoming = stats.next_scheduled()
    assert [u.schedule.name for u in upcoming] == ["soon", "later", "unplanned"]
    assert upcoming[0].description == schedules.describe(soon) == "every 10 seconds"
    assert upcoming[1].description == schedules.describe(later)
    assert unplanned.next_fire_at is None
    assert len(stats.next_scheduled(limit=1)) == 1


def test_countdowns_and_pending_counts(app, ctx):
    assert stats.countdowns() == stats.Countdowns(0)
    assert stats.pending_counts() == {"scheduled": 0, "queued": 0, "running": 0, "retrying": 0}
    make_run(app, "mail.send", state="scheduled", created=at(hours=1),
             eta=NOW + timedelta(hours=2))
    make_run(app, state="scheduled", created=at(hours=1), eta=NOW + timedelta(minutes=5))
    make_run(app, state="queued", created=at(minutes=1))
    make_run(app, state="running", created=at(minutes=1), started_at=at(minutes=1))
    make_run(app, state="succeeded", created=at(minutes=1), duration_s=1)
    db.session.commit()

    found = stats.countdowns()
    assert (found.count, found.next_task, found.next_eta) == (
        2, "demo.noop", NOW + timedelta(minutes=5))
    assert stats.pending_counts() == {"scheduled": 2, "queued": 1, "running": 1, "retrying": 0}


def test_beats_leader_and_stale_heartbeats(ctx):
    assert processes.beat_leader(processes.beats()) is None
    for node, role, age_s in [("h:1", "standby", 1), ("h:2", "leader", 2),
                              ("h:3", "standby", 30), ("h:4", "leader", 60)]:
        db.session.execute(text(
            "INSERT INTO beat_heartbeats (node, host, pid, role, started_at, last_tick_at) "
            "VALUES (:node, 'h', 1, :role, now() - interval '1 hour', "
            "now() - make_interval(secs => :age))"), {"node": node, "role": role, "age": age_s})
    db.session.commit()

    found = processes.beats()
    assert [b.node for b in found] == ["h:2", "h:4", "h:1", "h:3"]
    assert [b.alive for b in found] == [True, False, True, False]
    assert processes.beat_leader(found).node == "h:2"
    assert found[1].age_s == pytest.approx(60, abs=5)


def test_queue_names_and_depths(app, ctx, services):
    celery_app = app.extensions["celery"]
    schedules.create("q", {"task": "demo.noop", "every": "1m", "queue": "stats-sched-q"})
    make_run(app, state="succeeded", created=utcnow(), queue="stats-run-q")
    make_run(app, state="succeeded", created=utcnow() - timedelta(days=3), queue="stats-old-q")
    db.session.commit()
    names = broker.queue_names(celery_app)
    assert names == ["celery", "stats-run-q", "stats-sched-q"]

    # No worker consumes these queues; kombu keeps priorities 3, 6, 9 in lists of their own.
    r = services.redis()
    try:
        r.lpush("stats-run-q", "m1", "m2", "m3")
        r.lpush("stats-sched-q\x06\x163", "m4")
        r.lpush("stats-sched-q\x06\x169", "m5")
        depths = broker.queue_depths(celery_app, ["stats-run-q", "stats-sched-q", "stats-none"])
    finally:
        r.delete("stats-run-q", "stats-sched-q\x06\x163", "stats-sched-q\x06\x169")
    assert depths == {"stats-run-q": 3, "stats-sched-q": 2, "stats-none": 0}


def test_redis_client_reads_every_broker_url_form(services):
    assert broker.redis_client(services.redis_url).ping()
    client = broker.redis_client("redis+socket:///tmp/x.sock?virtual_host=3")
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["path"], kwargs["db"]) == ("/tmp/x.sock", 3)
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(redis.ConnectionError):
        broker.redis_client(f"redis://127.0.0.1:{port}/0").ping()
