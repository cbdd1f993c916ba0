"""Real `celery beat` processes with the database scheduler, a real worker, real Redis."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, text

from models import BeatHeartbeat, JobRun, Schedule, db
from scheduler.beat import schedules
from scheduler.enqueue import enqueue
from tests.helpers import load_run, wait_for, wait_for_state

#: Each beat must tick at least this often (DatabaseScheduler.max_interval is 1 s).
TAKEOVER_LIMIT_S = 10.0


def _leader(app) -> BeatHeartbeat | None:
    with app.app_context():
        fresh = datetime.now(timezone.utc) - timedelta(seconds=3)
        return db.session.scalar(select(BeatHeartbeat).where(
            BeatHeartbeat.role == "leader", BeatHeartbeat.last_tick_at > fresh))


def _runs(app, name: str) -> list[JobRun]:
    with app.app_context():
        schedule_id = db.session.scalar(select(Schedule.id).where(Schedule.name == name))
        rows = list(db.session.scalars(select(JobRun).where(JobRun.schedule_id == schedule_id)
                                       .order_by(JobRun.scheduled_for)))
        for row in rows:
            db.session.expunge(row)
        return rows


def _slot_count(reason: str) -> int:
    return int(reason.split()[1])


def test_two_beats_one_leader_exactly_one_run_per_slot_and_takeover(app, worker, beats):
    with app.app_context():
        schedules.create("every-second", {"task": "demo.noop", "every": "1s"})
    first, second = beats.start(), beats.start()
    leader = wait_for(lambda: _leader(app), timeout=60, message="a leader")
    wait_for(lambda: len(_runs(app, "every-second")) >= 30, timeout=90, interval=0.5,
             message="30 fires")
    # kill -9 the leader; the standby must take over.
    victim = first if leader.pid == first.proc.pid else second
    survivor = second if victim is first else first
    killed_at = datetime.now(timezone.utc)
    victim.kill()
    new_leader = wait_for(lambda: (l := _leader(app)) and l.pid == survivor.proc.pid and l,
                          timeout=TAKEOVER_LIMIT_S + 5, interval=0.2, message="the takeover")
    assert (new_leader.last_tick_at - killed_at).total_seconds() < TAKEOVER_LIMIT_S
    wait_for(lambda: len([r for r in _runs(app, "every-second") if r.state != "skipped"]) >= 62,
             timeout=90, interval=0.5, message="62 fires")
    survivor.stop()
    wait_for(lambda: all(r.state in ("succeeded", "skipped") for r in _runs(app, "every-second")),
             timeout=30, message="every fired run to finish")

    rows = _runs(app, "every-second")
    slots = [r.scheduled_for for r in rows]
    assert len(slots) == len(set(slots)), "a slot fired twice"
    fired = [r for r in rows if r.state == "succeeded"]
    assert all(r.attempts == 1 for r in fired), "a fired run was executed twice"
    # No lost slot: every second from the first to the last is a run or counted in a skip.
    missed = sum(_slot_count(r.skip_reason) for r in rows if r.state == "skipped")
    span = int((slots[-1] - slots[0]).total_seconds()) + 1
    assert len(fired) + missed == span
    assert len(fired) >= 60


def test_edits_take_effect_without_restart(app, worker, beats):
    with app.app_context():
        schedules.create("edited", {"task": "demo.noop", "every": "1h"})
    beats.start()
    wait_for(lambda: _leader(app), timeout=60, message="a leader")
    time.sleep(1.5)
    assert _runs(app, "edited") == []
    with app.app_context():
        schedules.update(schedules.get("edited"), {"every": "1s", "args": "[\"new\"]"})
    edited_at = time.monotonic()
    wait_for(lambda: _runs(app, "edited"), timeout=5, interval=0.1, message="the edit")
    assert time.monotonic() - edited_at < 5
    assert _runs(app, "edited")[0].args == ["new"]

    with app.app_context():
        schedules.set_enabled(schedules.get("edited"), False)
    time.sleep(1.5)  # a fire already in flight may still land
    count = len(_runs(app, "edited"))
    time.sleep(3)
    assert len(_runs(app, "edited")) == count

    with app.app_context():
        schedules.create("inserted", {"task": "demo.noop", "every": "1s"})
    wait_for(lambda: _runs(app, "inserted"), timeout=5, interval=0.1, message="the insert")
    beat_runs = text("SELECT count(*) FROM job_runs WHERE trigger = 'beat'")
    with app.app_context():
        schedules.remove(schedules.get("inserted"))
        gone = db.session.execute(beat_runs).scalar()
    time.sleep(3)
    with app.app_context():
        assert db.session.execute(beat_runs).scalar() <= gone + 1  # one may be in flight


def test_overlap_skip_with_a_real_worker(app, worker, beats):
    with app.app_context():
        schedules.create("slow", {"task": "demo.long_task", "every": "1s", "overlap": "skip",
                                  "kwargs": '{"steps": 50}'})  # 50 x 0.05 s = 2.5 s a run
    beats.start()
    wait_for(lambda: len([r for r in _runs(app, "slow") if r.state == "skipped"]) >= 2,
             timeout=60, interval=0.2, message="skipped fires")
    skipped = [r for r in _runs(app, "slow") if r.state == "skipped"]
    assert all("is still" in r.skip_reason and "overlap policy skip" in r.skip_reason
               for r in skipped)


def test_countdown_survives_a_redis_flush_and_runs_once(app, worker, beats, services):
    with app.app_context():
        task_id = enqueue("demo.noop", ["later"], trigger="web", countdown=3)
    run = load_run(app, task_id)
    assert run.state == "scheduled" and run.eta is not None
    services.redis().flushall()
    beats.start()
    run = wait_for_state(app, task_id, "succeeded", timeout=60)
    assert run.attempts == 1, [(e.state, e.attempt, e.message) for e in run.events]
    assert [e.state for e in run.events] == ["scheduled", "queued", "running", "succeeded"]
    released = run.events[1].at
    assert released >= run.eta
    assert (released - run.eta).total_seconds() < 30  # beat start-up included


def test_countdown_can_be_cancelled_until_released(app, worker, beats):
    from scheduler import records

    with app.app_context():
        task_id = enqueue("demo.noop", ["never"], trigger="web", countdown=2)
        records.revoke(task_id, "cancelled")
    beats.start()
    wait_for(lambda: _leader(app), timeout=60, message="a leader")
    time.sleep(3)
    run = load_run(app, task_id)
    assert run.state == "revoked" and run.started_at is None
