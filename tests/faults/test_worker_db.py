"""Faults of the worker and the database, with real processes: a pool child killed in the
middle of a run, and PostgreSQL restarted under load. Each ends with every run final and
nothing lost or run twice."""
from __future__ import annotations

import os
import signal
import threading
import time

import pgserver
import pytest
from sqlalchemy import create_engine, text

from app import create_app
from scheduler.enqueue import enqueue
from tests.helpers import (
    CeleryProcess, Services, reset_schema, load_run, test_settings, wait_for, wait_for_state,
)


def _events(run) -> list[tuple[str, int]]:
    return [(e.state, e.attempt) for e in run.events]


def test_a_repeatable_run_killed_in_the_middle_is_delivered_again(app, worker, services,
                                                                  tmp_path):
    victim = CeleryProcess(services, tmp_path / "victim.log", name="victim", queues="repeat")
    victim.start(app.extensions["celery"])
    try:
        with app.app_context():
            task_id = enqueue("demo.sleep", [], {"seconds": 3, "step_s": 0.05}, trigger="web",
                              queue="repeat")
        run = wait_for_state(app, task_id, "running")
        wait_for(lambda: (load_run(app, task_id).progress_current or 0) > 5, message="progress")
        os.kill(run.worker_pid, signal.SIGKILL)  # the pool child, mid-run
        done = wait_for_state(app, task_id, "succeeded", timeout=60)
        # The broker delivered it again (acks_late + reject_on_worker_lost) to a new process.
        assert done.attempts == 2
        assert done.worker_pid != run.worker_pid
        assert _events(done) == [("queued", 0), ("running", 1), ("running", 2),
                                 ("succeeded", 2)]
        assert done.result == {"slept_s": 3.0}
    finally:
        victim.stop()


@pytest.fixture
def private_postgres(tmp_path):
    """A PostgreSQL of this test's own, so that it can be stopped and started again."""
    server = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    url = server.get_uri()
    reset_schema(url)
    yield server, url
    server.cleanup()


def _restart(server, down_s: float) -> None:
    pgserver.pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata,
                    user=server.system_user)
    time.sleep(down_s)
    server.ensure_postgres_running()


def test_postgres_restarted_under_load_loses_no_record(services, private_postgres, tmp_path):
    server, url = private_postgres
    app = create_app(test_settings(services, DATABASE_URL=url))
    celery_app = app.extensions["celery"]
    proc = CeleryProcess(Services(url, services.redis_url), tmp_path / "worker.log",
                         name="pgdown", queues="pgdown", RECORD_RETRY_MAX_S="1")
    proc.start(celery_app)
    try:
        ids = []
        with app.app_context():
            for i in range(6):  # long runs that go on through the outage, writing progress
                ids.append(enqueue("demo.long_task", [], {"steps": 60}, trigger="web",
                                   queue="pgdown"))
                ids += [enqueue("demo.noop", [i, n], {}, trigger="web", queue="pgdown")
                        for n in range(40)]
        # Started (or, on a loaded machine where enqueueing 246 runs outlasts its 3 s, done).
        wait_for(lambda: load_run(app, ids[0]).state in ("running", "succeeded"),
                 message="the first run")

        outage = threading.Thread(target=_restart, args=(server, 6.0))
        outage.start()
        time.sleep(1.0)
        # While the database is down: a page answers 503 with a message, quickly, and a
        # plain-Celery publisher (no row written at publish) still gets its runs done.
        began = time.monotonic()
        page = app.test_client().get("/status/" + ids[0])
        assert page.status_code == 503 and time.monotonic() - began < 6
        assert "database" in page.get_data(as_text=True).lower()
        external = [celery_app.send_task("demo.noop", [n], queue="pgdown").id
                    for n in range(5)]
        outage.join()

        everything = ids + external
        engine = create_engine(url)

        def all_final() -> bool:
            with engine.connect() as conn:
                return conn.execute(text(
                    "SELECT count(*) FROM job_runs WHERE task_id = ANY(:ids) "
                    "AND state = 'succeeded'"), {"ids": everything}).scalar() == len(everything)

        wait_for(all_final, timeout=120, interval=0.5, message="every run to succeed")
        with engine.connect() as conn:
            # Each run ran once, and its timeline says so: one running, one succeeded.
            counts = conn.execute(text(
                "SELECT r.task_id, r.attempts, "
                "count(*) FILTER (WHERE e.state = 'running') AS running, "
                "count(*) FILTER (WHERE e.state = 'succeeded') AS succeeded "
                "FROM job_runs r JOIN job_events e ON e.run_id = r.id "
                "WHERE r.task_id = ANY(:ids) GROUP BY r.task_id, r.attempts"),
                {"ids": everything}).all()
            long_runs = conn.execute(text(
                "SELECT progress_current, progress_total FROM job_runs "
                "WHERE task_name = 'demo.long_task'")).all()
        engine.dispose()
        assert len(counts) == len(everything)
        assert {(c.attempts, c.running, c.succeeded) for c in counts} == {(1, 1, 1)}
        assert long_runs and all(r.progress_current == r.progress_total == 60
                                 for r in long_runs)
        assert proc.proc.poll() is None  # the worker lived through it
        assert "run records written again after a database outage" in proc.log_tail(200_000)
    finally:
        proc.stop()
        app.extensions["celery"].close()
