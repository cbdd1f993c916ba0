"""Hostile input: only JSON is accepted on the wire, so a pickle message runs no code; 5 MB
arguments and results are stored capped; oversized or malformed API and form input gets a 4xx
with a message, never a 500."""
from __future__ import annotations

import http.client
import json
import os
import pickle
from urllib.parse import urlsplit

import pytest
from celery.utils import uuid
from kombu import Connection, Exchange, Producer
from sqlalchemy import select, text

from app import create_app
from models import Email, JobRun, db
from scheduler.enqueue import enqueue
from tests.helpers import csrf_token, load_run, make_user, test_settings, wait_for_state

API = "/api/v1"
#: Five megabytes: far over RESULT_MAX_BYTES (64 KiB) and MAX_CONTENT_LENGTH (1 MiB).
BIG = 5 * 1024 * 1024
#: What a capped document may take in its row: the marker and a 4 KiB preview.
CAPPED_MAX_BYTES = 16 * 1024


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


# -- 5 MB arguments and results -----------------------------------------------------------

def _token(app, email: str, role: str = "operator") -> dict[str, str]:
    from app.tokens import create_token

    make_user(app, email, role)
    with app.app_context():
        return {"Authorization": f"Bearer {create_token(email, 'tests')[1]}"}


def _stored_bytes(app, task_id: str) -> dict[str, int | None]:
    """Size of each JSON column as PostgreSQL holds it (its text and its stored datum)."""
    with app.app_context():
        row = db.session.execute(text(
            "SELECT octet_length(args::text) AS args, octet_length(kwargs::text) AS kwargs, "
            "octet_length(result::text) AS result, pg_column_size(args) AS args_datum, "
            "pg_column_size(result) AS result_datum FROM job_runs WHERE task_id = :t"),
            {"t": task_id}).one()
        return dict(row._mapping)


def _assert_capped(doc, size: int) -> None:
    assert isinstance(doc, dict) and doc["__truncated__"] is True, str(doc)[:200]
    assert doc["bytes"] >= size
    assert len(doc["preview"]) <= 4096


def _assert_page_and_api_show_the_marker(app, client, run_id: int, *columns: str) -> None:
    page = client.get(f"/admin/runs/{run_id}")
    assert page.status_code == 200
    assert "__truncated__" in page.get_data(as_text=True)
    assert len(page.data) < 200_000
    resp = app.test_client().get(f"{API}/runs/{run_id}",
                                 headers=_token(app, "reader@example.com", "viewer"))
    assert resp.status_code == 200 and len(resp.data) < 100_000
    for column in columns:
        assert resp.get_json()[column]["__truncated__"] is True


def test_five_megabyte_args_and_result_are_stored_capped(app, worker, viewer_client):
    noop = app.extensions["celery"].tasks["demo.noop"]
    with app.app_context():
        task_id = noop.delay("x" * BIG, k="y" * BIG).id
    run = wait_for_state(app, task_id, "succeeded", timeout=60)
    _assert_capped(run.args, BIG)
    _assert_capped(run.kwargs, BIG)
    _assert_capped(run.result, 2 * BIG)  # demo.noop returns its arguments
    sizes = _stored_bytes(app, task_id)
    assert all(v < CAPPED_MAX_BYTES for v in sizes.values()), sizes
    _assert_page_and_api_show_the_marker(app, viewer_client, run.id, "args", "kwargs", "result")


def test_a_five_megabyte_result_of_small_args_is_stored_capped(app, client, worker,
                                                               viewer_client):
    with app.app_context():
        task_id = enqueue("demo.big_result", [BIG], trigger="web")
    run = wait_for_state(app, task_id, "succeeded", timeout=60)
    assert run.args == [BIG]
    _assert_capped(run.result, BIG)
    assert _stored_bytes(app, task_id)["result"] < CAPPED_MAX_BYTES
    _assert_page_and_api_show_the_marker(app, viewer_client, run.id, "result")
    # The seed's status endpoint reads the same row.
    status = client.get(f"/status/{task_id}")
    assert status.get_json()["state"] == "SUCCESS" and len(status.data) < 100_000


