"""The schedules admin pages: list, detail, form with its preview, and the operator's actions."""
from __future__ import annotations

import json
import re
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, func, select

import beat_schedule
from models import JobRun, Schedule, db
from scheduler.beat import schedules
from tests.factories import make_run
from tests.helpers import csrf_token, wait_for_state

XSS_NAME = "<script>alert(1)</script>"
XSS_ARG = '"><img src=x onerror=alert(1)>'


def _create(app, name: str, enabled: bool = True, **values) -> int:
    with app.app_context():
        return schedules.create(name, values, enabled=enabled).id


def _load(app, schedule_id: int) -> Schedule | None:
    with app.app_context():
        schedule = db.session.get(Schedule, schedule_id)
        if schedule is not None:
            db.session.expunge(schedule)
        return schedule


def _count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Schedule))


def _page(client, path: str) -> str:
    resp = client.get(path)
    assert resp.status_code == 200, (path, resp.status_code)
    return resp.get_data(as_text=True)


def _post(client, path: str, **data):
    return client.post(path, data={"csrf_token": csrf_token(client, "/admin/schedules"), **data})


def _form(**values) -> dict:
    form = {"name": "nightly", "task": "demo.noop", "kind": "crontab", "every": "",
            "cron": "0 2 * * *", "tz": "Europe/Berlin", "at": "", "args": "[1, 2]",
            "kwargs": '{"x": 1}', "queue": "", "start_at": "", "end_at": "",
            "overlap": "skip", "misfire": "run_once", "grace": "30s", "enabled": "1"}
    form.update(values)
    return form


@contextmanager
def _statements(app):
    """Count the SQL statements the app sends while the block runs."""
    seen = []

    def count(conn, cursor, statement, *args):
        seen.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


# --- the list --------------------------------------------------------------------------------

def test_list_shows_each_schedule_in_words_with_its_next_fires_and_latest_run(
        app, operator_client):
    nightly = _create(app, "nightly", task="demo.noop", cron="0 2 * * *", tz="Europe/Berlin")
    _create(app, "often", task="demo.noop", every="10m", enabled=False)
    with app.app_context():
        schedules.sync_code(beat_schedule.SCHEDULES)
    run_id = make_run(app, state="succeeded", trigger="beat", schedule_id=nightly,
                      scheduled_for=datetime(2026, 1, 1, 1, tzinfo=timezone.utc),
                      result={"ok": True})
    page = _page(operator_client, "/admin/schedules")
    assert "every day at 02:00 Europe/Berlin" in page
    assert "every 10 minutes" in page
    row = page[page.index('id="schedule-%d"' % nightly):]
    row = row[:row.index("</tr>")]
    assert row.count("<li><time") == 5
    assert "02:00:00 Europe/Berlin" in row
    assert f'href="/admin/runs/{run_id}"' in row and 'class="badge succeeded"' in row
    assert ">user<" in row
    assert "not planned: disabled" in page
    assert ">code<" in page and "mail-sweep" in page
    assert page.count("Run now") == 2 + len(beat_schedule.SCHEDULES)  # one per schedule
    # Code schedules have no edit link; user schedules have one.
    assert f"/admin/schedules/{nightly}/edit" in page
    with app.app_context():
        sweep = schedules.get("mail-sweep").id
    assert f"/admin/schedules/{sweep}/edit" not in page


def test_the_list_reads_the_latest_runs_in_one_query_not_one_per_row(app, operator_client):
    def statements_for_the_page() -> int:
        with _statements(app) as seen:
            _page(operator_client, "/admin/schedules")
        return len(seen)

    first = _create(app, "a", task="demo.noop", every="1m")
    make_run(app, state="succeeded", trigger="beat", schedule_id=first,
             scheduled_for=datetime(2026, 1, 1, tzinfo=timezone.utc), result={"ok": True})
    with_one = statements_for_the_page()
    for i in range(5):
        sid = _create(app, f"more{i}", task="demo.noop", every="1m")
        make_run(app, state="succeeded", trigger="beat", schedule_id=sid,
                 scheduled_for=datetime(2026, 1, 1, tzinfo=timezone.utc), result={"ok": True})
    assert statements_for_the_page() == with_one


