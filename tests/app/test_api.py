"""The JSON API /api/v1: tokens and roles, runs, schedules, e-mails, workers and queues."""
from __future__ import annotations

import re

import pytest

from tests.helpers import load_run, make_user, wait_for_state

API = "/api/v1"


def _token(app, email: str, role: str) -> str:
    from app.tokens import create_token

    make_user(app, email, role)
    with app.app_context():
        return create_token(email, "tests")[1]


@pytest.fixture
def auth(app, services):
    """Authorization headers per role."""
    return {role: {"Authorization": f"Bearer {_token(app, f'{role}@example.com', role)}"}
            for role in ("viewer", "operator", "admin")}


def _rules(app):
    return [r for r in app.url_map.iter_rules() if r.rule.startswith(API + "/")
            and r.endpoint.startswith("api.")]


def _fill(rule) -> str:
    return re.sub(r"<[^>]+>", "1", rule.rule)


def _error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    body = resp.get_json()
    assert body["code"] == code and body["message"], body
    return body


def test_openapi_document_is_served(client):
    spec = client.get(f"{API}/openapi.json").get_json()
    assert spec["openapi"] == "3.1.0"
    assert {f"{API}/runs", f"{API}/schedules", f"{API}/emails", f"{API}/workers",
            f"{API}/queues"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_every_route_needs_a_valid_token(app, client, auth):
    rules = _rules(app)
    assert len(rules) >= 14
    for rule in rules:
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for headers in ({}, {"Authorization": "Bearer bk_nope"},
                            {"Authorization": "Basic abc"}):
                resp = client.open(_fill(rule), method=method, headers=headers)
                _error(resp, 401, "unauthorized")
                assert resp.headers["WWW-Authenticate"] == "Bearer"
    # A session cookie is not enough: the API takes tokens only.
    assert client.get(f"{API}/runs").status_code == 401


def test_revoked_token_and_inactive_user_are_refused(app, client, services):
    from app.tokens import create_token, revoke_token
    from models import User, db

    token = _token(app, "ops@example.com", "operator")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(f"{API}/runs", headers=headers).status_code == 200
    with app.app_context():
        row, other = create_token("ops@example.com")
        revoke_token(row.id)
    _error(client.get(f"{API}/runs", headers={"Authorization": f"Bearer {other}"}), 401,
           "unauthorized")
    with app.app_context():
        db.session.query(User).update({"active": False})
        db.session.commit()
    _error(client.get(f"{API}/runs", headers=headers), 401, "unauthorized")


def test_viewer_may_only_read(app, client, auth):
    posts = [(r, m) for r in _rules(app) for m in r.methods - {"GET", "HEAD", "OPTIONS"}]
    assert posts
    for rule, method in posts:
        _error(client.open(_fill(rule), method=method, headers=auth["viewer"], json={}), 403,
               "forbidden")
    assert client.get(f"{API}/runs", headers=auth["viewer"]).status_code == 200
    assert client.get(f"{API}/schedules", headers=auth["viewer"]).status_code == 200


def test_no_csrf_token_needed_and_unknown_paths_are_json(client, auth):
    resp = client.post(f"{API}/runs", headers=auth["operator"],
                       json={"task": "demo.noop", "countdown": 3600})
    assert resp.status_code == 202
    _error(client.get(f"{API}/nothing", headers=auth["viewer"]), 404, "not_found")
    _error(client.put(f"{API}/runs", headers=auth["operator"]), 405, "method_not_allowed")
    # The pages keep their own error pages.
    assert client.get("/nothing").status_code == 404
    assert "code" not in (client.get("/nothing", headers={"Accept": "application/json"})
                          .get_json() or {})


def _start(client, headers, **body):
    resp = client.post(f"{API}/runs", headers=headers, json=body)
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()


def test_start_a_run_executed_by_the_worker(app, client, auth, worker):
    run = _start(client, auth["operator"], task="demo.noop", args=[1, "two"],
                 kwargs={"three": 3})
    assert run["state"] in ("queued", "running", "succeeded") and run["trigger"] == "api"
    wait_for_state(app, run["task_id"], "succeeded")
    got = client.get(f"{API}/runs/{run['id']}", headers=auth["viewer"]).get_json()
    assert got["result"] == {"args": [1, "two"], "kwargs": {"three": 3}}
    assert [e["state"] for e in got["events"]][-1] == "succeeded"
    assert got["progress"]["final"] is True

    # Re-run: a new run of the same task, linked to this one.
    resp = client.post(f"{API}/runs/{run['id']}/rerun", headers=auth["operator"])
    assert resp.status_code == 200
    new_id = resp.get_json()["run_id"]
    new = client.get(f"{API}/runs/{new_id}", headers=auth["viewer"]).get_json()
    assert new["rerun_of_id"] == run["id"] and new["trigger"] == "rerun"
    wait_for_state(app, new["task_id"], "succeeded")
    # A finished run cannot be cancelled.
    _error(client.post(f"{API}/runs/{run['id']}/cancel", headers=auth["operator"]), 409,
           "wrong_state")


def test_start_only_registered_tasks_with_json_arguments(client, auth):
    op = auth["operator"]
    _error(client.post(f"{API}/runs", headers=op, json={"task": "os.system",
                                                         "args": ["rm -rf /"]}),
           422, "unknown_task")
    _error(client.post(f"{API}/runs", headers=op, json={"task": "celery.chord_unlock"}), 422,
           "unknown_task")
    _error(client.post(f"{API}/runs", headers=op, data="{not json",
                       content_type="application/json"), 400, "bad_json")
    body = _error(client.post(f"{API}/runs", headers=op, json={"task": "demo.noop",
                                                                "args": {"a": 1}}),
                  422, "validation_error")
    assert "args" in body["errors"]["json"]
    _error(client.post(f"{API}/runs", headers=op, json={"args": []}), 422, "validation_error")
    _error(client.post(f"{API}/runs", headers=op, json={"task": "demo.noop", "x": 1}), 422,
           "validation_error")
    _error(client.post(f"{API}/runs", headers=op, json={"task": "demo.noop",
                                                         "args": ["a\u0000b"]}),
           422, "validation_error")
    _error(client.post(f"{API}/runs", headers=op, json={"task": "demo.noop", "countdown": 5,
                                                         "eta": "2030-01-01T00:00:00Z"}),
           422, "validation_error")
    _error(client.post(f"{API}/runs", headers=op, json={"task": "demo.noop",
                                                         "eta": "2030-01-01T00:00:00"}),
           422, "validation_error")


def test_countdown_and_eta_schedule_the_run_and_cancel_revokes(client, auth):
    op = auth["operator"]
    later = _start(client, op, task="demo.noop", countdown=3600)
    assert later["state"] == "scheduled" and later["eta"]
    at = _start(client, op, task="demo.noop", eta="2099-01-01T00:00:00+00:00")
    assert at["state"] == "scheduled" and at["eta"].startswith("2099-01-01")
    resp = client.post(f"{API}/runs/{later['id']}/cancel", headers=op)
    assert resp.status_code == 200 and "cancelled" in resp.get_json()["message"]
    got = client.get(f"{API}/runs/{later['id']}", headers=op).get_json()
    assert got["state"] == "revoked"
    _error(client.post(f"{API}/runs/{later['id']}/cancel", headers=op), 409, "wrong_state")
    _error(client.post(f"{API}/runs/{at['id']}/rerun", headers=op), 409, "wrong_state")
    _error(client.get(f"{API}/runs/999999999", headers=op), 404, "not_found")
    _error(client.post(f"{API}/runs/999999999/cancel", headers=op), 404, "not_found")


def test_run_list_filters_and_key_paging(client, auth):
    op, viewer = auth["operator"], auth["viewer"]
    noops = [_start(client, op, task="demo.noop", args=[i], countdown=3600) for i in range(5)]
    fail = _start(client, op, task="demo.fail", kwargs={"message": "needle"}, countdown=3600)
    client.post(f"{API}/runs/{noops[0]['id']}/cancel", headers=op)

    def ids(**query):
        resp = client.get(f"{API}/runs", headers=viewer, query_string=query)
        assert resp.status_code == 200, resp.get_json()
        return [r["id"] for r in resp.get_json()["runs"]]

    assert ids() == [fail["id"]] + [r["id"] for r in reversed(noops)]
    assert ids(task="demo.fail") == [fail["id"]]
    assert ids(state="revoked") == [noops[0]["id"]]
    assert set(ids(state=["revoked", "scheduled"])) == {r["id"] for r in noops + [fail]}
    assert ids(trigger="api", q="needle") == [fail["id"]]
    assert ids(q=fail["task_id"]) == [fail["id"]]
    assert ids(**{"from": "2099-01-01T00:00"}) == []

    page1 = client.get(f"{API}/runs", headers=viewer, query_string={"limit": 4}).get_json()
    assert [r["id"] for r in page1["runs"]] == ids()[:4] and page1["newer"] is None
    page2 = client.get(f"{API}/runs", headers=viewer,
                       query_string={"limit": 4, "before": page1["older"]}).get_json()
    assert [r["id"] for r in page2["runs"]] == ids()[4:] and page2["older"] is None
    back = client.get(f"{API}/runs", headers=viewer,
                      query_string={"limit": 4, "after": page2["newer"]}).get_json()
    assert [r["id"] for r in back["runs"]] == ids()[:4]

    _error(client.get(f"{API}/runs?state=nope", headers=viewer), 422, "validation_error")
    _error(client.get(f"{API}/runs?limit=0", headers=viewer), 422, "validation_error")
    _error(client.get(f"{API}/runs?before=x", headers=viewer), 422, "validation_error")
    _error(client.get(f"{API}/runs?from=yesterday", headers=viewer), 422, "validation_error")


def test_schedules(app, client, auth):
    op, viewer = auth["operator"], auth["viewer"]
    resp = client.post(f"{API}/schedules", headers=op, json={
        "name": "nightly", "task": "demo.noop", "cron": "0 3 * * *", "tz": "Europe/Paris",
        "args": [1], "enabled": False})
    assert resp.status_code == 201, resp.get_json()
    sched = resp.get_json()
    assert sched["kind"] == "crontab" and sched["enabled"] is False and sched["description"]
    _error(client.post(f"{API}/schedules", headers=op,
                       json={"name": "nightly", "task": "demo.noop", "every": "10s"}),
           409, "conflict")
    _error(client.post(f"{API}/schedules", headers=op,
                       json={"name": "x", "task": "demo.noop", "cron": "61 * * * *"}),
           422, "invalid_schedule")
    _error(client.post(f"{API}/schedules", headers=op,
                       json={"name": "x", "task": "nope", "every": "10s"}), 422, "unknown_task")
    _error(client.post(f"{API}/schedules", headers=op,
                       json={"name": "x", "task": "demo.noop", "every": "10s", "tz": "Mars/X"}),
           422, "invalid_schedule")
    _error(client.post(f"{API}/schedules", headers=op, json={"task": "demo.noop"}), 422,
           "validation_error")

    sid = sched["id"]
    listed = client.get(f"{API}/schedules", headers=viewer).get_json()["schedules"]
    assert [s["name"] for s in listed] == ["nightly"]
    resp = client.patch(f"{API}/schedules/{sid}", headers=op, json={"every": "5m"})
    assert resp.status_code == 200 and resp.get_json()["every_s"] == 300
    assert resp.get_json()["kind"] == "interval" and resp.get_json()["args"] == [1]
    _error(client.patch(f"{API}/schedules/{sid}", headers=op, json={"every": "-1s"}), 422,
           "invalid_schedule")
    assert client.post(f"{API}/schedules/{sid}/enable", headers=op).get_json()["enabled"]
    assert not client.post(f"{API}/schedules/{sid}/disable", headers=op).get_json()["enabled"]

    resp = client.post(f"{API}/schedules/{sid}/run", headers=op)
    assert resp.status_code == 202
    run = load_run(app, resp.get_json()["task_id"])
    assert run.schedule_id == sid and run.trigger == "manual"
    assert resp.get_json()["run_id"] == run.id
    runs = client.get(f"{API}/runs", headers=viewer, query_string={"schedule": sid}).get_json()
    assert [r["id"] for r in runs["runs"]] == [run.id]

    assert client.delete(f"{API}/schedules/{sid}", headers=op).status_code == 204
    _error(client.get(f"{API}/schedules/{sid}", headers=viewer), 404, "not_found")
    _error(client.delete(f"{API}/schedules/{sid}", headers=op), 404, "not_found")


def test_code_schedules_can_only_be_switched(app, client, auth):
    from models import Schedule, db

    with app.app_context():
        row = Schedule(name="from-code", task="demo.noop", kind="interval", every_s=60,
                       source="code")
        db.session.add(row)
        db.session.commit()
        sid = row.id
    op = auth["operator"]
    _error(client.patch(f"{API}/schedules/{sid}", headers=op, json={"every": "5s"}), 409,
           "code_schedule")
    _error(client.delete(f"{API}/schedules/{sid}", headers=op), 409, "code_schedule")
    assert client.post(f"{API}/schedules/{sid}/disable", headers=op).status_code == 200


def test_emails(client, auth):
    op, viewer = auth["operator"], auth["viewer"]
    resp = client.post(f"{API}/emails", headers=op, json={
        "to": ["ada@example.com"], "subject": "Hello", "text": "Hi", "countdown": 3600})
    assert resp.status_code == 202, resp.get_json()
    later = resp.get_json()
    assert later["state"] == "scheduled" and later["run_id"]
    now = client.post(f"{API}/emails", headers=op, json={
        "to": ["bob@example.com"], "subject": "Now", "text": "Hi",
        "idempotency_key": "k1"}).get_json()
    again = client.post(f"{API}/emails", headers=op, json={
        "to": ["bob@example.com"], "subject": "Now", "text": "Hi",
        "idempotency_key": "k1"}).get_json()
    assert again["id"] == now["id"]

    listed = client.get(f"{API}/emails", headers=viewer).get_json()
    assert [e["id"] for e in listed["emails"]] == [now["id"], later["id"]]
    assert [e["id"] for e in client.get(f"{API}/emails?to=ada", headers=viewer)
            .get_json()["emails"]] == [later["id"]]
    assert [e["id"] for e in client.get(f"{API}/emails?state=scheduled", headers=viewer)
            .get_json()["emails"]] == [later["id"]]
    page = client.get(f"{API}/emails?limit=1", headers=viewer).get_json()
    assert [e["id"] for e in page["emails"]] == [now["id"]] and page["older"] == now["id"]
    page2 = client.get(f"{API}/emails?limit=1&before={page['older']}", headers=viewer).get_json()
    assert [e["id"] for e in page2["emails"]] == [later["id"]] and page2["older"] is None

    resp = client.post(f"{API}/emails/{later['id']}/cancel", headers=op)
    assert resp.status_code == 200 and resp.get_json()["state"] == "cancelled"
    _error(client.post(f"{API}/emails/{later['id']}/cancel", headers=op), 409, "wrong_state")
    _error(client.post(f"{API}/emails/999999/cancel", headers=op), 404, "not_found")
    _error(client.get(f"{API}/emails/999999", headers=viewer), 404, "not_found")
    _error(client.post(f"{API}/emails", headers=op, json={
        "to": ["not an address"], "subject": "x", "text": "y"}), 422, "invalid_email")
    _error(client.post(f"{API}/emails", headers=op, json={
        "to": ["a@example.com"], "subject": "x\r\nBcc: evil@example.com", "text": "y"}),
        422, "invalid_email")
    _error(client.post(f"{API}/emails", headers=op, json={
        "to": [], "subject": "x", "text": "y"}), 422, "validation_error")
    _error(client.get(f"{API}/emails?state=nope", headers=viewer), 422, "validation_error")


def test_workers_and_queues(client, auth, worker):
    workers = client.get(f"{API}/workers", headers=auth["viewer"]).get_json()["workers"]
    assert worker.nodename() in [w["node"] for w in workers]
    queues = client.get(f"{API}/queues", headers=auth["viewer"]).get_json()["queues"]
    assert "celery" in [q["name"] for q in queues]


def test_broker_unavailable_is_503(services, smtp):
    from app import create_app
    from app.tokens import create_token
    from tests.helpers import test_settings

    down = create_app(test_settings(services, REDIS_URL="redis://127.0.0.1:1/0"))
    make_user(down, "ops@example.com", "operator")
    with down.app_context():
        token = create_token("ops@example.com")[1]
    client = down.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    body = _error(client.post(f"{API}/runs", headers=headers, json={"task": "demo.noop"}),
                  503, "broker_unavailable")
    assert body["run_id"]
    _error(client.get(f"{API}/queues", headers=headers), 503, "broker_unavailable")


def test_token_cli(app, services):
    make_user(app, "cli@example.com", "viewer")
    runner = app.test_cli_runner()
    out = runner.invoke(args=["users", "token", "create", "cli@example.com", "--name", "ci"])
    assert out.exit_code == 0, out.output
    token = out.output.strip().splitlines()[-1]
    assert token.startswith("bk_") and len(token) > 40
    client = app.test_client()
    assert client.get(f"{API}/runs", headers={"Authorization": f"Bearer {token}"}) \
        .status_code == 200
    listing = runner.invoke(args=["users", "token", "list"]).output
    assert "cli@example.com" in listing and "ci" in listing and token not in listing
    token_id = re.search(r"^(\d+)\s", listing.splitlines()[-1]).group(1)
    assert "revoked" in runner.invoke(args=["users", "token", "revoke", token_id]).output
    assert client.get(f"{API}/runs", headers={"Authorization": f"Bearer {token}"}) \
        .status_code == 401
    out = runner.invoke(args=["users", "token", "create", "nobody@example.com"])
    assert out.exit_code != 0 and "no user" in out.output
    with app.app_context():
        from models import ApiToken, db
        assert all(len(t.token_hash) == 64 and t.token_hash != token
                   for t in db.session.query(ApiToken))
