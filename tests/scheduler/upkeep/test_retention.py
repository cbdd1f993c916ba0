"""Bounded history (scheduler.retention): daily rollups written before runs are pruned, on real
PostgreSQL, by the CLI's function and by the scheduled task on a real worker."""
from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

import beat_schedule
from models import utcnow
from scheduler.beat import schedules
from scheduler.history import stats
from scheduler.upkeep import retention
from scheduler.enqueue import enqueue
from tests.factories import make_run
from tests.helpers import wait_for_state

DAY = timedelta(days=1)


@pytest.fixture
def engine(services):
    """A connection pool of the test's own, and rollups emptied before and after (the shared
    clean_tables fixture predates them)."""
    engine = create_engine(services.database_url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE job_run_daily"))
    yield engine
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE job_run_daily"))
    engine.dispose()


def today() -> datetime:
    return stats.floor_time(utcnow(), DAY)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks, as PostgreSQL's percentile_cont."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def rollups(conn) -> dict[tuple, tuple]:
    """{(day, task, state): (runs, timed, sum_ms, p50_ms, p95_ms, sealed)}"""
    rows = conn.execute(text(
        "SELECT day, task_name, state, runs, timed, duration_sum_ms, p50_ms, p95_ms, sealed "
        "FROM job_run_daily")).all()
    return {tuple(r[:3]): tuple(r[3:]) for r in rows}


def test_prune_rolls_up_what_it_deletes_keeps_what_it_must_and_is_idempotent(app, engine):
    old = today() - 40 * DAY                 # beyond retention: its runs go
    older = today() - 41 * DAY
    recent = today() - 2 * DAY               # within retention: rolled up, not sealed
    with app.app_context():
        schedule_id = schedules.create("nightly", {"task": "demo.noop", "every": "1h"}).id
    durations = {"succeeded": [1, 2, 3, 4, 10, 0.5], "failed": [5, 7]}
    with engine.begin() as conn:
        for state, values in durations.items():
            for i, d in enumerate(values):
                make_run(app, "t.a", state=state, created=old + timedelta(hours=1, minutes=i),
                         duration_s=d, conn=conn)
        make_run(app, "t.a", state="lost", created=old + timedelta(hours=2), conn=conn)
        # never started: untimed
        make_run(app, "t.a", state="succeeded", created=old + timedelta(hours=3), conn=conn)
        make_run(app, "t.b", state="failed", created=older + timedelta(hours=5), duration_s=2,
                 conn=conn)  # t.b's last failure
        make_run(app, "t.b", state="skipped",
                 created=old + timedelta(hours=23, minutes=59, seconds=59), conn=conn)
        sched = [make_run(app, "demo.noop", state="succeeded",
                          created=old + timedelta(minutes=i), duration_s=1,
                          schedule_id=schedule_id, conn=conn) for i in range(103)]
        unfinished = make_run(app, "t.a", state="queued", created=old + timedelta(hours=4),
                              conn=conn)
        kept_recent = [make_run(app, "t.a", state="succeeded",
                                created=recent + timedelta(hours=h), duration_s=1, conn=conn)
                       for h in range(3)]
        today_run = make_run(app, "t.a", state="succeeded", created=utcnow(), duration_s=1,
                             conn=conn)
        before = conn.execute(text("SELECT count(*) FROM job_runs")).scalar()

    with app.app_context():
        result = retention.prune(30, batch=4)               # many batches
    assert result.rollups.written == 3 and result.rollups.sealed == 2

    with engine.connect() as conn:
        left = set(conn.execute(text("SELECT id FROM job_runs")).scalars())
        last_failure_a = conn.execute(text(
            "SELECT max(id) FROM job_runs WHERE task_name = 't.a' AND state = 'failed'")).scalar()
        found = rollups(conn)
    # Kept: each task's last failure, the schedule's newest 100, the unfinished, the recent.
    assert {unfinished, today_run, *kept_recent, *sched[3:]} <= left
    assert last_failure_a is not None and not set(sched[:3]) & left
    assert result.deleted == before - len(left)
    assert len(left) == 3 + 1 + 100 + 1 + 1 + 1       # + t.a's and t.b's last failures

    day = old.date()
    for state, values in durations.items():
        ms = [v * 1000 for v in values]
        runs, timed, sum_ms, p50, p95, sealed = found[(day, "t.a", state)]
        assert (runs, timed, sealed) == (len(ms) + (state == "succeeded"), len(ms), True)
        assert sum_ms == pytest.approx(sum(ms))
        assert p50 == pytest.approx(percentile(ms, 0.5))
        assert p95 == pytest.approx(percentile(ms, 0.95))
    assert found[(day, "t.a", "lost")] == (1, 0, 0, None, None, True)
    assert found[(day, "t.a", "queued")][0] == 1
    assert found[(day, "t.b", "skipped")][0] == 1      # 23:59:59 is still that day
    assert found[(day, "demo.noop", "succeeded")][:2] == (103, 103)
    assert found[(older.date(), "t.b", "failed")][0] == 1
    assert found[(recent.date(), "t.a", "succeeded")] == (3, 3, 3000, 1000, 1000, False)
    assert not [key for key in found if key[0] >= today().date()]  # today is not complete

    # Again: nothing more to delete, and the same figures (sealed days are not recomputed
    # from what is left of them).
    with app.app_context():
        again = retention.prune(30, batch=4)
    assert again.deleted == 0 and again.rollups.written == 1 and again.rollups.sealed == 0
    with engine.connect() as conn:
        assert rollups(conn) == found


def test_a_day_is_recomputed_until_it_is_sealed(app, engine):
    day = today() - 4 * DAY
    with engine.begin() as conn:
        runs = [make_run(app, "t.a", state="running", created=day + timedelta(hours=1),
                         conn=conn) for _ in range(3)]
        make_run(app, "t.a", state="failed", created=day + timedelta(hours=2), duration_s=1,
                 conn=conn)
    with app.app_context():
        assert retention.roll_up().written == 1
    with engine.connect() as conn:
        assert rollups(conn)[(day.date(), "t.a", "running")][0] == 3

    with engine.begin() as conn:                  # they end after the day's first rollup
        conn.execute(text("UPDATE job_runs SET state = 'succeeded' WHERE id = ANY(:ids)"),
                     {"ids": runs})
    with app.app_context():
        assert retention.roll_up().written == 1   # settling: written again, replacing
        assert retention.prune(3).deleted == 3    # seals the day, then deletes (not the failure)
    with engine.connect() as conn:
        found = rollups(conn)
        assert conn.execute(text("SELECT count(*) FROM job_runs")).scalar() == 1
    assert {k[2]: v[0] for k, v in found.items()} == {"succeeded": 3, "failed": 1}
    assert all(v[-1] for v in found.values())

    with app.app_context():                       # the kept failure does not reopen the day
        assert retention.roll_up().written == 0
    with engine.connect() as conn:
        assert rollups(conn) == found


def test_prune_refuses_less_than_a_day(app, engine):
    with app.app_context(), pytest.raises(ValueError):
        retention.prune(0)


def test_the_scheduled_prune_runs_on_a_worker(app, engine, worker):
    entry = next(s for s in beat_schedule.SCHEDULES if s["task"] == "runs.prune")
    assert entry["cron"] == "27 3 * * *" and entry["overlap"] == "skip"
    old = today() - 45 * DAY
    with engine.begin() as conn:
        for i in range(4):
            make_run(app, "t.old", state="succeeded", created=old + timedelta(hours=i),
                     duration_s=i + 1, conn=conn)
    with app.app_context():
        task_id = enqueue("runs.prune", trigger="manual")
    run = wait_for_state(app, task_id, "succeeded", "failed", timeout=60)
    assert run.state == "succeeded", run.traceback
    assert run.result == {"deleted": 4, "days_rolled_up": 1, "days_sealed": 1}
    with engine.connect() as conn:
        assert rollups(conn)[(old.date(), "t.old", "succeeded")][:3] == (4, 4, 10_000)
        assert conn.execute(text(
            "SELECT count(*) FROM job_runs WHERE task_name = 't.old'")).scalar() == 0


def test_the_dashboard_counts_pruned_days_from_rollups(app, engine, viewer_client):
    pruned = today() - 3 * DAY
    unrolled = today() - DAY                      # before the nightly prune: read live
    with engine.begin() as conn:
        for i in range(5):
            make_run(app, "t.a", state="succeeded", created=pruned + timedelta(hours=i),
                     duration_s=1, conn=conn)
        make_run(app, "t.a", state="lost", created=pruned + timedelta(hours=6), conn=conn)
    with app.app_context():
        assert retention.prune(2).deleted == 6
    with engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_runs")).scalar() == 0
        for _ in range(2):
            make_run(app, "t.a", state="succeeded", created=unrolled + timedelta(hours=1),
                     conn=conn)
        make_run(app, "t.a", state="failed", created=utcnow(), conn=conn)

    with app.app_context():
        week = stats.daily_histogram(7)
    assert week.starts[-1] == today() and week.total == 9
    assert week.counts == {"succeeded": [0, 0, 0, 5, 0, 2, 0], "failed": [0] * 6 + [1],
                           "lost": [0, 0, 0, 1, 0, 0, 0]}

    html = viewer_client.get("/admin/").get_data(as_text=True)
    assert f"{pruned:%a %d %b}: succeeded 5" in html      # the 7-day chart's tooltip
    for bar in (f"{pruned:%d %b}: succeeded 5", f"{pruned:%d %b}: lost 1",
                f"{unrolled:%d %b}: succeeded 2", f"{today():%d %b}: failed 1"):
        assert html.count(bar) == 2, bar                  # in the 7-day and 30-day charts
