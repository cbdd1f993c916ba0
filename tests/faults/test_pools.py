"""Every worker pool against the sweep of lost runs, with real worker processes: a long run is
never marked lost while it runs, whatever the pool (a solo worker cannot answer a broadcast
while it runs a task); a run whose process is killed is lost, or run again when its task is
safe to repeat, within LOST_AFTER_S and one sweep."""
from __future__ import annotations

import os
import signal
import time

import pytest
from sqlalchemy import text

from models import JobRun, db
from scheduler.enqueue import enqueue
from scheduler.history import actions
from scheduler.upkeep.recovery import requeue_lost_messages
from scheduler.upkeep.sweep import sweep_lost_runs
from tests.helpers import DEMO_STEP_S, CeleryProcess, load_run, wait_for, wait_for_state

LOST_AFTER_S = 10.0
#: The run of the issue: 90 s, many times LOST_AFTER_S.
LONG_RUN_S = 90.0
POOLS = ("prefork", "threads", "solo", "gevent")


class PoolWorker(CeleryProcess):
    """A worker with the given pool, consuming its own queue."""

    def __init__(self, *args, pool: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.pool = pool

    def argv(self) -> list[str]:
        argv = super().argv()
        at = argv.index("--pool")
        argv[at + 1] = self.pool
        if self.pool == "solo":
            at = argv.index("--concurrency")
            del argv[at:at + 2]
        return argv


@pytest.fixture
def pool_workers(app, services, smtp, tmp_path):
    started: dict[str, PoolWorker] = {}

    def start(pool: str) -> PoolWorker:
        worker = PoolWorker(services, tmp_path / f"{pool}.log", name=f"pool-{pool}", smtp=smtp,
                            queues=f"pool-{pool}", pool=pool, LOST_AFTER_S=str(LOST_AFTER_S))
        started[pool] = worker.start(app.extensions["celery"])
        return worker

    yield start
    for worker in started.values():
        worker.stop()


def _sweep(app) -> list[int]:
    with app.app_context():
        lost = sweep_lost_runs(app.extensions["celery"], LOST_AFTER_S)
        db.session.remove()
    return lost


def _process_of(app, task_id: str):
    with app.app_context():
        return db.session.execute(text(
            "SELECT p.pid, p.kind, p.pool FROM job_runs r JOIN worker_processes p "
            "ON p.id = r.worker_process_id WHERE r.task_id = :t"), {"t": task_id}).first()


def test_a_long_run_is_never_marked_lost_on_any_pool(app, pool_workers):
    for pool in POOLS:
        pool_workers(pool)
    steps = int(LONG_RUN_S / DEMO_STEP_S)
    with app.app_context():
        runs = {pool: enqueue("demo.long_task", [], {"steps": steps}, trigger="web",
                              queue=f"pool-{pool}") for pool in POOLS}
    for task_id in runs.values():
        wait_for_state(app, task_id, "running")
    # Each run's process registered itself, with its pool.
    for pool, task_id in runs.items():
        process = _process_of(app, task_id)
        assert process is not None and process.pool == pool, (pool, process)
        assert process.kind == ("child" if pool == "prefork" else "main")
    # A stop on a pool that cannot end a started task says so and records nothing.
    for pool in ("threads", "solo"):
        with app.app_context():
            run = db.session.scalar(db.select(JobRun).where(JobRun.task_id == runs[pool]))
            with pytest.raises(actions.RunActionError, match=f"the {pool} pool"):
                actions.stop(run, by="test")
        assert load_run(app, runs[pool]).state == "running"
    # Sweep as often as a busy deployment would, for the whole run.
    swept_while_running = 0
    deadline = time.monotonic() + LONG_RUN_S + 60
    while time.monotonic() < deadline:
        assert _sweep(app) == []
        states = {pool: load_run(app, task_id).state for pool, task_id in runs.items()}
        assert "lost" not in states.values(), states
        if all(s == "succeeded" for s in states.values()):
            break
        swept_while_running += 1
        time.sleep(3)
    for pool, task_id in runs.items():
        run = load_run(app, task_id)
        assert run.state == "succeeded", (pool, run.state)
        assert [e.state for e in run.events].count("lost") == 0
        assert (run.succeeded_at - run.started_at).total_seconds() >= LONG_RUN_S * 0.9
    assert swept_while_running >= LONG_RUN_S / 3 - 5


def test_a_run_whose_process_is_killed_is_lost_within_lost_after_and_one_sweep(
        app, pool_workers):
    """On every pool at once: kill -9 of the process that runs the run (the pool child, or
    the worker itself for solo, threads and gevent)."""
    workers = {pool: pool_workers(pool) for pool in POOLS}
    with app.app_context():
        runs = {pool: enqueue("demo.long_task", [], {"steps": 2000}, trigger="web",
                              queue=f"pool-{pool}") for pool in POOLS}
    processes = {}
    for pool, task_id in runs.items():
        wait_for_state(app, task_id, "running")
        processes[pool] = wait_for(lambda: _process_of(app, task_id),
                                   message=f"the {pool} run's process")
    killed_at = time.monotonic()
    for pool, process in processes.items():
        os.kill(process.pid, signal.SIGKILL)
        if process.kind == "main":
            workers[pool].proc.wait(timeout=30)
    lost: set[int] = set()

    def all_lost() -> bool:
        lost.update(_sweep(app))
        return len(lost) == len(runs)

    wait_for(all_lost, timeout=LOST_AFTER_S + 30, interval=1.0,
             message="the sweep to mark every run lost")
    # Not before its time: the last heartbeat came at most HEARTBEAT_S (2 s) before the kill.
    assert time.monotonic() - killed_at >= LOST_AFTER_S - 3
    for pool, task_id in runs.items():
        run = load_run(app, task_id)
        assert run.id in lost and run.state == "lost", (pool, run.state)
        assert f"pid {processes[pool].pid} not seen for" in run.events[-1].message


def test_a_repeatable_run_whose_worker_died_runs_again(app, services, smtp, pool_workers,
                                                       tmp_path):
    """kill -9 of a worker's main process (its pool children die with it) while it runs an
    acks_late task: the message is left in kombu's unacked hash, which Redis gives back only
    after an hour. The run must not end lost: the sweep queues it again, the recovery proves
    its message is held by nobody alive and publishes it once, and another worker runs it."""
    doomed = pool_workers("prefork")
    with app.app_context():
        task_id = enqueue("demo.sleep", [], {"seconds": 600, "step_s": 0.5}, trigger="web",
                          queue="pool-prefork")
    wait_for_state(app, task_id, "running")
    # The whole worker at once, as when its host goes: the main process and its pool.
    children = _children_of(doomed.proc.pid)
    doomed.kill()
    for child in children:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    rescue = PoolWorker(services, tmp_path / "rescue.log", name="rescue", smtp=smtp,
                        queues="pool-prefork", pool="prefork", LOST_AFTER_S=str(LOST_AFTER_S))
    rescue.start(app.extensions["celery"])
    try:
        def swept_and_recovered():
            _sweep(app)
            with app.app_context():
                requeue_lost_messages(app.extensions["celery"], older_than_s=3600,
                                      confirm_s=1.0)
                db.session.remove()
            run = load_run(app, task_id)
            return run if run.attempts >= 2 and run.state == "running" else None

        run = wait_for(swept_and_recovered, timeout=LOST_AFTER_S + 60, interval=1.0,
                       message="the run to start again on the other worker")
        assert "lost" not in [e.state for e in run.events]
        assert run.worker_host and run.worker_pid not in children
        states = [e.state for e in run.events]
        assert states.count("running") == 2 and "queued" in states[2:], states
        time.sleep(3)  # published once: no third start
        assert [e.state for e in load_run(app, task_id).events].count("running") == 2
    finally:
        rescue.stop()


def _children_of(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
