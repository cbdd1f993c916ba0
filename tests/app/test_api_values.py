"""Every JSON value a Python call can take goes through args and kwargs as given: null above
all, through the API, the CLI and the schedule form; the OpenAPI document states the rules."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from models import JobRun, Schedule, db
from tests.helpers import csrf_token, load_run, make_user, wait_for_state

API = "/api/v1"
#: null in every place, and a value in Celery's JSON encoding (stored as the plain object).
ARGS = [None, 1, [None, {"x": None}], {"__type__": "date", "__value__": "2026-12-02"}]
KWARGS = {"a": None, "b": [None], "c": {"d": None}}


@pytest.fixture
def headers(app, services):
    from app.tokens import create_token

    make_user(app, "values@example.com", "operator")
    with app.app_context():
        return {"Authorization": f"Bearer {create_token('values@example.com', 'tests')[1]}"}


def _schedule(app, name: str) -> Schedule:
    with app.app_context():
        schedule = db.session.scalar(select(Schedule).where(Schedule.name == name))
        db.session.expunge(schedule)
        return schedule


def test_a_run_takes_null_in_args_and_kwargs_and_stores_them(app, client, headers):
    resp = client.post(f"{API}/runs", headers=headers,
                       json={"task": "demo.noop", "args": ARGS, "kwargs": KWARGS,
                             "countdown": 3600})
    assert resp.status_code == 202, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["args"] == ARGS and body["kwargs"] == KWARGS
    run = load_run(app, body["task_id"])
    assert run.args == ARGS and run.kwargs == KWARGS


def test_the_task_receives_none(app, client, headers, worker):
    resp = client.post(f"{API}/runs", headers=headers,
                       json={"task": "demo.noop", "args": [None, 1], "kwargs": {"a": None}})
    assert resp.status_code == 202, resp.get_data(as_text=True)
    run = wait_for_state(app, resp.get_json()["task_id"], "succeeded", timeout=30)
    assert run.args == [None, 1] and run.kwargs == {"a": None}
    # demo.noop answers what it was called with: None, not "None" nor a missing argument.
    assert run.result == {"args": [None, 1], "kwargs": {"a": None}}


@pytest.mark.parametrize("path", ["/schedules", "/schedules/{id}"])
def test_a_schedule_takes_null_in_args_and_kwargs(app, client, headers, path):
    resp = client.post(f"{API}/schedules", headers=headers,
                       json={"name": "nulls", "task": "demo.noop", "every": "1h"})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    body = {"args": ARGS, "kwargs": KWARGS}
    if path == "/schedules":
        client.delete(f"{API}/schedules/{resp.get_json()['id']}", headers=headers)
        resp = client.post(f"{API}/schedules", headers=headers,
                           json={"name": "nulls", "task": "demo.noop", "every": "1h", **body})
        assert resp.status_code == 201, resp.get_data(as_text=True)
    else:
        resp = client.patch(f"{API}/schedules/{resp.get_json()['id']}", headers=headers,
                            json=body)
        assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["args"] == ARGS and resp.get_json()["kwargs"] == KWARGS
    schedule = _schedule(app, "nulls")
    assert schedule.args == ARGS and schedule.kwargs == KWARGS


@pytest.mark.parametrize("body,message", [
    ({"args": ["a\u0000"]}, "NUL"),
    ({"kwargs": {"a\u0000": None}}, "NUL"),
    ({"countdown": 5, "eta": "2030-01-01T00:00:00Z"}, "countdown or eta"),
    ({"eta": "2030-01-01T00:00:00"}, "aware"),
    ({"task": "no.such.task"}, "no registered task"),
])
def test_what_the_document_refuses_is_refused_with_a_message(app, client, headers, body,
                                                             message):
    resp = client.post(f"{API}/runs", headers=headers, json={"task": "demo.noop", **body})
    assert resp.status_code == 422, resp.get_data(as_text=True)
    assert message.lower() in resp.get_json()["message"].lower()


def test_old_dates_and_far_offsets_are_taken(app, client, headers):
    """Years before 1900 and offsets PostgreSQL does not take (beyond 15:59) are fine."""
    resp = client.post(f"{API}/runs", headers=headers,
                       json={"task": "demo.noop", "eta": "1850-03-01T10:00:00+19:43"})
    assert resp.status_code == 202, resp.get_data(as_text=True)
    resp = client.get(f"{API}/runs", headers=headers,
                      query_string={"from": "0860-03-19T09:03:37Z",
                                    "to": "4015-08-28T07:32:27.539+19:43"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert len(resp.get_json()["runs"]) == 1
    resp = client.post(f"{API}/emails", headers=headers,
                       json={"to": ["a@example.com"], "subject": "s", "text": "t",
                             "send_at": "1899-12-31T23:59:59-20:00"})
    assert resp.status_code == 202, resp.get_data(as_text=True)


def test_the_document_states_the_rules(client, headers):
    spec = client.get(f"{API}/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    value = schemas["JsonValue"]
    assert {"type": "null"} in value["anyOf"]
    run = schemas["StartRun"]
    assert run["properties"]["args"]["items"] == {"$ref": "#/components/schemas/JsonValue"}
    assert run["not"] == {"required": ["countdown", "eta"]}
    assert "demo.noop" in run["properties"]["task"]["enum"]
    assert schemas["SendEmail"]["not"] == {"required": ["send_at", "countdown"]}
    assert len(schemas["ScheduleCreate"]["oneOf"]) == 3
    assert "Europe/Paris" in schemas["ScheduleInput"]["properties"]["tz"]["enum"]


def test_the_jobs_cli_takes_null(app, services):
    result = app.test_cli_runner().invoke(
        args=["jobs", "run", "demo.noop", "--args", json.dumps(ARGS), "--kwargs",
              json.dumps(KWARGS), "--countdown", "3600"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    task_id = result.output.split()[1]
    run = load_run(app, task_id)
    assert run.args == ARGS and run.kwargs == KWARGS


@pytest.mark.parametrize("args,message", [("[NaN]", "finite"), ('["a\\u0000"]', "NUL"),
                                          ("{}", "array"), ("[", "not valid JSON")])
def test_the_jobs_cli_refuses_what_cannot_be_stored(app, services, args, message):
    result = app.test_cli_runner().invoke(args=["jobs", "run", "demo.noop", "--args", args])
    assert result.exit_code != 0 and message in result.output, result.output
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(JobRun)) == 0


def test_the_schedules_cli_takes_null(app, services):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["schedules", "add", "nulls", "--task", "demo.noop", "--every",
                                 "1h", "--args", json.dumps(ARGS), "--kwargs",
                                 json.dumps(KWARGS)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    schedule = _schedule(app, "nulls")
    assert schedule.args == ARGS and schedule.kwargs == KWARGS
    result = runner.invoke(args=["schedules", "edit", "nulls", "--args", "[null]", "--kwargs",
                                 '{"k": null}'], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    schedule = _schedule(app, "nulls")
    assert schedule.args == [None] and schedule.kwargs == {"k": None}
    result = runner.invoke(args=["schedules", "edit", "nulls", "--kwargs", '{"k": NaN}'])
    assert result.exit_code != 0 and "finite" in result.output
    assert _schedule(app, "nulls").kwargs == {"k": None}


def test_the_schedule_form_takes_null(app, operator_client):
    form = {"name": "nulls", "task": "demo.noop", "kind": "interval", "every": "1h",
            "cron": "", "tz": "UTC", "at": "", "args": json.dumps(ARGS),
            "kwargs": json.dumps(KWARGS), "queue": "", "start_at": "", "end_at": "",
            "overlap": "allow", "misfire": "run_once", "grace": "60s", "enabled": "1"}
    token = csrf_token(operator_client, "/admin/schedules")
    resp = operator_client.post("/admin/schedules/new", data={"csrf_token": token, **form})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    schedule = _schedule(app, "nulls")
    assert schedule.args == ARGS and schedule.kwargs == KWARGS
    # Shown again as typed JSON with null, and saved unchanged.
    page = operator_client.get(f"/admin/schedules/{schedule.id}/edit").get_data(as_text=True)
    assert "null" in page
    resp = operator_client.post(f"/admin/schedules/{schedule.id}/edit",
                                data={"csrf_token": token, **form, "args": "[null, NaN]"})
    assert resp.status_code == 400 and "finite" in resp.get_data(as_text=True)
    assert _schedule(app, "nulls").args == ARGS
