"""The runs admin pages over scheduler.history: the list (filters, search, key paging,
counts), a run (fields, timeline, progress), and the operator's actions, one run and in
bulk."""
from __future__ import annotations

import re
import socket
from datetime import datetime, timezone

from sqlalchemy import select, text

from app import create_app
from models import Email, JobRun, Schedule, db
from scheduler.history import actions, queries
from scheduler.enqueue import enqueue
from tests.factories import make_run
from tests.helpers import (
    csrf_token, load_run, make_user, run_row, sign_in, test_settings, wait_for, wait_for_state,
)

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = '"><img src=x onerror=alert(1)>'


# --- helpers -------------------------------------------------------------------------------


def make_schedule(app, name: str = "nightly") -> int:
    with app.app_context():
        schedule = Schedule(name=name, task="demo.noop", kind="interval", every_s=3600,
                            enabled=False)
        db.session.add(schedule)
        db.session.commit()
        return schedule.id


def page(client, path: str) -> str:
    resp = client.get(path)
    assert resp.status_code == 200, (path, resp.status_code)
    return resp.get_data(as_text=True)


def listed(html: str) -> list[int]:
    """The run ids of a list page, in order."""
    return [int(i) for i in re.findall(r'<tr id="run-(\d+)"', html)]


def post(client, path: str, **data):
    return client.post(path, data={"csrf_token": csrf_token(client, "/admin/runs"), **data})


def flashes(client) -> str:
    return " ".join(re.findall(r'<p class="flash [^"]*" role="status">([^<]*)</p>',
                               page(client, "/admin/runs")))


def link(html: str, label: str) -> str:
    """The href of the link whose text starts with label (entities decoded)."""
    match = re.search(r'<a href="([^"]+)"[^>]*>' + re.escape(label), html)
    assert match, f"no {label!r} link"
    return match.group(1).replace("&amp;", "&")


# --- the list ------------------------------------------------------------------------------


def test_list_shows_runs_newest_first_with_their_columns(app, viewer_client):
    first = make_run(app, "demo.noop", [1, "alpha"], {"k": "v"}, state="succeeded")
    second = make_run(app, "demo.fail", state="failed", trigger="cli")
    html = page(viewer_client, "/admin/runs")
    assert listed(html) == [second, first]
    assert "demo.fail" in html and "RuntimeError" in html and "cli" in html
    assert "[1, &#34;alpha&#34;]" in html and "{&#34;k&#34;: &#34;v&#34;}" in html
    assert "2 runs" in html


def test_filter_by_state_one_or_several(app, viewer_client):
    queued = make_run(app, state="queued")
    failed = make_run(app, state="failed")
    lost = make_run(app, state="lost")
    make_run(app, state="succeeded")
    assert listed(page(viewer_client, "/admin/runs?state=failed")) == [failed]
    assert listed(page(viewer_client, "/admin/runs?state=failed&state=lost")) == [lost, failed]
    assert listed(page(viewer_client, "/admin/runs?state=queued")) == [queued]
    resp = viewer_client.get("/admin/runs?state=bogus")
    assert resp.status_code == 400 and "unknown state" in resp.get_data(as_text=True)


def test_filter_by_task_trigger_and_schedule(app, viewer_client):
    schedule_id = make_schedule(app)
    fired = make_run(app, "demo.noop", trigger="beat", schedule_id=schedule_id)
    cli = make_run(app, "demo.fail", trigger="cli")
    web = make_run(app, "demo.noop", trigger="web")
    assert listed(page(viewer_client, "/admin/runs?task=demo.noop")) == [web, fired]
    assert listed(page(viewer_client, "/admin/runs?trigger=cli")) == [cli]
    assert listed(page(viewer_client, f"/admin/runs?schedule={schedule_id}")) == [fired]
    assert listed(page(viewer_client, "/admin/runs?task=demo.noop&trigger=web")) == [web]
    assert viewer_client.get("/admin/runs?schedule=abc").status_code == 400


