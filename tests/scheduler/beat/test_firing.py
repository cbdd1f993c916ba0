"""Firing schedules with a controlled clock against real PostgreSQL: policies, catch-up, DST."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from models import JobRun, Schedule, db
from scheduler.beat import firing, schedules

UTC = timezone.utc
T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def ctx(app, services):
    with app.app_context():
        yield
        db.session.remove()


def runs(name: str) -> list[JobRun]:
    db.session.expire_all()
    schedule_id = db.session.scalar(select(Schedule.id).where(Schedule.name == name))
    return list(db.session.scalars(
        select(JobRun).where(JobRun.schedule_id == schedule_id).order_by(JobRun.scheduled_for)))


def fired(name: str) -> list[datetime]:
    return [r.scheduled_for for r in runs(name) if r.state != "skipped"]


def skipped(name: str) -> list[JobRun]:
    return [r for r in runs(name) if r.state == "skipped"]


def step(start: datetime, end: datetime, every: timedelta):
    t = start
    while t <= end:
        firing.fire_due(t)
        t += every


def test_interval_fires_each_slot_once(ctx):
    schedules.create("every-minute", {"task": "demo.noop", "every": "1m", "args": "[1]"})
    step(T0 + timedelta(seconds=1), T0 + timedelta(minutes=5, seconds=1), timedelta(seconds=10))
    assert fired("every-minute") == [T0 + timedelta(minutes=m) for m in range(1, 6)]
    run = runs("every-minute")[0]
    assert run.state == "scheduled" and run.eta == run.scheduled_for  # the dispatcher's to publish
    assert run.trigger == "beat" and run.args == [1] and run.task_name == "demo.noop"
    schedule = schedules.get("every-minute")
    assert schedule.total_run_count == 5
    assert schedule.next_fire_at == T0 + timedelta(minutes=6)


def test_the_same_tick_twice_fires_nothing_twice(ctx):
    schedules.create("s", {"task": "demo.noop", "every": "1s"})
    firing.fire_due(T0)
    for _ in range(3):
        firing.fire_due(T0 + timedelta(seconds=1))
    assert fired("s") == [T0 + timedelta(seconds=1)]


def test_two_beats_ticking_at_once_fire_each_slot_once(ctx, app):
    schedules.create("s", {"task": "demo.noop", "every": "1s"})
    firing.fire_due(T0)
    errors = []
    ticks = [T0 + timedelta(milliseconds=250 * n) for n in range(1, 161)]  # to T0 + 40 s
    # One simulated clock for both: they race on every tick, and neither can run ahead of the
    # other however the machine schedules the threads.
    together = threading.Barrier(2, timeout=30)

    def beat(offset_ms: int):
        try:
            with app.app_context():
                for tick in ticks:
                    together.wait()
                    # Clock jitter: the two beats see slightly different times.
                    firing.fire_due(tick + timedelta(milliseconds=offset_ms))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
            together.abort()

    threads = [threading.Thread(target=beat, args=(ms,)) for ms in (0, 130)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert fired("s") == [T0 + timedelta(seconds=s) for s in range(1, 41)]
    assert skipped("s") == []


def test_catch_up_after_downtime_runs_once_and_records_what_was_missed(ctx):
    schedules.create("m", {"task": "demo.noop", "every": "1m"})
    step(T0 + timedelta(seconds=1), T0 + timedelta(minutes=1, seconds=1), timedelta(minutes=1))
    # Beat is down from 12:01:01 until 12:10:05.
    firing.fire_due(T0 + timedelta(minutes=10, seconds=5))
    assert fired("m") == [T0 + timedelta(minutes=1), T0 + timedelta(minutes=10)]
    [skip] = skipped("m")
    assert skip.scheduled_for == T0 + timedelta(minutes=2)
    assert skip.skip_reason.startswith(
        "missed 8 slots between 2026-06-01T12:02:00+00:00 and 2026-06-01T12:09:00+00:00")
    assert "catch-up" in skip.skip_reason
    assert [e.state for e in skip.events] == ["skipped"]
    # And a restart right after changes nothing.
    firing.fire_due(T0 + timedelta(minutes=10, seconds=6))
    assert len(runs("m")) == 3


def test_misfire_skip_runs_nothing_late(ctx):
    schedules.create("late", {"task": "demo.noop", "every": "1m", "misfire": "skip",
                              "misfire_grace_s": "10s"})
    firing.fire_due(T0 + timedelta(seconds=1))
    firing.fire_due(T0 + timedelta(minutes=3, seconds=30))  # 30 s after the last slot
    assert fired("late") == []
    [skip] = skipped("late")
    assert skip.skip_reason.startswith("missed 3 slots between 2026-06-01T12:01:00+00:00 and "
                                       "2026-06-01T12:03:00+00:00: fired too late")
    # Within the grace period the latest slot still fires.
    firing.fire_due(T0 + timedelta(minutes=5, seconds=5))
    assert fired("late") == [T0 + timedelta(minutes=5)]
    assert len(skipped("late")) == 2  # 12:04 was missed


def test_overlap_skip_records_a_skipped_run_with_the_reason(ctx):
    schedules.create("slow", {"task": "demo.noop", "every": "1s", "overlap": "skip"})
    firing.fire_due(T0)
    firing.fire_due(T0 + timedelta(seconds=1))  # fires; its run is not final (no dispatcher)
    firing.fire_due(T0 + timedelta(seconds=2))
    first = runs("slow")[0]
    [skip] = skipped("slow")
    assert skip.scheduled_for == T0 + timedelta(seconds=2)
    assert skip.skip_reason == (f"previous run {first.task_id} is still scheduled "
                                "(overlap policy skip)")
    assert skip.skipped_at is not None


def test_disabled_and_removed_schedules_do_not_fire(ctx):
    schedule = schedules.create("d", {"task": "demo.noop", "every": "1s"})
    firing.fire_due(T0)
    schedules.set_enabled(schedule, False)
    firing.fire_due(T0 + timedelta(seconds=5))
    assert fired("d") == []
    schedules.set_enabled(schedule, True)
    # Re-enabled: planned from now, no catch-up of the disabled period.
    firing.fire_due(T0 + timedelta(seconds=10, milliseconds=500))
    firing.fire_due(T0 + timedelta(seconds=11, milliseconds=500))
    assert fired("d") == [T0 + timedelta(seconds=11)]
    assert skipped("d") == []


def test_clocked_fires_once_then_is_finished(ctx):
    at = T0 + timedelta(minutes=1)
    schedules.create("once", {"task": "demo.noop", "at": at.isoformat()})
    step(T0, T0 + timedelta(minutes=3), timedelta(seconds=20))
    assert fired("once") == [at]
    assert schedules.get("once").enabled is False


def test_bounds_are_respected(ctx):
    schedules.create("bounded", {
        "task": "demo.noop", "every": "1m",
        "start_at": (T0 + timedelta(minutes=2)).isoformat(),
        "end_at": (T0 + timedelta(minutes=4)).isoformat(),
    })
    step(T0, T0 + timedelta(minutes=6), timedelta(seconds=30))
    assert fired("bounded") == [T0 + timedelta(minutes=m) for m in (2, 3, 4)]


@pytest.mark.parametrize(
    "night_start, expected",
    [
        # Clocks go forward (02:00 CET -> 03:00 CEST): 02:30 does not exist; it fires at 03:00.
        (datetime(2026, 3, 28, 22, 0, tzinfo=UTC), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        # Clocks go back (03:00 CEST -> 02:00 CET): 02:30 happens twice; it fires once, first.
        (datetime(2026, 10, 24, 22, 0, tzinfo=UTC), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_daylight_saving_nights_fire_once(ctx, night_start, expected):
    schedules.create("nightly", {"task": "demo.noop", "cron": "30 2 * * *",
                                 "tz": "Europe/Berlin"})
    step(night_start, night_start + timedelta(hours=6), timedelta(minutes=1))
    assert fired("nightly") == [expected]
    assert skipped("nightly") == []


def test_hourly_cron_across_the_fall_back_night(ctx):
    schedules.create("hourly", {"task": "demo.noop", "cron": "0 * * * *",
                                "tz": "Europe/Berlin"})
    start = datetime(2026, 10, 24, 22, 30, tzinfo=UTC)
    step(start, start + timedelta(hours=5), timedelta(minutes=5))
    slots = fired("hourly")
    assert slots == sorted(set(slots))
    # Local 01:00, 02:00 (first pass), 03:00, 04:00, 05:00 ... : 02:00 CET is not fired again.
    assert slots == [datetime(2026, 10, 24, 23, 0, tzinfo=UTC),
                     datetime(2026, 10, 25, 0, 0, tzinfo=UTC),
                     datetime(2026, 10, 25, 2, 0, tzinfo=UTC),
                     datetime(2026, 10, 25, 3, 0, tzinfo=UTC)]
