"""The worker process's record writer against the real PostgreSQL: batches, the combined
running+outcome write of short runs, and records the database refuses."""
from __future__ import annotations

import threading
import uuid

import pytest

from models import db, utcnow
from models.states import RunState
from scheduler import records
from scheduler.enqueue import enqueue
from scheduler.recorder import Recorder
from tests.helpers import load_run, wait_for_state


@pytest.fixture
def rec(app, services):
    with app.app_context():
        recorder = Recorder(db.engine, flush_s=0.05, max_pending=100, retry_max_s=1.0)
    yield recorder
    recorder.stop(1)


def _queued(app, name: str = "demo.noop") -> str:
    task_id = str(uuid.uuid4())
    with app.app_context():
        records.create(task_id, name, [], {}, trigger="web")
    return task_id


def _timeline(run) -> list[tuple[str, int]]:
    return [(e.state, e.attempt) for e in run.events]


def test_a_short_run_on_a_real_worker_has_its_whole_timeline(app, worker):
    with app.app_context():
        task_id = enqueue("demo.noop", [1], {"a": 2}, trigger="web")
    run = wait_for_state(app, task_id, "succeeded")
    assert _timeline(run) == [("queued", 0), ("running", 1), ("succeeded", 1)]
    assert run.queued_at <= run.started_at <= run.succeeded_at
    assert run.worker_host and run.worker_pid and run.attempts == 1
    assert run.result == {"args": [1], "kwargs": {"a": 2}}


def test_many_runs_are_written_in_one_batch_with_both_transitions(app, rec):
    ids = [_queued(app) for _ in range(30)]
    with app.app_context():
        for task_id in ids:
            run_id, go = rec.begin(task_id, "demo.noop", [], {}, queue=None, host="h", pid=1,
                                   now=utcnow())
            assert go and run_id is not None
            rec.finish(task_id, RunState.SUCCEEDED, utcnow(), result='{"ok": true}')
        assert rec.flush(10)
    for task_id in ids:
        run = load_run(app, task_id)
        assert run.state == "succeeded" and run.result == {"ok": True}
        assert _timeline(run) == [("queued", 0), ("running", 1), ("succeeded", 1)]
        assert run.started_at <= run.succeeded_at


def test_a_run_already_final_is_not_started_again(app, rec):
    task_id = _queued(app)
    with app.app_context():
        records.revoke(task_id, "cancelled by a test")
        _, go = rec.begin(task_id, "demo.noop", [], {}, queue=None, host="h", pid=1,
                          now=utcnow())
    assert go is False


def test_a_record_the_database_refuses_does_not_hold_back_the_others(app, rec, caplog):
    bad, good = _queued(app), _queued(app)
    with app.app_context():
        for task_id in (bad, good):
            rec.begin(task_id, "demo.noop", [], {}, queue=None, host="h", pid=1,
                      now=utcnow())
        rec.progress(bad, 10 ** 20, 10 ** 21, "beyond bigint", utcnow())
        rec.finish(bad, RunState.SUCCEEDED, utcnow(), result='{"big": 1}')
        rec.finish(good, RunState.SUCCEEDED, utcnow(), result='{"ok": 1}')
        assert rec.flush(10)
    kept = load_run(app, bad)
    assert kept.state == "succeeded" and kept.result == {"__unstorable__": True}
    assert kept.progress_current is None
    assert load_run(app, good).result == {"ok": 1}
    assert "refused by the database" in caplog.text


def test_an_outcome_waits_for_the_write_when_asked(app, rec):
    task_id = _queued(app)
    with app.app_context():
        rec.begin(task_id, "demo.noop", [], {}, queue=None, host="h", pid=1,
                  now=utcnow())
        assert rec.finish(task_id, RunState.FAILED, utcnow(), error_type="E",
                          error_message="boom", message="E: boom", wait=True)
    run = load_run(app, task_id)  # written before finish() returned
    assert run.state == "failed" and run.error_message == "boom"


def test_runs_merged_before_a_write_leave_no_bytes_counted(app, services):
    """Each short run's start, progress and outcome merge into one pending report; the bound
    on buffered bytes must count that report once, or it fills with nothing pending and
    every later run waits for ever. 600 runs of ~650 bytes would pass the 64 KB bound many
    times over if merges were counted twice."""
    with app.app_context():
        recorder = Recorder(db.engine, flush_s=3600, max_pending=1000, retry_max_s=1.0,
                            max_bytes=64 * 1024)
    try:
        ids = [_queued(app) for _ in range(600)]
        with app.app_context():
            for n, task_id in enumerate(ids):
                started = threading.Thread(target=recorder.begin, daemon=True, kwargs=dict(
                    task_id=task_id, task_name="demo.noop", args=[], kwargs={}, queue=None,
                    host="h", pid=1, now=utcnow()))
                started.start()
                started.join(10)
                assert not started.is_alive(), f"run {n} waits for room in an empty buffer"
                recorder.progress(task_id, 1, 2, "half way " * 20, utcnow())
                recorder.finish(task_id, RunState.SUCCEEDED, utcnow(),
                                result='{"ok": true}')
                if n % 50 == 49:
                    assert recorder.flush(10)
            assert recorder.flush(10)
        assert recorder._bytes == 0
        assert load_run(app, ids[-1]).state == "succeeded"
    finally:
        recorder.stop(1)