def test_filter_by_created_time_range(app, viewer_client):
    old, middle, new = (make_run(app) for _ in range(3))
    with app.app_context(), db.engine.begin() as conn:
        for run_id, day in ((old, 1), (middle, 10), (new, 20)):
            conn.execute(text("UPDATE job_runs SET created_at = :at WHERE id = :id"),
                         {"at": datetime(2026, 3, day, 12, tzinfo=timezone.utc), "id": run_id})
    assert listed(page(viewer_client, "/admin/runs?from=2026-03-05T00:00&to=2026-03-15T00:00")) \
        == [middle]
    assert listed(page(viewer_client, "/admin/runs?from=2026-03-05T00:00")) == [new, middle]
    assert listed(page(viewer_client, "/admin/runs?to=2026-03-15")) == [middle, old]
    html = page(viewer_client, "/admin/runs?from=2026-03-05T00:00")
    assert 'value="2026-03-05T00:00"' in html  # the form keeps the filter
    assert viewer_client.get("/admin/runs?from=yesterday").status_code == 400


def test_search_by_task_id_exact_and_prefix(app, viewer_client):
    wanted = make_run(app, "demo.noop", ["x"])
    make_run(app, "demo.noop", ["x"])
    task_id = run_row(app, wanted).task_id
    html = page(viewer_client, f"/admin/runs?q={task_id}")
    assert listed(html) == [wanted] and "task id is or starts with" in html
    assert listed(page(viewer_client, f"/admin/runs?q={task_id[:10]}")) == [wanted]
    # Shorter than a prefix may be: only an exact task id, else the argument text.
    assert listed(page(viewer_client, f"/admin/runs?q={task_id[:4]}")) == []


def test_search_by_argument_text_in_args_and_kwargs(app, viewer_client):
    in_args = make_run(app, "demo.noop", ["Report for ACME Corp"])
    in_kwargs = make_run(app, "demo.noop", [], {"customer": "acme-42"})
    make_run(app, "demo.noop", ["other"], {"customer": "globex"})
    percent = make_run(app, "demo.noop", ["100% done"])
    html = page(viewer_client, "/admin/runs?q=acme")
    assert listed(html) == [in_kwargs, in_args] and "arguments contain" in html
    # LIKE's wildcards are taken literally.
    assert listed(page(viewer_client, "/admin/runs?q=0%25")) == [percent]
    assert listed(page(viewer_client, "/admin/runs?q=_")) == []
    assert listed(page(viewer_client, "/admin/runs?q=acme&task=demo.fail")) == []


def test_key_paging_over_several_pages(app, viewer_client):
    ids = [make_run(app) for _ in range(7)]
    newest_first = ids[::-1]
    html = page(viewer_client, "/admin/runs?limit=3")
    assert listed(html) == newest_first[:3]
    assert "Newer" not in html
    html = page(viewer_client, link(html, "Older"))
    assert listed(html) == newest_first[3:6]
    older = link(html, "Older")
    assert f"before={newest_first[5]}" in older
    html = page(viewer_client, older)
    assert listed(html) == newest_first[6:]
    assert "Older" not in html
    html = page(viewer_client, link(html, "← Newer"))
    assert listed(html) == newest_first[3:6]
    html = page(viewer_client, link(html, "← Newer"))
    assert listed(html) == newest_first[:3]
    assert "Newer" not in html


def test_key_paging_keeps_the_filter(app, viewer_client):
    failed = [make_run(app, state="failed") for _ in range(3)]
    for _ in range(3):
        make_run(app, state="succeeded")
    html = page(viewer_client, "/admin/runs?state=failed&limit=2")
    assert listed(html) == failed[:0:-1]
    html = page(viewer_client, link(html, "Older"))
    assert listed(html) == failed[:1]


def test_text_search_pages_through_bounded_windows(app, viewer_client, monkeypatch):
    monkeypatch.setattr(queries, "SEARCH_WINDOW", 3)
    match_old = make_run(app, "demo.noop", ["needle"])
    for _ in range(5):
        make_run(app, "demo.noop", ["hay"])
    match_new = make_run(app, "demo.noop", ["needle"])
    html = page(viewer_client, "/admin/runs?q=needle")
    assert listed(html) == [match_new]
    html = page(viewer_client, link(html, "Search older runs"))
    assert listed(html) == []
    html = page(viewer_client, link(html, "Search older runs"))
    assert listed(html) == [match_old]
    assert "Older" not in html and "Search older" not in html


