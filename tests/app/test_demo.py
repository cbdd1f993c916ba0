"""The seed's long-task demo: POST /longtask and GET /status/<task_id>, read from Postgres."""
from __future__ import annotations

import re
import time

import pytest
from celery.utils import uuid

from app import create_app
from models import RunState
from tests.factories import make_run
from tests.helpers import (
    csrf_token, load_run, test_settings, wait_for, wait_for_state,
)


def start_long_task(client):
    return client.post("/longtask", headers={"X-CSRFToken": csrf_token(client)})


def test_index_page_serves_its_own_script(client):
    page = client.get("/").get_data(as_text=True)
    assert "Start Long Calculation" in page
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "/static/demo.js" in links
    # Everything the page loads comes from the app itself: it works offline.
    assert all(link.startswith("/") and not link.startswith("//") for link in links)
    for link in links:
        assert client.get(link).status_code == 200


def test_longtask_answers_202_and_status_reaches_success(app, client, worker):
    resp = start_long_task(client)
    assert resp.status_code == 202
    assert resp.get_json() == {}
    location = resp.headers["Location"]
    assert location.startswith("/status/")
    task_id = location.rsplit("/", 1)[1]
    assert load_run(app, task_id).trigger == "web"

    seen = []

    def done():
        body = client.get(location).get_json()
        seen.append(body["state"])
        return body if body["state"] == "SUCCESS" else None

    body = wait_for(done, timeout=30, interval=0.05, message="SUCCESS")
    assert body == {"state": "SUCCESS", "current": 100, "total": 100,
                    "status": "Task completed!", "result": 42}
    assert "PROGRESS" in seen
    assert set(seen) <= {"PENDING", "PROGRESS", "SUCCESS"}


def test_longtask_without_csrf_token_answers_as_the_seed_does(client, services):
    # The seed's jQuery client and `curl -X POST /longtask` send no token.
    resp = client.post("/longtask")
    assert resp.status_code == 202 and resp.get_json() == {}
    assert resp.headers["Location"].startswith("/status/")


def test_the_email_form_still_needs_its_csrf_token(client, services):
    resp = client.post("/", data={"email": "a@example.com", "submit": "Send"},
                       headers={"Accept": "application/json"})
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "csrf_failed"


def test_status_of_unknown_task_is_pending(client):
    assert client.get(f"/status/{uuid()}").get_json() == {
        "state": "PENDING", "current": 0, "total": 1, "status": "Pending..."}
    # Any text is answered, never a 500.
    assert client.get("/status/" + "z" * 5000).status_code == 200


@pytest.mark.parametrize(
    "state, expected",
    [
        (RunState.QUEUED, {"state": "PENDING", "current": 0, "total": 1, "status": "Pending..."}),
        (RunState.RUNNING, {"state": "PROGRESS", "current": 3, "total": 7, "status": "Loading bit..."}),
        (RunState.RETRYING, {"state": "RETRY", "current": 3, "total": 7, "status": "Loading bit..."}),
        (RunState.SUCCEEDED, {"state": "SUCCESS", "current": 1, "total": 1,
                              "status": "Task completed!", "result": {"some": "value"}}),
        (RunState.FAILED, {"state": "FAILURE", "current": 1, "total": 1, "status": "it broke"}),
        (RunState.REVOKED, {"state": "REVOKED", "current": 3, "total": 7, "status": "Revoked"}),
        (RunState.LOST, {"state": "LOST", "current": 3, "total": 7, "status": "Lost"}),
        (RunState.SKIPPED, {"state": "SKIPPED", "current": 3, "total": 7, "status": "Skipped"}),
    ],
)
def test_status_shape_for_every_state(app, client, state, expected):
    task_id = uuid()  # a run of demo.long_task that reached `state`, with its progress
    make_run(app, "demo.long_task", state=state.value, task_id=task_id, error="it broke",
             result={"some": "value"},
             progress=None if state is RunState.QUEUED else (3, 7, "Loading bit..."))
    resp = client.get(f"/status/{task_id}")
    assert resp.status_code == 200
    assert resp.get_json() == expected


def test_status_of_a_real_failure(app, client, worker):
    with app.app_context():
        from scheduler.enqueue import enqueue

        task_id = enqueue("demo.fail", ["kaput"], trigger="web")
    wait_for_state(app, task_id, "failed")
    assert client.get(f"/status/{task_id}").get_json() == {
        "state": "FAILURE", "current": 1, "total": 1, "status": "kaput"}


def test_status_survives_a_redis_flush(app, client, worker, services):
    location = start_long_task(client).headers["Location"]
    wait_for(lambda: client.get(location).get_json()["state"] == "SUCCESS", timeout=30)
    services.redis().flushall()
    assert client.get(location).get_json()["result"] == 42
    # And the worker still takes new work after the flush.
    location = start_long_task(client).headers["Location"]
    wait_for(lambda: client.get(location).get_json()["state"] == "SUCCESS", timeout=30)


def test_broker_down_answers_503_fast_and_records_why(services):
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = create_app(test_settings(services, REDIS_URL=f"redis://127.0.0.1:{port}/0"))
    client = down.test_client()
    token = csrf_token(client)
    started = time.monotonic()
    resp = client.post("/longtask", headers={"X-CSRFToken": token})
    elapsed = time.monotonic() - started
    assert resp.status_code == 503
    assert resp.get_json()["error"] == "broker_unavailable"
    assert elapsed < 5.0, f"took {elapsed:.1f} s"
    with down.app_context():
        from models import JobRun, db

        run = db.session.query(JobRun).one()
        assert run.state == "failed"
        assert run.error_type == "BrokerUnavailable"
        assert "could not publish to the broker" in run.error_message
        assert [e.state for e in run.events] == ["queued", "failed"]
