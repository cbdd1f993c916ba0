"""Celery's own tools see our workers and tasks: `celery inspect`, and task events (what
`celery events` and Flower read)."""
from __future__ import annotations

import json
import os
import subprocess
import threading

from flask import Flask

from scheduler.enqueue import enqueue
from tests.helpers import BIN, PROJECT, SHARED_SETTINGS, wait_for, wait_for_state


def celery_cli(services, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DATABASE_URL=services.database_url, REDIS_URL=services.redis_url,
               **{k: str(v) for k, v in SHARED_SETTINGS.items()})
    return subprocess.run([str(BIN / "celery"), "-A", "worker", *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_inspect_registered_lists_our_tasks(services, worker):
    out = celery_cli(services, "inspect", "registered", "--json", "--timeout", "5",
                     "--destination", worker.nodename())
    assert out.returncode == 0, out.stderr
    replies = json.loads(out.stdout.strip().splitlines()[-1])
    names = {line.split()[0] for line in replies[worker.nodename()]}
    assert {"demo.noop", "demo.long_task", "mail.send"} <= names

    out = celery_cli(services, "inspect", "active", "--json", "--timeout", "5",
                     "--destination", worker.nodename())
    assert out.returncode == 0, out.stderr
    assert worker.nodename() in json.loads(out.stdout.strip().splitlines()[-1])


def test_task_events_are_sent(app: Flask, worker):
    celery_app = app.extensions["celery"]
    events: list[dict] = []
    lock = threading.Lock()

    def on_event(event: dict) -> None:
        with lock:
            events.append(event)

    with celery_app.connection_for_read() as conn:
        receiver = celery_app.events.Receiver(conn, handlers={"*": on_event})
        thread = threading.Thread(target=receiver.capture, kwargs={"limit": None},
                                  daemon=True)
        thread.start()
        try:
            # The worker's heartbeat (every 2 s) shows that the receiver's queue is bound.
            wait_for(lambda: any(e["type"] == "worker-heartbeat" for e in events), timeout=15,
                     message="a worker heartbeat event")
            with app.app_context():
                task_id = enqueue("demo.noop", [7], trigger="cli")
            wait_for_state(app, task_id, "succeeded")

            def seen() -> set[str]:
                with lock:
                    return {e["type"] for e in events if e.get("uuid") == task_id}

            wait_for(lambda: {"task-sent", "task-received", "task-started",
                              "task-succeeded"} <= seen(), timeout=15,
                     message=f"the task events of {task_id}")
        finally:
            receiver.should_stop = True
            thread.join(timeout=10)
    received = next(e for e in events if e.get("uuid") == task_id
                    and e["type"] == "task-received")
    assert received["name"] == "demo.noop" and received["hostname"] == worker.nodename()