# --- a run ---------------------------------------------------------------------------------


def test_run_page_shows_every_field_and_the_timeline_of_all_attempts(app, viewer_client,
                                                                     worker):
    with app.app_context():
        task_id = enqueue("demo.fail", [], {"message": "third time unlucky", "retries": 2},
                          trigger="cli")
    run = wait_for_state(app, task_id, "failed")
    html = page(viewer_client, f"/admin/runs/{run.id}")
    for value in (task_id, "demo.fail", "cli", run.worker_host, "DemoFailure",
                  "third time unlucky", "Traceback (most recent call last)"):
        assert value in html, value
    events = re.findall(r'<td class="num">(\d+)</td>\s*<td><span class="badge (\w+)">',
                        html)
    assert events == [("0", "queued"), ("1", "running"), ("1", "retrying"), ("2", "running"),
                      ("2", "retrying"), ("3", "running"), ("3", "failed")]
    assert "&#34;message&#34;: &#34;third time unlucky&#34;" in html  # kwargs as JSON
    assert '"retries": 2' not in html  # escaped, never raw


def test_run_page_links_schedule_emails_and_reruns(app, operator_client, worker):
    schedule_id = make_schedule(app, "hourly-report")
    original = make_run(app, "demo.noop", [1], state="succeeded", schedule_id=schedule_id)
    with app.app_context():
        db.session.add(Email(recipients=["ada@example.com"], subject="Your report",
                             text_body="hi", send_at=datetime.now(timezone.utc), state="sent",
                             run_id=original))
        db.session.commit()
        email_id = db.session.scalar(select(Email.id))
    post(operator_client, f"/admin/runs/{original}/rerun")
    with app.app_context():
        copy = db.session.scalar(select(JobRun.id).where(JobRun.rerun_of_id == original))
    html = page(operator_client, f"/admin/runs/{original}")
    assert f'href="/admin/schedules/{schedule_id}">hourly-report' in html
    assert f'href="/admin/emails/{email_id}"' in html and "Your report" in html
    assert f'href="/admin/runs/{copy}"' in html
    html = page(operator_client, f"/admin/runs/{copy}")
    assert f'href="/admin/runs/{original}"' in html and "rerun of" in html
    assert operator_client.get("/admin/runs/999999999").status_code == 404


def test_progress_endpoint_follows_a_long_task_to_the_end(app, viewer_client, worker):
    queued = make_run(app, "demo.long_task")
    assert viewer_client.get(f"/admin/runs/{queued}/progress").get_json() == {
        "id": queued, "state": "queued", "final": False, "current": 0, "total": 0,
        "percent": 0, "message": "Queued", "seconds_left": None, "progress_at": None}
    with app.app_context():
        task_id = enqueue("demo.long_task", [], {"steps": 40}, trigger="web")
    run_id = load_run(app, task_id).id
    url = f"/admin/runs/{run_id}/progress"

    def midway():
        doc = viewer_client.get(url).get_json()
        return doc if doc["state"] == "running" and 0 < doc["current"] < 40 else None

    doc = wait_for(midway, timeout=30, interval=0.02, message="progress midway")
    assert doc["total"] == 40 and doc["percent"] == round(doc["current"] * 100 / 40)
    assert doc["final"] is False and doc["message"]
    doc = wait_for(lambda: (d := viewer_client.get(url).get_json())["final"] and d, timeout=30)
    assert doc["state"] == "succeeded" and doc["percent"] == 100
    assert doc["message"] == "Task completed!" and doc["seconds_left"] is None


# --- actions -------------------------------------------------------------------------------


def test_rerun_starts_a_new_linked_run_with_the_same_arguments(app, operator_client, worker):
    original = make_run(app, "demo.noop", [1, "two"], {"three": 3}, state="succeeded")
    resp = post(operator_client, f"/admin/runs/{original}/rerun")
    assert resp.status_code == 302 and resp.headers["Location"] == f"/admin/runs/{original}"
    with app.app_context():
        copy_id = db.session.scalar(select(JobRun.id).where(JobRun.rerun_of_id == original))
    assert f"Run {original} re-run as run {copy_id}." in flashes(operator_client)
    copy = wait_for_state(app, run_row(app, copy_id).task_id, "succeeded")
    assert copy.trigger == "rerun" and copy.rerun_of_id == original
    assert copy.result == {"args": [1, "two"], "kwargs": {"three": 3}}
    # Again: any number of times.
    post(operator_client, f"/admin/runs/{original}/rerun")
    with app.app_context():
        assert len(db.session.scalars(select(JobRun.id)
                                      .where(JobRun.rerun_of_id == original)).all()) == 2


