"""The sweep of lost runs, with real worker processes killed by kill -9: a run is lost when
its process stops writing heartbeats."""
from __future__ import annotations

import os
import signal
import socket
import time

import psutil

from app import create_app
from scheduler.enqueue import enqueue
from scheduler.upkeep.sweep import sweep_lost_runs
from tests.helpers import CeleryProcess, load_run, test_settings, wait_for, wait_for_state


def test_a_run_whose_worker_child_was_killed_becomes_lost(app, worker, services, tmp_path):
    victim = CeleryProcess(services, tmp_path / "victim.log", name="victim", queues="victim")
    victim.start(app.extensions["celery"])
    try:
        with app.app_context():
            task_id = enqueue("demo.long_task", [], {"steps": 400}, trigger="web", queue="victim")
        run = wait_for_state(app, task_id, "running")
        wait_for(lambda: (load_run(app, task_id).progress_current or 0) > 0, message="progress")
        os.kill(run.worker_pid, signal.SIGKILL)  # the pool child, in the middle of the run
        wait_for(lambda: not psutil.pid_exists(run.worker_pid)
                 or psutil.Process(run.worker_pid).status() == psutil.STATUS_ZOMBIE,
                 message="the child to die")
        assert load_run(app, task_id).state == "running"  # what Celery alone leaves behind
        with app.app_context():
            # Once the child's heartbeat is 5 s old, the sweep finds the run.
            swept = wait_for(lambda: sweep_lost_runs(app.extensions["celery"], older_than_s=5),
                             timeout=30, interval=0.5, message="the sweep to find the run")
            assert swept == [run.id]
            assert sweep_lost_runs(app.extensions["celery"], older_than_s=5) == []
        lost = load_run(app, task_id)
        assert lost.state == "lost" and lost.lost_at is not None
        assert lost.events[-1].state == "lost"
        assert lost.events[-1].message == (
            f"lost: worker process {victim.nodename()} pid {run.worker_pid} not seen for 5 s")
    finally:
        victim.stop()


def test_a_run_that_is_really_running_is_not_lost(app, worker):
    with app.app_context():
        task_id = enqueue("demo.long_task", [], {"steps": 200}, trigger="web")
    wait_for_state(app, task_id, "running")
    with app.app_context():
        for _ in range(4):  # across several heartbeats
            assert sweep_lost_runs(app.extensions["celery"], older_than_s=5) == []
            time.sleep(1)
    assert load_run(app, task_id).state in ("running", "succeeded")
    wait_for_state(app, task_id, "succeeded", timeout=60)


def test_nothing_is_marked_lost_when_the_broker_does_not_answer(app, worker, services):
    with app.app_context():
        task_id = enqueue("demo.long_task", [], {"steps": 100}, trigger="web")
    wait_for_state(app, task_id, "running")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = create_app(test_settings(services, REDIS_URL=f"redis://127.0.0.1:{port}/0"))
    with down.app_context():
        # Liveness is read from the heartbeats in PostgreSQL: the broker is not asked.
        assert sweep_lost_runs(down.extensions["celery"], older_than_s=5) == []
    assert load_run(app, task_id).state == "running"
    wait_for_state(app, task_id, "succeeded", timeout=60)


def test_jobs_sweep_command(app, worker):
    out = app.test_cli_runner().invoke(args=["jobs", "sweep", "--older-than", "5"])
    assert out.exit_code == 0 and out.output.startswith("marked 0 run(s) lost")
    # Shorter than two heartbeats would call every live process gone: refused, with why.
    out = app.test_cli_runner().invoke(args=["jobs", "sweep", "--older-than", "0"])
    assert out.exit_code == 2 and "more than twice HEARTBEAT_S" in out.output
