"""Job records for every run, however it was published (real worker, real Postgres and Redis)."""
from __future__ import annotations

import os
import subprocess
import time

from celery.utils import uuid

from scheduler.enqueue import enqueue
from tests.helpers import BIN, PROJECT, load_run, wait_for, wait_for_state


def states_of(run) -> list[str]:
    return [e.state for e in run.events]


def test_enqueue_commits_a_queued_row_before_the_message(app, services):
    # A queue no worker consumes: the run stays queued, and its row is there.
    with app.test_request_context():
        task_id = enqueue("demo.noop", [1], {"a": 2}, trigger="web", queue="nobody-listens")
    run = load_run(app, task_id)
    assert run.state == "queued"
    assert run.trigger == "web"
    assert run.queue == "nobody-listens"
    assert run.args == [1] and run.kwargs == {"a": 2}
    assert run.queued_at is not None and run.started_at is None
    assert states_of(run) == ["queued"]
    assert services.redis().llen("nobody-listens") == 1


def test_the_queue_chosen_by_task_routes_or_a_routing_key_is_recorded(services, smtp):
    """The recorded queue is where the message really is (the recovery of lost messages
    searches it), also when Celery's router chose it."""
    from app import create_app
    from tests.helpers import test_settings

    from kombu import Exchange, Queue

    routed = create_app(test_settings(services, CELERY={
        "task_routes": {"demo.noop": {"queue": "routed-by-config"}},
        "task_queues": [Queue("celery"), Queue("routed-by-config"),
                        Queue("keyed", Exchange("celery"), routing_key="by-routing-key")]}))
    with routed.test_request_context():
        by_route = enqueue("demo.noop", [], trigger="web")
        by_key = routed.extensions["celery"].tasks["demo.fail"].apply_async(
            routing_key="by-routing-key").id
        default = enqueue("demo.fail", [], trigger="web")
    assert load_run(routed, by_route).queue == "routed-by-config"
    assert services.redis().llen("routed-by-config") == 1
    # The queue bound to that key on the default exchange (the broker delivers it there once
    # a consumer of "keyed" declared the binding).
    assert load_run(routed, by_key).queue == "keyed"
    assert load_run(routed, default).queue == "celery"


def test_enqueued_run_is_recorded_to_success(app, worker):
    with app.app_context():
        task_id = enqueue("demo.noop", [1, "two"], {"three": 3}, trigger="cli")
    run = wait_for_state(app, task_id, "succeeded")
    assert run.result == {"args": [1, "two"], "kwargs": {"three": 3}}
    assert run.task_name == "demo.noop"
    assert run.trigger == "cli"
    assert run.attempts == 1
    assert run.worker_host == worker.nodename()
    assert run.worker_pid and run.worker_pid != worker.proc.pid  # a forked child ran it
    assert run.queued_at <= run.started_at <= run.succeeded_at
    assert states_of(run) == ["queued", "running", "succeeded"]


def test_plain_delay_gets_a_row_at_publish(app, worker):
    noop = app.extensions["celery"].tasks["demo.noop"]
    with app.app_context():
        result = noop.delay(7)
    run = load_run(app, result.id)
    assert run is not None and run.trigger == "external"
    run = wait_for_state(app, result.id, "succeeded")
    assert run.result == {"args": [7], "kwargs": {}}


def test_send_task_gets_a_row_when_the_worker_starts_it(app, worker):
    # send_task bypasses our apply_async: the worker creates the row (upsert on task_id).
    result = app.extensions["celery"].send_task("demo.noop", args=["x"])
    run = wait_for_state(app, result.id, "succeeded")
    assert run.trigger == "external"
    assert run.args == ["x"]
    assert states_of(run) == ["running", "succeeded"]


def test_celery_call_from_a_shell_is_recorded(app, worker, services):
    out = subprocess.run(
        [str(BIN / "celery"), "-A", "worker", "call", "demo.noop", "--args", '["shell"]'],
        cwd=PROJECT, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, DATABASE_URL=services.database_url, REDIS_URL=services.redis_url),
    )
    assert out.returncode == 0, out.stderr
    task_id = out.stdout.strip().splitlines()[-1]
    run = wait_for_state(app, task_id, "succeeded")
    assert run.result == {"args": ["shell"], "kwargs": {}}


def test_failure_records_error_and_traceback(app, worker):
    with app.app_context():
        task_id = enqueue("demo.fail", ["boom <b>"], trigger="web")
    run = wait_for_state(app, task_id, "failed")
    assert run.error_type == "DemoFailure"
    assert run.error_message == "boom <b>"
    assert "Traceback" in run.traceback and "DemoFailure: boom <b>" in run.traceback
    assert run.failed_at is not None
    assert states_of(run) == ["queued", "running", "failed"]


def test_retry_keeps_one_row_and_adds_events(app, worker):
    with app.app_context():
        task_id = enqueue("demo.fail", ["flaky"], {"retries": 2, "countdown": 0.1}, trigger="web")
    run = wait_for_state(app, task_id, "failed")
    assert run.attempts == 3
    assert states_of(run) == [
        "queued", "running", "retrying", "running", "retrying", "running", "failed",
    ]
    assert [e.attempt for e in run.events] == [0, 1, 1, 2, 2, 3, 3]
    assert run.retrying_at is not None
    retry_event = run.events[2]
    assert "DemoFailure: flaky" in retry_event.message and "next attempt" in retry_event.message


def test_big_results_and_arguments_are_capped(app, worker):
    big = "x" * (200 * 1024)
    with app.app_context():
        task_id = enqueue("demo.noop", [big], trigger="web")
    run = wait_for_state(app, task_id, "succeeded")
    for doc in (run.result, run.args):
        assert doc["__truncated__"] is True
        assert doc["bytes"] > 200 * 1024
        assert len(doc["preview"]) <= 4096


def test_long_task_writes_progress(app, worker):
    with app.app_context():
        task_id = enqueue("demo.long_task", [], {"steps": 10}, trigger="web")
    run = wait_for_state(app, task_id, "succeeded")
    assert run.progress_current == 10 and run.progress_total == 10
    assert run.progress_message == "Task completed!"
    assert run.result == {"current": 100, "total": 100, "status": "Task completed!", "result": 42}


def test_a_cancelled_run_never_runs(app, worker, services):
    from scheduler import records

    task_id = uuid()
    with app.app_context():
        records.create(task_id, "demo.noop", ["late"], {}, trigger="web")
        records.revoke(task_id, "cancelled by test")
        app.extensions["celery"].send_task("demo.noop", args=["late"], task_id=task_id)
        # A later run proves the worker has consumed the cancelled message by then.
        marker = enqueue("demo.noop", [], trigger="web")
    wait_for_state(app, marker, "succeeded")
    wait_for(lambda: services.redis().llen("celery") == 0, message="the queue to drain")
    time.sleep(0.5)  # the other worker child may still be handling the cancelled message
    run = load_run(app, task_id)
    assert run.state == "revoked"
    assert run.result is None and run.started_at is None
    assert states_of(run) == ["queued", "revoked"]