def test_rerun_is_refused_for_unfinished_runs_and_unknown_tasks(app, operator_client):
    queued = make_run(app, state="queued")
    post(operator_client, f"/admin/runs/{queued}/rerun")
    assert (f"Not done: run {queued} is queued; only finished runs (succeeded, failed, "
            "revoked, lost or skipped) can be re-run.") in flashes(operator_client)
    unknown = make_run(app, "gone.task", state="succeeded")
    post(operator_client, f"/admin/runs/{unknown}/rerun")
    assert f"task gone.task is not known here; run {unknown} cannot" in flashes(operator_client)
    with app.app_context():
        assert db.session.scalar(select(JobRun.id).where(JobRun.rerun_of_id.is_not(None))) \
            is None


def test_retry_of_a_failed_run_is_a_new_linked_run_once(app, operator_client, worker):
    failed = make_run(app, "demo.noop", ["again"], state="failed")
    post(operator_client, f"/admin/runs/{failed}/retry")
    with app.app_context():
        retry_id = db.session.scalar(select(JobRun.id).where(JobRun.rerun_of_id == failed))
    assert f"Run {failed} retried as a new run {retry_id}." in flashes(operator_client)
    retry = wait_for_state(app, run_row(app, retry_id).task_id, "succeeded")
    assert retry.trigger == "retry" and retry.args == ["again"]
    assert run_row(app, failed).state == "failed"  # the failed run stays as it ended
    post(operator_client, f"/admin/runs/{failed}/retry")
    assert (f"run {failed} was already retried as run {retry_id} (succeeded)"
            in flashes(operator_client))
    lost = make_run(app, "demo.noop", state="lost")
    post(operator_client, f"/admin/runs/{lost}/retry")
    assert f"Run {lost} retried as a new run" in flashes(operator_client)


def test_retry_is_refused_for_runs_that_did_not_fail(app, operator_client):
    done = make_run(app, state="succeeded")
    post(operator_client, f"/admin/runs/{done}/retry")
    assert (f"Not done: run {done} is succeeded; only failed or lost runs can be retried."
            in flashes(operator_client))


def test_cancel_scheduled_and_queued_runs(app, operator_client, worker):
    scheduled = make_run(app, state="scheduled")
    post(operator_client, f"/admin/runs/{scheduled}/cancel")
    assert f"Run {scheduled} cancelled." in flashes(operator_client)
    run = run_row(app, scheduled)
    assert run.state == "revoked" and run.events[-1].message == \
        "cancelled by operator@example.com"
    # A queued run whose message is in Redis: cancelled, the worker never starts it.
    with app.app_context():
        task_id = enqueue("demo.long_task", [], {"steps": 200}, trigger="web",
                          queue="runs-held")  # no worker listens there yet
    queued = load_run(app, task_id).id
    post(operator_client, f"/admin/runs/{queued}/cancel")
    assert run_row(app, queued).state == "revoked"
    control = app.extensions["celery"].control
    control.add_consumer("runs-held", destination=[worker.nodename()], reply=True)
    try:
        with app.app_context():
            marker = enqueue("demo.noop", [], trigger="web", queue="runs-held")
        wait_for_state(app, marker, "succeeded")
    finally:
        control.cancel_consumer("runs-held", destination=[worker.nodename()], reply=True)
    run = run_row(app, queued)
    assert run.state == "revoked" and run.started_at is None


def test_cancel_is_refused_for_finished_runs(app, operator_client):
    done = make_run(app, state="succeeded")
    post(operator_client, f"/admin/runs/{done}/cancel")
    assert (f"Not done: run {done} is succeeded; only scheduled, queued or retrying runs "
            "can be cancelled.") in flashes(operator_client)
    assert run_row(app, done).state == "succeeded"