def test_viewers_see_the_pages_without_any_action(app, viewer_client):
    sid = _create(app, "nightly", task="demo.noop", cron="0 2 * * *")
    for path in ("/admin/schedules", f"/admin/schedules/{sid}"):
        page = _page(viewer_client, path)
        assert "nightly" in page
        assert "<form method=\"post\" action=\"/admin/schedules" not in page
        assert "Run now" not in page and "New schedule" not in page and "Edit" not in page
    assert viewer_client.get("/admin/schedules/new").status_code == 403
    assert viewer_client.get(f"/admin/schedules/{sid}/edit").status_code == 403
    for action in ("toggle", "run", "delete"):
        resp = _post(viewer_client, f"/admin/schedules/{sid}/{action}")
        assert resp.status_code == 403, action
    assert _load(app, sid).enabled is True


# --- actions ---------------------------------------------------------------------------------

def test_the_enabled_switch_sets_the_state_and_plans_afresh(app, operator_client):
    sid = _create(app, "often", task="demo.noop", every="1m")
    resp = _post(operator_client, f"/admin/schedules/{sid}/toggle")  # unticked: off
    assert resp.status_code == 302 and resp.headers["Location"] == "/admin/schedules"
    assert _load(app, sid).enabled is False
    page = _page(operator_client, "/admin/schedules")
    assert "Schedule often disabled." in page
    resp = _post(operator_client, f"/admin/schedules/{sid}/toggle", enabled="1", back="detail")
    assert resp.headers["Location"] == f"/admin/schedules/{sid}"
    schedule = _load(app, sid)
    assert schedule.enabled is True and schedule.next_fire_at is None
    # Setting, not flipping: the same submit twice leaves it on.
    _post(operator_client, f"/admin/schedules/{sid}/toggle", enabled="1")
    assert _load(app, sid).enabled is True


def test_code_schedules_can_be_switched_and_run_but_not_edited_or_deleted(
        app, operator_client, worker):
    with app.app_context():
        schedules.sync_code(beat_schedule.SCHEDULES)
        heartbeat = schedules.get("heartbeat")
        sid, every = heartbeat.id, heartbeat.every_s
    page = _page(operator_client, f"/admin/schedules/{sid}")
    assert "beat_schedule.py" in page and "read-only" in page
    assert f"/admin/schedules/{sid}/edit" not in page and "Delete" not in page
    resp = operator_client.get(f"/admin/schedules/{sid}/edit", follow_redirects=True)
    assert "is defined in beat_schedule.py: change it there." in resp.get_data(as_text=True)
    resp = _post(operator_client, f"/admin/schedules/{sid}/edit", **_form(kind="interval",
                                                                         every="5s"))
    assert resp.status_code == 302
    resp = _post(operator_client, f"/admin/schedules/{sid}/delete")
    assert resp.status_code == 302
    kept = _load(app, sid)
    assert kept is not None and kept.every_s == every and kept.kind == "interval"
    _post(operator_client, f"/admin/schedules/{sid}/toggle", enabled="1")
    assert _load(app, sid).enabled is True
    resp = _post(operator_client, f"/admin/schedules/{sid}/run", back="detail")
    assert resp.headers["Location"] == f"/admin/schedules/{sid}"
    with app.app_context():
        task_id = db.session.scalar(select(JobRun.task_id).where(JobRun.schedule_id == sid))
    assert wait_for_state(app, task_id, "succeeded").trigger == "manual"


