"""Broker faults with real processes: a worker killed with -9 holding prefetched and
ETA messages, and Redis stopped without saving and started again empty. After each, every run
ends final, none runs twice, every e-mail is delivered once (scheduler.recovery)."""
from __future__ import annotations

import json
import os
import signal
import socket
import time

import redis
from sqlalchemy import text

from app import create_app
from models import db
from scheduler.beat import schedules
from scheduler.enqueue import enqueue
from scheduler.mail.outbox import send_email
from scheduler.upkeep.recovery import EPOCH_KEY, requeue_lost_messages
from tests.helpers import (RECOVERY_SETTINGS, CeleryProcess, PrivateRedis, Services, csrf_token,
                           load_run, test_settings, wait_for, wait_for_state)

_FINAL = "('succeeded', 'failed', 'revoked', 'lost', 'skipped')"


def _held(celery_app, node: str, task_ids: list[str]) -> dict[str, str]:
    """{task_id: reserved|active|scheduled} of the given runs on one worker."""
    inspect = celery_app.control.inspect(destination=[node], timeout=1.0, limit=1)
    found = {tid: state for tid, (state, _) in
             ((inspect.query_task(*task_ids) or {}).get(node) or {}).items()}
    for entry in (inspect.scheduled() or {}).get(node) or ():
        if entry["request"]["id"] in task_ids:  # a retry: not always found by query_task
            found[entry["request"]["id"]] = "scheduled"
    return found


def _unacked_ids(client: redis.Redis) -> set[str]:
    """Task ids in kombu's unacked hash (restored by kombu after visibility_timeout, 1 h)."""
    return {json.loads(value)[0]["headers"]["id"] for value in client.hvals("unacked")}


def _events(app, task_id: str) -> list[tuple[str, str | None]]:
    run = load_run(app, task_id)
    return [(e.state, e.message) for e in run.events]


def _recovered(app, task_id: str) -> bool:
    return any(state == "queued" and message and message.startswith("message lost")
               for state, message in _events(app, task_id))


def _started(app, task_id: str) -> int:
    return sum(state == "running" for state, _ in _events(app, task_id))


def test_kill_9_of_a_worker_holding_reserved_and_scheduled_work(app, services, tmp_path):
    celery_app = app.extensions["celery"]
    broker = services.redis()
    victim = CeleryProcess(services, tmp_path / "victim.log", name="victim7", queues="victim7")
    rescue = CeleryProcess(services, tmp_path / "rescue.log", name="rescue7", queues="victim7")
    recovering = create_app(test_settings(services, **{**RECOVERY_SETTINGS,
                                                       "REQUEUE_AFTER_S": 1.0}))
    victim.start(celery_app)
    try:
        with app.app_context():
            # A retry waits for its ETA in the worker (Celery's countdown), unacked.
            retried = enqueue("demo.fail", [], {"message": "boom", "retries": 1, "countdown": 3},
                              trigger="web", queue="victim7")
        wait_for(lambda: _held(celery_app, victim.nodename(), [retried]).get(retried)
                 == "scheduled", message="the retry to wait in the worker for its ETA")
        with app.app_context():
            # Concurrency 2, prefetch 1 per process: two run, two are reserved, one waits.
            running = [enqueue("demo.long_task", [], {"steps": 400}, trigger="web",
                               queue="victim7") for _ in range(2)]
            waiting = [enqueue("demo.long_task", [], {"steps": 10}, trigger="web",
                               queue="victim7") for _ in range(3)]
        for task_id in running:
            wait_for_state(app, task_id, "running")
        wait_for(lambda: list(_held(celery_app, victim.nodename(), waiting).values())
                 == ["reserved", "reserved"], message="two prefetched runs")

        os.killpg(victim.proc.pid, signal.SIGKILL)  # the main process and its children
        victim.proc.wait(timeout=30)
        # What kombu alone does: the held messages stay in its unacked hash for an hour.
        reserved = [t for t in waiting if t in _unacked_ids(broker)]
        assert len(reserved) == 2 and retried in _unacked_ids(broker)

        rescue.start(celery_app)
        runner = recovering.test_cli_runner()

        def recover() -> bool:
            # Gone for 5 s: the victim's processes; the rescue's write every HEARTBEAT_S (2 s).
            out = runner.invoke(args=["jobs", "sweep", "--older-than", "5"])
            assert out.exit_code == 0, out.output
            return all(_recovered(app, t) for t in reserved + [retried])

        wait_for(recover, timeout=60, interval=0.5, message="the held runs to be republished")
        for task_id in waiting:
            wait_for_state(app, task_id, "succeeded", timeout=60)
            assert _started(app, task_id) == 1
        assert [_recovered(app, t) for t in waiting] == [t in reserved for t in waiting]
        for task_id in running:  # killed with their worker: the sweep's finding
            assert wait_for_state(app, task_id, "lost").events[-1].message.startswith(
                "lost: worker process victim7@")
        wait_for_state(app, retried, "failed", timeout=60)
        # Nothing is left for kombu to restore later as a duplicate.
        assert not _unacked_ids(broker) & set(running + waiting + [retried])
    finally:
        rescue.stop()
        victim.stop()