def test_stop_a_running_run(app, operator_client, worker):
    with app.app_context():
        task_id = enqueue("demo.long_task", [], {"steps": 2000}, trigger="web")
    run = wait_for_state(app, task_id, "running")
    post(operator_client, f"/admin/runs/{run.id}/stop")
    assert f"Run {run.id} stopped." in flashes(operator_client)
    run = run_row(app, run.id)
    assert run.state == "revoked" and run.revoked_at is not None
    # The worker goes on with other work, and the stopped run stays stopped.
    with app.app_context():
        marker = enqueue("demo.noop", [], trigger="web")
    wait_for_state(app, marker, "succeeded")
    assert run_row(app, run.id).state == "revoked"


def test_stop_is_refused_for_runs_not_running(app, operator_client):
    queued = make_run(app, state="queued")
    post(operator_client, f"/admin/runs/{queued}/stop")
    assert (f"Not done: run {queued} is queued; only running runs can be stopped."
            in flashes(operator_client))
    assert run_row(app, queued).state == "queued"


def test_actions_on_a_missing_run_are_404(app, operator_client):
    assert post(operator_client, "/admin/runs/999999999/rerun").status_code == 404


def test_broker_down_gives_a_message_not_a_500(app, services):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = create_app(test_settings(services, REDIS_URL=f"redis://127.0.0.1:{port}/0"))
    make_user(down, "ops@example.com", "operator")
    client = down.test_client()
    assert sign_in(client, "ops@example.com").status_code == 302
    done = make_run(app, "demo.noop", [1], state="succeeded")
    running = make_run(app, "demo.noop", state="running")
    queued = make_run(app, "demo.noop", state="queued")

    resp = post(client, f"/admin/runs/{done}/rerun")
    assert resp.status_code == 302
    assert "Not done: the task queue (Redis) is not reachable" in flashes(client)
    with down.app_context():
        copy = db.session.scalar(select(JobRun).where(JobRun.rerun_of_id == done))
        assert copy.state == "failed" and copy.error_type == "BrokerUnavailable"

    post(client, f"/admin/runs/{running}/stop")
    assert "Not done: the task queue (Redis) is not reachable" in flashes(client)
    assert run_row(app, running).state == "running"  # not recorded: it goes on

    post(client, f"/admin/runs/{queued}/cancel")
    assert f"Run {queued} cancelled. The task queue is not reachable" in flashes(client)
    assert run_row(app, queued).state == "revoked"


# --- bulk ----------------------------------------------------------------------------------


def test_bulk_cancel_selected_runs(app, operator_client):
    queued = [make_run(app, state="queued") for _ in range(3)]
    done = make_run(app, state="succeeded")
    resp = post(operator_client, "/admin/runs/bulk", action="cancel", ids=[*queued, done])
    assert resp.status_code == 302
    assert ("Cancelled 3 runs; 1 skipped (not scheduled, queued or retrying)."
            in flashes(operator_client))
    assert [run_row(app, i).state for i in queued] == ["revoked"] * 3
    assert run_row(app, done).state == "succeeded"
    post(operator_client, "/admin/runs/bulk", action="cancel")
    assert "Not done: no runs selected." in flashes(operator_client)


def test_bulk_rerun_selected_runs(app, operator_client, worker):
    originals = [make_run(app, "demo.noop", [i], state="succeeded") for i in range(2)]
    post(operator_client, "/admin/runs/bulk", action="rerun", ids=originals)
    assert "Re-ran 2 runs." in flashes(operator_client)
    with app.app_context():
        copies = db.session.execute(select(JobRun.task_id, JobRun.rerun_of_id)
                                    .where(JobRun.trigger == "rerun")).all()
    assert sorted(c.rerun_of_id for c in copies) == sorted(originals)
    for copy in copies:
        wait_for_state(app, copy.task_id, "succeeded")