def test_run_now_starts_the_task_and_shows_in_the_history_with_a_duration_chart(
        app, operator_client, worker):
    sid = _create(app, "nightly", task="demo.noop", cron="0 2 * * *", args=[XSS_ARG])
    resp = _post(operator_client, f"/admin/schedules/{sid}/run", back="detail")
    page = operator_client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Started demo.noop for schedule nightly" in page
    with app.app_context():
        task_id = db.session.scalar(select(JobRun.task_id).where(JobRun.schedule_id == sid))
    run = wait_for_state(app, task_id, "succeeded")
    assert run.trigger == "manual" and run.args == [XSS_ARG]
    page = _page(operator_client, f"/admin/schedules/{sid}")
    assert f'href="/admin/runs/{run.id}"' in page
    assert 'class="badge succeeded"' in page and ">manual<" in page
    assert "<svg" in page and "<polyline" in page and "Durations of the last 1 succeeded" in page


def test_run_now_of_an_unregistered_task_says_so(app, operator_client):
    sid = _create(app, "renamed", task="demo.noop", every="1m")
    with app.app_context():
        db.session.get(Schedule, sid).task = "demo.gone"
        db.session.commit()
    resp = _post(operator_client, f"/admin/schedules/{sid}/run")
    page = operator_client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Not started: task demo.gone is not registered." in page
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(JobRun)) == 0


def test_delete_removes_a_user_schedule_and_keeps_its_runs(app, operator_client):
    sid = _create(app, "old", task="demo.noop", every="1m")
    run_id = make_run(app, state="succeeded", trigger="beat", schedule_id=sid,
                      scheduled_for=datetime(2026, 1, 1, tzinfo=timezone.utc), result={"ok": True})
    resp = _post(operator_client, f"/admin/schedules/{sid}/delete")
    assert resp.headers["Location"] == "/admin/schedules"
    assert _load(app, sid) is None
    with app.app_context():
        assert db.session.get(JobRun, run_id) is not None
    assert _post(operator_client, f"/admin/schedules/{sid}/delete").status_code == 404


# --- the detail page -------------------------------------------------------------------------

def test_detail_shows_the_definition_next_fires_history_and_skips(app, operator_client):
    sid = _create(app, "nightly", task="demo.noop", cron="30 2 * * *", tz="Europe/Berlin",
                  kwargs={"k": "v"}, overlap="skip")
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ids = [make_run(app, state="succeeded", trigger="beat", schedule_id=sid,
                    scheduled_for=base + timedelta(days=i), result={"ok": True})
           for i in range(53)]
    skipped = make_run(app, state="skipped", trigger="beat", schedule_id=sid,
                       scheduled_for=base + timedelta(days=60),
                       skip_reason="previous run x is still running (overlap policy skip)")
    page = _page(operator_client, f"/admin/schedules/{sid}")
    assert "every day at 02:30 Europe/Berlin" in page
    assert "<code>30 2 * * *</code>" in page and "{&#34;k&#34;: &#34;v&#34;}" in page
    next_fires = page[page.index("<h2>Next fires"):page.index("<h2>Durations")]
    assert next_fires.count("<li><time") == 5
    history = page[page.index("<h2>Runs"):page.index("<h2>Skipped runs")]
    linked = [int(i) for i in re.findall(r'href="/admin/runs/(\d+)"', history)]
    assert linked == ([skipped] + ids[::-1])[:50]  # the newest 50, newest first
    assert "previous run x is still running" in history
    skips = page[page.index("<h2>Skipped runs"):]
    assert f'href="/admin/runs/{skipped}"' in skips and "overlap policy skip" in skips
    assert "<polyline" in page  # durations of the succeeded runs


def test_detail_of_a_missing_schedule_is_404(app, operator_client):
    assert operator_client.get("/admin/schedules/999999").status_code == 404


# --- the form --------------------------------------------------------------------------------

