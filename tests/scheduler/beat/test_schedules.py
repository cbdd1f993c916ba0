"""Schedules defined in code (beat_schedule.py) synced into the table by name."""
from __future__ import annotations

import beat_schedule
from scheduler.beat import schedules
from scheduler.beat.slots import ScheduleError

import pytest


@pytest.fixture
def ctx(app, services):
    with app.app_context():
        yield


def test_shipped_schedules_are_valid(ctx):
    schedules.sync_code(beat_schedule.SCHEDULES)
    for entry in beat_schedule.SCHEDULES:
        schedule = schedules.get(entry["name"])
        assert schedule.source == "code"
        assert schedule.enabled == entry.get("enabled", True)
        assert schedules.next_fire_times(schedule, 5)


def test_code_owns_the_definition_the_operator_owns_enabled(ctx):
    entry = {"name": "job", "task": "demo.noop", "every": "1m", "enabled": True}
    schedules.sync_code([entry])
    schedules.set_enabled(schedules.get("job"), False)
    # A restart with a changed definition: the definition follows the code, enabled stays off.
    schedules.sync_code([dict(entry, every="5m", args=[1])])
    job = schedules.get("job")
    assert job.every_s == 300 and job.args == [1]
    assert job.enabled is False
    assert job.next_fire_at is None  # planned afresh


def test_unchanged_definition_keeps_its_cursor(ctx):
    from datetime import datetime, timezone

    from scheduler.beat import firing

    entry = {"name": "steady", "task": "demo.noop", "every": "1m"}
    schedules.sync_code([entry])
    firing.fire_due(datetime.now(timezone.utc))
    planned = schedules.get("steady").next_fire_at
    assert planned is not None
    schedules.sync_code([entry])
    assert schedules.get("steady").next_fire_at == planned


def test_code_schedules_removed_from_code_are_removed(ctx):
    schedules.sync_code([{"name": "old", "task": "demo.noop", "every": "1m"}])
    schedules.create("mine", {"task": "demo.noop", "every": "1m"})
    schedules.sync_code([])
    with pytest.raises(ScheduleError):
        schedules.get("old")
    assert schedules.get("mine").source == "user"


def test_bad_code_entry_is_an_error(ctx):
    with pytest.raises(ScheduleError, match="unknown task"):
        schedules.sync_code([{"name": "typo", "task": "demo.nope", "every": "1m"}])


def test_two_beats_syncing_at_once_do_not_collide(app, services):
    import threading

    errors = []

    def sync():
        try:
            with app.app_context():
                schedules.sync_code(beat_schedule.SCHEDULES)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sync) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with app.app_context():
        assert {s["name"] for s in beat_schedule.SCHEDULES} == {
            s.name for s in schedules.db.session.scalars(schedules.select(schedules.Schedule))}