def test_five_megabyte_args_through_the_api_are_refused_413_with_no_run(app, client):
    resp = client.post(f"{API}/runs", json={"task": "demo.noop", "args": ["x" * BIG]},
                       headers=_token(app, "ops@example.com"))
    assert resp.status_code == 413
    body = resp.get_json()
    assert body["code"] == "too_large" and "1 MiB" in body["message"]
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(JobRun)) == 0


def test_five_megabyte_args_under_a_larger_body_limit_are_stored_capped(app, services, smtp,
                                                                        worker):
    roomy = create_app(test_settings(services, MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp.port,
                                     MAX_CONTENT_LENGTH=16 * 1024 * 1024))
    app.extensions["celery"].set_default()  # create_app made roomy's Celery app the default
    resp = roomy.test_client().post(f"{API}/runs",
                                    json={"task": "demo.noop", "args": ["x" * BIG]},
                                    headers=_token(roomy, "ops@example.com"))
    assert resp.status_code == 202, resp.get_data(as_text=True)[:300]
    assert len(resp.data) < 100_000
    _assert_capped(resp.get_json()["args"], BIG)
    task_id = resp.get_json()["task_id"]
    run = wait_for_state(roomy, task_id, "succeeded", timeout=60)
    _assert_capped(run.result, BIG)
    sizes = _stored_bytes(roomy, task_id)
    assert sizes["args"] < CAPPED_MAX_BYTES and sizes["result"] < CAPPED_MAX_BYTES, sizes


# -- request size limit --------------------------------------------------------------------

def test_an_oversized_form_gets_a_413_page_not_a_500(app, client):
    token = csrf_token(client)
    for path in ("/", "/login"):
        resp = client.post(path, data={"email": "x" * (2 * 1024 * 1024), "csrf_token": token})
        assert resp.status_code == 413
        assert resp.mimetype == "text/html"
        assert "too large" in resp.get_data(as_text=True)
    # Under the body limit, Flask still bounds one multipart field held in memory
    # (MAX_FORM_MEMORY_SIZE, 500 kB).
    resp = client.post("/", data={"email": "x" * 600_000, "csrf_token": token},
                       content_type="multipart/form-data")
    assert resp.status_code == 413


def test_an_oversized_body_over_real_http_gets_413(app, live_server):
    url = urlsplit(live_server)
    for path, ctype, shape in (("/", "application/x-www-form-urlencoded", "text/html"),
                               (f"{API}/runs", "application/json", "application/json")):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        headers = {"Content-Type": ctype}
        if path.startswith(API):
            headers.update(_token(app, "ops@example.com"))
        try:
            conn.request("POST", path, body=b"x" * BIG, headers=headers)
            resp = conn.getresponse()
            assert resp.status == 413, (path, resp.status)
            assert resp.getheader("Content-Type").startswith(shape)
            if shape == "application/json":
                assert json.loads(resp.read())["code"] == "too_large"
        finally:
            conn.close()


# -- malformed API input -------------------------------------------------------------------

def _raw(body: str | bytes, ctype: str = "application/json") -> dict:
    return {"data": body, "content_type": ctype}


