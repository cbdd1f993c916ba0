"""Hostile input on the wire: only JSON is accepted, so a pickle message runs no code."""
from __future__ import annotations

import os
import pickle

from celery.utils import uuid
from kombu import Connection, Exchange, Producer

from scheduler.enqueue import enqueue
from tests.conftest import load_run, wait_for_state


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_pickle_message_is_rejected_and_nothing_in_it_runs(app, worker, services, tmp_path):
    marker = tmp_path / "pwned"
    task_id = uuid()
    body = ((_Evil(str(marker)),), {}, {"callbacks": None, "errbacks": None, "chain": None,
                                        "chord": None})
    headers = {"lang": "py", "task": "demo.noop", "id": task_id, "root_id": task_id,
               "parent_id": None, "group": None, "retries": 0, "eta": None, "expires": None,
               "argsrepr": "(...)", "kwargsrepr": "{}", "origin": "attacker"}
    with Connection(services.redis_url) as conn:
        # The attacker's own bytes, labelled as pickle: nothing of ours serializes them.
        Producer(conn).publish(pickle.dumps(body), exchange=Exchange("celery", type="direct"),
                               routing_key="celery", headers=headers, declare=[],
                               content_type="application/x-python-serialize",
                               content_encoding="binary")
    # A JSON run published after it proves the worker has consumed the pickle one by then.
    with app.app_context():
        after = enqueue("demo.noop", ["after"], trigger="web")
    wait_for_state(app, after, "succeeded")
    assert not marker.exists()
    assert load_run(app, task_id) is None