def test_the_new_form_lists_registered_tasks_without_celery_ones(app, operator_client):
    page = _page(operator_client, "/admin/schedules/new")
    tasks = re.findall(r'<option value="([^"]+)"', page[page.index('id="task"'):
                                                         page.index('id="kind"')])
    assert "demo.noop" in tasks and "mail.send" in tasks
    assert not [t for t in tasks if t.startswith("celery.")]
    assert 'data-preview-url="/admin/schedules/preview"' in page
    assert "admin-schedules.js" in page


def test_create_a_schedule_from_the_form(app, operator_client):
    resp = _post(operator_client, "/admin/schedules/new", **_form())
    assert resp.status_code == 302
    with app.app_context():
        schedule = schedules.get("nightly")
        assert (schedule.kind, schedule.cron, schedule.timezone) == ("crontab", "0 2 * * *",
                                                                     "Europe/Berlin")
        assert schedule.args == [1, 2] and schedule.kwargs == {"x": 1}
        assert schedule.overlap == "skip" and schedule.misfire_grace_s == 30
        assert schedule.enabled and schedule.source == "user"
        assert resp.headers["Location"] == f"/admin/schedules/{schedule.id}"
    page = operator_client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Created schedule nightly: every day at 02:00 Europe/Berlin." in page


@pytest.mark.parametrize("values, message", [
    ({"cron": "61 * * * *"}, "minute 61 is out of range 0-59"),
    ({"cron": ""}, "expected 5 fields"),
    ({"tz": "Mars/Olympus"}, "unknown time zone &#39;Mars/Olympus&#39;"),
    ({"task": "demo.nope"}, "unknown task &#39;demo.nope&#39;"),
    ({"args": "[1,"}, "args is not valid JSON"),
    ({"kwargs": "[1]"}, "kwargs must be a JSON object"),
    ({"kind": "interval", "every": "0s"}, "interval must be positive"),
    ({"kind": "clocked", "at": "tomorrow"}, "cannot read time &#39;tomorrow&#39;"),
    ({"start_at": "2026-05-01T00:00Z", "end_at": "2026-04-01T00:00Z"}, "must be after"),
    ({"name": ""}, "a schedule name of 1 to 200 characters is required"),
    ({"overlap": "sometimes"}, "overlap must be one of allow, skip"),
])
def test_bad_input_is_shown_next_to_the_form_with_400_and_nothing_written(
        app, operator_client, values, message):
    resp = _post(operator_client, "/admin/schedules/new", **_form(**values))
    page = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert message in page and 'class="flash error form-error"' in page
    for key, value in values.items():  # the user's input comes back as typed
        if value and key not in ("kind", "task", "overlap"):
            assert f'value="{value}"' in page or f">{value}</textarea>" in page, key
    assert _count(app) == 0


def test_a_duplicate_name_is_refused(app, operator_client):
    _create(app, "nightly", task="demo.noop", every="1m")
    resp = _post(operator_client, "/admin/schedules/new", **_form())
    assert resp.status_code == 400
    assert "a schedule named &#39;nightly&#39; already exists" in resp.get_data(as_text=True)
    assert _count(app) == 1


def test_edit_changes_the_definition_and_plans_afresh(app, operator_client):
    sid = _create(app, "nightly", task="demo.noop", cron="0 2 * * *", args=[1])
    page = _page(operator_client, f"/admin/schedules/{sid}/edit")
    assert 'value="0 2 * * *"' in page and "[1]</textarea>" in page and "readonly" in page
    resp = _post(operator_client, f"/admin/schedules/{sid}/edit",
                 **_form(kind="interval", every="5m", cron="", args="[]", name="ignored"))
    assert resp.status_code == 302
    schedule = _load(app, sid)
    assert (schedule.name, schedule.kind, schedule.every_s, schedule.cron) == (
        "nightly", "interval", 300, None)
    assert schedule.args == [] and schedule.next_fire_at is None