def test_redis_restarted_empty_with_queued_runs_and_scheduled_emails(app, services, smtp,
                                                                   tmp_path):
    broker = PrivateRedis()
    broker.start()
    private = Services(services.database_url, broker.url)
    web = create_app(test_settings(private, MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp.port,
                                   **RECOVERY_SETTINGS))
    celery_app = web.extensions["celery"]
    env = {k: str(v) for k, v in RECOVERY_SETTINGS.items()}
    busy = CeleryProcess(private, tmp_path / "busy.log", name="busy7", queues="bk7", **env)
    mail = CeleryProcess(private, tmp_path / "mail.log", name="mail7", queues="celery",
                         smtp=smtp, **env)
    beat = CeleryProcess(private, tmp_path / "beat.log", kind="beat", **env)
    processes = [busy, mail, beat]
    try:
        with web.app_context():
            # The sweep (and its recovery) every 2 s instead of every minute.
            schedules.create("sweep-7", {"task": "runs.sweep", "every": "2s",
                                         "overlap": "allow"})
        for proc in processes:
            proc.start()
        busy.wait_ready(celery_app)
        mail.wait_ready(celery_app)
        pids = [proc.proc.pid for proc in processes]
        wait_for(lambda: broker.client().exists(EPOCH_KEY), timeout=60,
                 message="a first sweep on the broker's data")
        client = web.test_client()
        token = csrf_token(client)

        with web.app_context():
            runs = [enqueue("demo.long_task", [], {"steps": 40}, trigger="web", queue="bk7")
                    for _ in range(6)]
            addresses = [f"outage{i}@example.com" for i in range(2)]
            emails = [send_email(a, "after the outage", "sent once", countdown=6).id
                      for a in addresses]
            db.session.commit()
        wait_for(lambda: [load_run(web, t).state for t in runs].count("running") == 2,
                 message="two runs running, the others queued")

        broker.lose_everything()
        time.sleep(0.3)  # let the workers' last records in
        queued = [t for t in runs if load_run(web, t).state == "queued"]
        assert len(queued) >= 2
        started = time.monotonic()
        answer = client.post("/longtask", headers={"X-CSRFToken": token})
        assert answer.status_code == 503 and time.monotonic() - started < 5.0
        broker.start()  # empty: the queued runs' messages and the epoch key are gone
        assert not broker.client().exists(EPOCH_KEY)

        for task_id in runs:
            wait_for_state(web, task_id, "succeeded", timeout=60)
            assert _started(web, task_id) == 1
        assert all(_recovered(web, t) for t in queued)
        wait_for(lambda: all(len(smtp.to(a)) for a in addresses), timeout=30,
                 message="the e-mails")
        # Workers and beat reconnected by themselves: the same processes did all that.
        assert [proc.proc.pid for proc in processes] == pids
        assert all(proc.proc.poll() is None for proc in processes)

        with web.app_context():
            db.session.execute(text("UPDATE schedules SET enabled = false"))
            db.session.commit()

        def unfinished() -> int:
            with web.app_context():
                return db.session.scalar(text(
                    f"SELECT count(*) FROM job_runs WHERE state NOT IN {_FINAL}"))

        wait_for(lambda: unfinished() == 0, timeout=30, message="every run to be final")
        time.sleep(1.0)  # anything delivered twice would show now
        assert [len(smtp.to(a)) for a in addresses] == [1, 1]
        with web.app_context():
            assert db.session.scalar(text(
                "SELECT count(*) FROM emails WHERE id = ANY(:ids) AND state = 'sent'"),
                {"ids": emails}) == 2
            twice = db.session.execute(text(
                "SELECT r.id, r.task_name, count(*) FROM job_runs r JOIN job_events e "
                "ON e.run_id = r.id AND e.state = 'running' GROUP BY r.id, r.task_name "
                "HAVING count(*) > 1")).all()
            assert twice == []
            slots = db.session.execute(text(
                "SELECT schedule_id, scheduled_for FROM job_runs WHERE schedule_id IS NOT NULL "
                "GROUP BY 1, 2 HAVING count(*) > 1")).all()
            assert slots == []
            refused = db.session.scalar(text(
                "SELECT state FROM job_runs WHERE trigger = 'web' AND queue = 'celery'"))
            assert refused == "failed"  # the request during the outage, recorded with why
    finally:
        for proc in processes:
            proc.stop()
        broker.stop()


def test_a_waiting_message_is_left_alone_and_a_deleted_one_is_republished_once(app, services):
    """No worker consumes the queue: the message waits in its list, so the run is not lost;
    once the list is deleted, the run is republished, once."""
    celery_app = app.extensions["celery"]
    broker = services.redis()
    with app.app_context():
        task_id = enqueue("demo.noop", [], {}, trigger="web", queue="nobody7")
        assert requeue_lost_messages(celery_app, 0, 0, confirm_s=0.1) == []
        assert not _recovered(app, task_id)
        broker.delete("nobody7")
        run_id = load_run(app, task_id).id
        assert requeue_lost_messages(celery_app, 0, 0, confirm_s=0.1) == [run_id]
        assert broker.llen("nobody7") == 1
        assert requeue_lost_messages(celery_app, 0, 0, confirm_s=0.1) == []
    run = load_run(app, task_id)
    assert run.state == "queued" and _recovered(app, task_id)
    assert broker.llen("nobody7") == 1
    broker.delete("nobody7")


def test_nothing_is_republished_when_the_broker_does_not_answer(app, services):
    with app.app_context():
        task_id = enqueue("demo.noop", [], {}, trigger="web", queue="nobody7")
    services.redis().delete("nobody7")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = create_app(test_settings(services, REDIS_URL=f"redis://127.0.0.1:{port}/0"))
    with down.app_context():
        assert requeue_lost_messages(down.extensions["celery"], 0, 0, confirm_s=0.1) == []
    assert load_run(app, task_id).state == "queued" and not _recovered(app, task_id)