#: (id, request keywords, expected status, expected code)
BAD_RUNS = [
    ("malformed-json", _raw("{nope"), 400, "bad_json"),
    ("invalid-utf8", _raw(b'{"task": "demo.noop", "args": ["\xff\xfe"]}'), 400, "bad_json"),
    ("integer-of-5000-digits", _raw('{"task": "demo.noop", "args": [1%s]}' % ("0" * 5000)),
     400, "bad_json"),
    ("nested-200000-deep", _raw('{"task": "demo.noop", "args": %s%s}'
                                % ("[" * 200_000, "]" * 200_000)), 400, "bad_json"),
    ("nested-40-deep", {"json": {"task": "demo.noop",
                                 "args": json.loads("[" * 40 + "]" * 40)}},
     422, "validation_error"),
    ("text-plain", _raw('{"task": "demo.noop"}', "text/plain"), 422, "validation_error"),
    ("form", {"data": {"task": "demo.noop"}}, 422, "validation_error"),
    ("array-body", {"json": [1, 2]}, 422, "validation_error"),
    ("task-not-a-string", {"json": {"task": 5}}, 422, "validation_error"),
    ("args-not-a-list", {"json": {"task": "demo.noop", "args": "x"}}, 422, "validation_error"),
    ("kwargs-not-a-dict", {"json": {"task": "demo.noop", "kwargs": []}}, 422,
     "validation_error"),
    ("unknown-field", {"json": {"task": "demo.noop", "bogus": 1}}, 422, "validation_error"),
    ("countdown-of-400-digits", _raw('{"task": "demo.noop", "countdown": 1%s}' % ("0" * 400)),
     422, "validation_error"),
    ("countdown-infinite", _raw('{"task": "demo.noop", "countdown": 1e400}'), 422,
     "validation_error"),
    ("countdown-nan", _raw('{"task": "demo.noop", "countdown": NaN}'), 422, "validation_error"),
    ("eta-year-99999", {"json": {"task": "demo.noop", "eta": "99999-01-01T00:00:00Z"}}, 422,
     "validation_error"),
    ("nul-in-args", {"json": {"task": "demo.noop", "args": ["a\u0000b"]}}, 422,
     "validation_error"),
    ("nul-in-kwargs-key", {"json": {"task": "demo.noop", "kwargs": {"a\u0000": 1}}}, 422,
     "validation_error"),
    ("nul-in-task", {"json": {"task": "demo.noop\u0000"}}, 422, "validation_error"),
    ("lone-surrogate", _raw('{"task": "demo.noop", "args": ["\\ud800"]}'), 422,
     "validation_error"),
    ("task-of-100k-chars", {"json": {"task": "x" * 100_000}}, 422, "validation_error"),
]


@pytest.mark.parametrize("request_kwargs,status,code",
                         [case[1:] for case in BAD_RUNS], ids=[case[0] for case in BAD_RUNS])
def test_malformed_run_requests_get_4xx_with_a_message(app, client, request_kwargs, status,
                                                       code):
    resp = client.post(f"{API}/runs", headers=_token(app, "ops@example.com"), **request_kwargs)
    assert resp.status_code == status, resp.get_data(as_text=True)[:300]
    body = resp.get_json()
    assert body["code"] == code and body["message"], body
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(JobRun)) == 0


BAD_EMAILS = [
    ("address-of-300-chars", {"to": ["a" * 300 + "@example.com"]}, "validation_error"),
    ("address-of-100k-chars", {"to": ["a" * 100_000 + "@example.com"]}, "validation_error"),
    ("not-an-address", {"to": ["nope"]}, "invalid_email"),
    ("header-injection", {"to": ["a@example.com\r\nBcc: victim@example.com"]},
     "invalid_email"),
    ("to-not-a-list", {"to": "a@example.com"}, "validation_error"),
    ("nul-in-subject", {"subject": "hi\u0000"}, "validation_error"),
    ("subject-of-2000-chars", {"subject": "s" * 2000}, "validation_error"),
    ("countdown-of-400-digits", {"countdown": 10 ** 400}, "validation_error"),
]


@pytest.mark.parametrize("fields,code", [c[1:] for c in BAD_EMAILS],
                         ids=[c[0] for c in BAD_EMAILS])
def test_malformed_email_requests_get_422_with_a_message(app, client, fields, code):
    body = {"to": ["a@example.com"], "subject": "s", "text": "t", **fields}
    resp = client.post(f"{API}/emails", data=json.dumps(body), content_type="application/json",
                       headers=_token(app, "ops@example.com"))
    assert resp.status_code == 422, resp.get_data(as_text=True)[:300]
    answer = resp.get_json()
    assert answer["code"] == code and answer["message"]
    assert len(resp.data) < 2000  # an overlong address is not echoed back whole
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(Email)) == 0


@pytest.mark.parametrize("path", [
    f"{API}/runs?q=%00", f"{API}/runs?task=" + "x" * 100_000, f"{API}/runs?limit=" + "9" * 30,
    f"{API}/runs?before=-1", f"{API}/runs?from=notadate", f"{API}/emails?to=%00",
    f"{API}/runs/" + "9" * 30, f"{API}/runs/%00",
])
def test_malformed_api_queries_get_4xx(app, client, path):
    resp = client.get(path, headers=_token(app, "reader@example.com", "viewer"))
    assert 400 <= resp.status_code < 500, resp.get_data(as_text=True)[:300]
    assert resp.get_json()["message"]