def test_bulk_by_filter_says_how_many_and_acts_on_them(app, operator_client):
    mine = [make_run(app, "demo.long_task", state="queued") for _ in range(3)]
    other = make_run(app, "demo.noop", state="queued")
    html = page(operator_client, "/admin/runs?task=demo.long_task&state=queued")
    assert 'data-confirm="Cancel all 3 runs matching the filter?' in html
    resp = post(operator_client, "/admin/runs/bulk", scope="filter", action="cancel",
                task="demo.long_task", state="queued")
    assert resp.headers["Location"] == "/admin/runs?state=queued&task=demo.long_task"
    assert "Cancelled 3 runs." in flashes(operator_client)
    assert [run_row(app, i).state for i in mine] == ["revoked"] * 3
    assert run_row(app, other).state == "queued"


def test_bulk_is_bounded(app, operator_client, monkeypatch):
    monkeypatch.setattr(actions, "BULK_MAX", 2)
    runs = [make_run(app, state="queued") for _ in range(3)]
    html = page(operator_client, "/admin/runs?state=queued")
    assert 'data-confirm="Cancel the newest 2 of 3 runs matching the filter?' in html
    post(operator_client, "/admin/runs/bulk", action="cancel", ids=runs)
    assert "Not done: at most 2 runs per cancel." in flashes(operator_client)
    post(operator_client, "/admin/runs/bulk", scope="filter", action="cancel", state="queued")
    assert [run_row(app, i).state for i in runs] == ["queued", "revoked", "revoked"]
    # Re-runs and retries publish each run: a lower bound of their own.
    monkeypatch.setattr(actions, "BULK_START_MAX", 1)
    html = page(operator_client, "/admin/runs?state=revoked")
    assert 'data-confirm="Re-run the newest 1 of 2 runs matching the filter?' in html
    assert 'data-confirm="Cancel all 2 runs matching the filter?' in html


# --- roles and escaping --------------------------------------------------------------------


def test_viewers_see_the_pages_without_actions_and_get_403(app, viewer_client):
    failed = make_run(app, state="failed")
    html = page(viewer_client, "/admin/runs?state=failed")
    assert listed(html) == [failed]
    assert 'name="ids"' not in html and "Re-run" not in html and "runs/bulk" not in html
    html = page(viewer_client, f"/admin/runs/{failed}")
    assert "Retry" not in html and 'method="post" action="/admin/runs' not in html
    token = csrf_token(viewer_client, "/admin/runs")
    for action in ("rerun", "retry", "cancel", "stop"):
        resp = viewer_client.post(f"/admin/runs/{failed}/{action}", data={"csrf_token": token})
        assert resp.status_code == 403, action
    resp = viewer_client.post("/admin/runs/bulk", data={"csrf_token": token,
                                                        "action": "cancel", "ids": [failed]})
    assert resp.status_code == 403
    assert run_row(app, failed).state == "failed"


def test_operators_see_the_actions_that_apply(app, operator_client):
    failed = make_run(app, state="failed")
    html = page(operator_client, f"/admin/runs/{failed}")
    visible = re.findall(r'action="/admin/runs/\d+/(\w+)" data-states="[^"]*" '
                         r'data-confirm="[^"]*">', html)
    assert visible == ["rerun", "retry"]  # cancel and stop are there, but hidden
    assert "Retry as a new run" in html


def test_data_is_escaped_on_both_pages(app, operator_client, worker):
    with app.app_context():
        noop = enqueue("demo.noop", [XSS_SCRIPT, XSS_IMG], {XSS_IMG: XSS_SCRIPT}, trigger="web")
        fail = enqueue("demo.fail", [], {"message": XSS_SCRIPT + XSS_IMG}, trigger="web")
    noop_run = wait_for_state(app, noop, "succeeded")
    fail_run = wait_for_state(app, fail, "failed")
    assert noop_run.result["args"] == [XSS_SCRIPT, XSS_IMG]
    pages = [page(operator_client, "/admin/runs"),
             page(operator_client, f"/admin/runs/{noop_run.id}"),
             page(operator_client, f"/admin/runs/{fail_run.id}")]
    for html in pages:
        assert XSS_SCRIPT not in html and "<img" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
        # Nothing inline: the CSP forbids it.
        assert not re.search(r"<script>|\sstyle=|<[^>]+\son\w+=", html)
    assert "DemoFailure: &lt;script&gt;" in pages[2]  # the exception message, in the timeline
