"""Every value Celery's JSON carries reaches the task as Celery would give it: run now, after a
countdown, from a schedule and as a re-run, on real worker and beat processes; and a due run
whose message cannot be made does not stop beat."""
from __future__ import annotations

import json
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from kombu.utils.json import dumps as celery_dumps
from sqlalchemy import select, text

from models import JobRun, db
from scheduler import records
from scheduler.beat import schedules
from scheduler.history import actions
from tests.helpers import load_run, wait_for, wait_for_state

ARGS = [date(2026, 12, 2), datetime(2026, 12, 2, 7, 30, 15, 123456, tzinfo=timezone.utc),
        time(23, 59, 1), Decimal("12.3400"), uuid.UUID("6f1d5a43-8a11-4c36-9d0f-2a4e0b8c7d11"),
        None, {"nested": [date(1899, 12, 31), {"at": Decimal("-0.5")}]}]
KWARGS = {"when": datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
          "none": None, "id": uuid.UUID(int=7)}


def _as_stored(value):
    """What the records hold for value: Celery's JSON of it, as jsonb gives it back."""
    return json.loads(celery_dumps(value))


EXPECTED = _as_stored({"args": ARGS, "kwargs": KWARGS})


def _noop(app):
    return app.extensions["celery"].tasks["demo.noop"]


def test_typed_arguments_run_now_and_keep_their_types_in_the_record(app, worker):
    with app.app_context():
        task_id = _noop(app).apply_async(ARGS, KWARGS).id
    run = wait_for_state(app, task_id, "succeeded")
    # demo.noop returns what it received: typed values come back typed (as markers of
    # Celery's JSON), not as the strings a plain JSON round trip would have left.
    assert run.result == EXPECTED
    assert run.args == _as_stored(ARGS) and run.kwargs == _as_stored(KWARGS)


def test_typed_arguments_after_a_countdown(app, worker, beats):
    with app.app_context():
        task_id = _noop(app).apply_async(ARGS, KWARGS, countdown=1).id
    assert load_run(app, task_id).state == "scheduled"
    beats.start()
    run = wait_for_state(app, task_id, "succeeded", timeout=60)
    assert run.result == EXPECTED
    assert beats[0].proc.poll() is None


def test_arguments_over_the_display_cap_are_published_whole_after_a_countdown(app, worker,
                                                                            beats):
    big = "x" * (app.config["RESULT_MAX_BYTES"] + 10)
    with app.app_context():
        task_id = _noop(app).apply_async([big, date(2026, 1, 2)], countdown=1).id
    run = load_run(app, task_id)
    assert run.args["__truncated__"] is True  # the display copy is capped...
    beats.start()
    run = wait_for_state(app, task_id, "succeeded", timeout=60)
    # ...and the task got every byte: its result (the arguments) is as big as the whole call.
    whole = celery_dumps({"args": [big, date(2026, 1, 2)], "kwargs": {}})
    assert run.result["__truncated__"] is True and run.result["bytes"] == len(whole)


def test_typed_arguments_from_a_schedule(app, worker, beats):
    # Python values, as a schedule defined in code gives them (beat's start-up would replace
    # code schedules with beat_schedule.py's, so this one is made as a user's).
    with app.app_context():
        schedules.create("typed", {"task": "demo.noop", "every": "1s", "args": ARGS,
                                   "kwargs": KWARGS})
    beats.start()

    def fired():
        with app.app_context():
            return db.session.scalar(select(JobRun).where(
                JobRun.trigger == "beat", JobRun.task_name == "demo.noop",
                JobRun.state == "succeeded").limit(1))

    run = wait_for(fired, timeout=60, message="a fire of the typed schedule")
    assert run.result == EXPECTED


def test_a_rerun_gets_the_arguments_of_the_run_it_repeats(app, worker):
    big = "y" * (app.config["RESULT_MAX_BYTES"] + 10)
    with app.app_context():
        first = _noop(app).apply_async(ARGS + [big], KWARGS).id
    run = wait_for_state(app, first, "succeeded")
    assert run.args["__truncated__"] is True
    with app.app_context():
        again = actions.rerun(db.session.get(JobRun, run.id), by="test")
        task_id = db.session.get(JobRun, again.run_id).task_id
    rerun = wait_for_state(app, task_id, "succeeded")
    assert rerun.result == run.result and rerun.result["__truncated__"] is True
    with app.app_context():
        small = _noop(app).apply_async(ARGS, KWARGS).id
    run = wait_for_state(app, small, "succeeded")
    with app.app_context():
        again = actions.rerun(db.session.get(JobRun, run.id), by="test")
        task_id = db.session.get(JobRun, again.run_id).task_id
    assert wait_for_state(app, task_id, "succeeded").result == EXPECTED


def test_a_due_run_that_cannot_be_published_fails_and_beat_releases_the_rest(app, worker,
                                                                           beats):
    """A row written before exact copies were kept, whose display copy was capped: its
    message cannot be made. It sorts first by due time; beat must go on past it."""
    past = datetime.now(timezone.utc) - timedelta(seconds=5)
    bad = str(uuid.uuid4())
    with app.app_context():
        records.create(bad, "demo.noop", [], {}, trigger="web", eta=past)
        with db.engine.begin() as conn:
            conn.execute(text(
                "UPDATE job_runs SET call_json = NULL, "
                "args = '{\"__truncated__\": true, \"bytes\": 70000, \"preview\": \"[\"}' "
                "WHERE task_id = :t"), {"t": bad})
        good = _noop(app).apply_async([date(2026, 5, 1)], eta=past + timedelta(seconds=6)).id
    beats.start()
    assert wait_for_state(app, good, "succeeded", timeout=60).result == _as_stored(
        {"args": [date(2026, 5, 1)], "kwargs": {}})
    failed = wait_for_state(app, bad, "failed")
    assert failed.error_type == "CallNotKept" and "could not publish" in failed.events[-1].message
    assert beats[0].proc.poll() is None  # beat is still up