# -- NUL characters ------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/status/a%00b", "/?x=%00", "/login?next=%00",
                                  "/admin/runs?q=%00", "/admin/emails?to=%00",
                                  "/admin/runs?state=queued&state=%00", "/admin/runs?%00=1"])
def test_nul_in_a_url_is_refused_400(admin_client, path):
    # /status/<id> with a NUL was a 500: PostgreSQL refused the query.
    resp = admin_client.get(path)
    assert resp.status_code == 400
    assert "NUL" in resp.get_data(as_text=True)


def test_nul_in_a_form_is_refused_400(app, client):
    token = csrf_token(client, "/login")
    for path, data in (("/login", {"email": "a\x00@example.com", "password": "x"}),
                       ("/", {"email": "a\x00@example.com"})):
        resp = client.post(path, data={**data, "csrf_token": token})
        assert resp.status_code == 400, path
        assert "NUL" in resp.get_data(as_text=True)


def test_nul_in_args_of_delay_and_of_plain_celery_is_stored_replaced(app, worker):
    """Celery's JSON carries U+0000, PostgreSQL cannot store it: the run is recorded with
    U+FFFD in its place, and the worker's record write does not fail."""
    noop = app.extensions["celery"].tasks["demo.noop"]
    with app.app_context():
        ours = noop.delay("a\x00b", k="c\x00").id
    # Published by plain Celery means: the worker makes the row when it starts the run.
    plain = app.extensions["celery"].send_task("demo.noop", args=["a\x00b"],
                                               kwargs={"k\x00": "v"}).id
    for task_id in (ours, plain):
        run = wait_for_state(app, task_id, "succeeded", timeout=30)
        assert "\x00" not in json.dumps(run.args, ensure_ascii=False)
        assert run.args == ["a\ufffdb"]
        assert "\ufffd" in json.dumps(run.result, ensure_ascii=False)
    assert load_run(app, plain).kwargs == {"k\ufffd": "v"}


def test_lone_surrogates_in_args_of_delay_and_of_plain_celery_are_stored_replaced(app, worker):
    """JSON can carry a lone UTF-16 surrogate ("\\ud800"), PostgreSQL cannot store it
    (jsonb refuses the escape, UTF-8 cannot encode it): recorded as U+FFFD."""
    noop = app.extensions["celery"].tasks["demo.noop"]
    with app.app_context():
        ours = noop.delay("a\ud800b").id
    plain = app.extensions["celery"].send_task("demo.noop", args=["a\udfffb"]).id
    for task_id in (ours, plain):
        run = wait_for_state(app, task_id, "succeeded", timeout=15)
        assert run.args == ["a\ufffdb"]
        assert run.result == {"args": ["a\ufffdb"], "kwargs": {}}


def test_a_failure_message_with_nul_is_recorded(app, worker):
    with app.app_context():
        task_id = enqueue("demo.fail", kwargs={"message": "boom\x00bang"}, trigger="web")
    run = wait_for_state(app, task_id, "failed", timeout=30)
    assert run.error_message == "boom\ufffdbang"
    assert "\x00" not in (run.traceback or "")


# -- the demo form --------------------------------------------------------------------------

@pytest.mark.parametrize("address", ["a" * 10_000 + "@example.com", "a" * 255 + "@x.io",
                                     "not-an-address"])
def test_the_demo_form_refuses_bad_addresses_with_400(app, client, address):
    resp = client.post("/", data={"email": address, "submit": "Send",
                                  "csrf_token": csrf_token(client)})
    assert resp.status_code == 400
    page = resp.get_data(as_text=True)
    assert "Not sent: invalid e-mail address" in page
    assert "a" * 300 not in page  # not echoed whole
    # The flash message travels in the session cookie: it stays small.
    assert all(len(c) < 4000 for c in resp.headers.getlist("Set-Cookie"))
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(Email)) == 0