def test_a_bad_edit_writes_nothing(app, operator_client):
    sid = _create(app, "nightly", task="demo.noop", cron="0 2 * * *")
    before = _load(app, sid)
    resp = _post(operator_client, f"/admin/schedules/{sid}/edit",
                 **_form(cron="0 2 * * *", tz="Nowhere/City", args="[9]"))
    page = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "unknown time zone" in page
    assert 'value="Nowhere/City"' in page and "[9]</textarea>" in page
    after = _load(app, sid)
    assert (after.timezone, after.args, after.updated_at) == (before.timezone, before.args,
                                                              before.updated_at)


# --- the preview -----------------------------------------------------------------------------

def _preview(client, **params) -> dict:
    resp = client.get("/admin/schedules/preview", query_string=params)
    assert resp.status_code == 200 and resp.is_json, params
    return resp.get_json()


def test_preview_of_a_good_timing(app, viewer_client):
    data = _preview(viewer_client, cron="0 2 * * *", tz="Europe/Berlin")
    assert data["ok"] is True and data["description"] == "every day at 02:00 Europe/Berlin"
    times = [datetime.fromisoformat(t) for t in data["next"]]
    assert len(times) == 5 and times == sorted(times)
    assert all(t.astimezone(timezone.utc).hour in (0, 1) and t.minute == 0 for t in times)
    assert times[0] > datetime.now(timezone.utc)
    data = _preview(viewer_client, every="90s", start_at="2030-01-01T00:00:00Z")
    assert data["description"].startswith("every 90 seconds from 2030-01-01 00:00 UTC")
    assert data["next"][:2] == ["2030-01-01T00:00:00+00:00", "2030-01-01T00:01:30+00:00"]
    data = _preview(viewer_client, at="2020-01-01T00:00Z")  # a moment past: nothing left
    assert data["ok"] is True and data["next"] == []
    assert _count(app) == 0


@pytest.mark.parametrize("params, message", [
    ({"cron": "0 25 * * *"}, "hour 25 is out of range 0-23"),
    ({"cron": "0 2 * * *", "tz": "Not/AZone"}, "unknown time zone"),
    ({"every": "-5s"}, "interval must be positive"),
    ({"every": "1e400"}, "finite"),
    ({"every": "soon"}, "cannot read interval"),
    ({"every": "1m", "cron": "* * * * *"}, "give only one of every, cron or at"),
    ({}, "a timing is required"),
    ({"tz": "UTC"}, "a timing is required"),
    ({"at": "9999-12-31T23:59:59-14:00"}, ""),
    ({"every": "1m", "start_at": "2030-01-02T00:00Z", "end_at": "2030-01-01T00:00Z"},
     "must be after"),
    # (a NUL anywhere in a query is refused 400 before any view: tests/test_hostile.py)
    ({"every": "1m", "start_at": "<script>"}, "cannot read time"),
])
def test_preview_of_bad_input_answers_200_with_the_error(app, viewer_client, params, message):
    data = _preview(viewer_client, **params)
    assert data["ok"] is False and message in data["error"]


# --- escaping --------------------------------------------------------------------------------

def test_names_and_args_are_escaped_everywhere(app, operator_client):
    sid = _create(app, XSS_NAME, task="demo.noop", every="1m", args=[XSS_ARG],
                  kwargs={"k": XSS_ARG})
    make_run(app, state="skipped", trigger="beat", schedule_id=sid,
             scheduled_for=datetime(2026, 1, 1, tzinfo=timezone.utc), skip_reason=XSS_ARG)
    pages = [_page(operator_client, p) for p in
             ("/admin/schedules", f"/admin/schedules/{sid}", f"/admin/schedules/{sid}/edit")]
    resp = _post(operator_client, f"/admin/schedules/{sid}/edit",
                 **_form(cron="bad", args=json.dumps([XSS_ARG])))
    assert resp.status_code == 400
    pages.append(resp.get_data(as_text=True))
    resp = _post(operator_client, "/admin/schedules/new", **_form(name=XSS_NAME, cron=XSS_ARG))
    pages.append(resp.get_data(as_text=True))
    for page in pages:
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page or "&lt;img src=x" in page
