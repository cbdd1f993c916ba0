"""The dashboard and the workers page, for a viewer: with data, empty, and with Redis down."""
from __future__ import annotations

import socket
from datetime import timedelta

from sqlalchemy import text

from app import create_app
from models import db, utcnow
from scheduler.beat import schedules
from tests.factories import make_run
from tests.helpers import sign_in, test_settings, wait_for


def page(client, path: str) -> str:
    resp = client.get(path)
    assert resp.status_code == 200, (path, resp.status_code)
    return resp.get_data(as_text=True)


def test_dashboard_of_an_empty_database(viewer_client):
    html = page(viewer_client, "/admin/")
    assert "<svg" in html and "Runs per hour by state, last 24 h" in html
    for note in ("No runs in the last 24 hours.", "No runs in the last 7 days.",
                 "No runs in the last 30 days.",
                 "No finished runs in the last 24 hours.", "No failed runs.",
                 "No enabled schedules.", "none scheduled"):
        assert note in html


def test_dashboard_shows_the_figures(app, viewer_client):
    now = utcnow()
    with app.app_context():
        for s in (1, 2, 3):
            make_run(app, state="succeeded", created=now - timedelta(hours=2), duration_s=s)
        make_run(app, "demo.fail", state="failed", created=now - timedelta(hours=1), duration_s=4,
                 error_type="ValueError", error_message="it broke")
        make_run(app, "mail.send", state="scheduled", created=now, eta=now + timedelta(hours=1))
        schedules.create("nightly report", {"task": "demo.noop", "cron": "0 3 * * *"})
        db.session.commit()

    html = page(viewer_client, "/admin/")
    assert "Runs per day by state, last 7 days" in html
    assert "Runs per day by state, last 30 days" in html
    assert "succeeded 3" in html and "failed 1" in html  # the bars' tooltips
    # Today's runs are read live (no rollup yet) in the 7-day and 30-day charts.
    assert html.count(f"{now:%d %b}: succeeded 3") == 2
    assert "25.0 %" in html  # 1 failed of 4 finished
    assert "1 failed or lost of 4 finished" in html
    assert "/admin/runs?state=failed&amp;task=demo.fail" in html
    assert "ValueError" in html and "it broke" in html
    assert "nightly report" in html and "every day at 03:00" in html
    assert "mail.send" in html  # the next countdown


def test_recent_failures_escape_the_error_message(app, viewer_client):
    with app.app_context():
        make_run(app, "demo.fail", state="failed", created=utcnow(), duration_s=1,
                 error_type="<b>Err</b>", error_message='<script>alert("x")</script>')
        db.session.commit()
    html = page(viewer_client, "/admin/")
    assert "&lt;script&gt;alert(" in html and "&lt;b&gt;Err&lt;/b&gt;" in html
    assert "<script>alert" not in html and "<b>Err" not in html


def test_workers_page_of_an_empty_database(viewer_client):
    html = page(viewer_client, "/admin/system")
    assert "Workers and queues" in html and "No beat leads" in html
    assert "<td>celery</td>" in html


def test_workers_page_shows_the_worker_and_the_beat_leader(app, viewer_client, worker, beats,
                                                          services):
    beat = beats.start()
    with app.app_context():
        make_run(app, state="queued", created=utcnow(), queue="celery")
        db.session.commit()
    leader = f"Leader: <strong>{socket.gethostname()}:{beat.proc.pid}</strong>"
    html = wait_for(lambda: (lambda h: h if leader in h else None)(
        page(viewer_client, "/admin/system")), timeout=60, message="the beat to lead")
    assert worker.nodename() in html
    assert "leading" in html
    assert "did not answer" not in html and "No worker answered" not in html

    # A second beat stands by; a heartbeat older than 10 s is shown as stale.
    with app.app_context():
        db.session.execute(text(
            "INSERT INTO beat_heartbeats (node, host, pid, role, started_at, last_tick_at) "
            "VALUES ('gone-host:1', 'gone-host', 1, 'standby', now() - interval '1 day', "
            "now() - interval '1 minute')"))
        db.session.commit()
    html = page(viewer_client, "/admin/system")
    assert "gone-host:1" in html and "stale" in html


def test_pages_answer_when_the_broker_is_down(services, viewer_client):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = create_app(test_settings(services, REDIS_URL=f"redis://127.0.0.1:{port}/0"))
    client = down.test_client()
    assert sign_in(client, "viewer@example.com").status_code == 302
    html = page(client, "/admin/system")
    assert "The broker (Redis) did not answer" in html
    assert "Connection refused" in html
    assert "No beat leads" in html  # the rest of the page still reads PostgreSQL
    page(client, "/admin/")
