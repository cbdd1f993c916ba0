"""/healthz, /readyz and /metrics."""
from __future__ import annotations

import socket
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from app import create_app
from tests.factories import make_run
from tests.helpers import CeleryProcess, Services, test_settings, wait_for


def closed_port() -> int:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def other_redis_db(url: str, number: int = 7) -> str:
    """The same Redis server, another database: no worker of the session listens there."""
    if url.startswith("redis+socket://"):
        return f"{url.split('?')[0]}?virtual_host={number}"
    base, _, _ = url.rpartition("/")
    return f"{base}/{number}" if base.count("/") >= 2 else f"{url.rstrip('/')}/{number}"


def samples(body: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


# -- /healthz -------------------------------------------------------------------------------

def test_healthz_touches_nothing(services):
    # A database and a broker where nothing listens: the process itself is alive.
    port = closed_port()
    app = create_app(test_settings(services, DATABASE_URL=f"postgresql://x@127.0.0.1:{port}/x",
                                   REDIS_URL=f"redis://127.0.0.1:{port}/0"))
    resp = app.test_client().get("/healthz")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok"}


# -- /metrics -------------------------------------------------------------------------------

def test_metrics_from_the_database(app, client, services, worker):
    now = datetime.now(timezone.utc)
    engine = create_engine(services.database_url)
    with engine.begin() as conn:
        for seconds in (0.3, 2.0, 2.0):
            make_run(app, "t.alpha", state="succeeded", created=now - timedelta(minutes=5),
                     duration_s=seconds, conn=conn)
        make_run(app, "t.alpha", state="failed", created=now - timedelta(minutes=5),
                 duration_s=40.0, conn=conn)
        make_run(app, "t.alpha", state="succeeded", created=now - timedelta(days=2),
                 duration_s=1.0, conn=conn)  # outside 24 h
        make_run(app, "t.beta", state="queued", created=now - timedelta(minutes=1), conn=conn)
        make_run(app, "t.beta", state="scheduled", created=now, eta=now + timedelta(hours=1),
                 conn=conn)
        make_run(app, "t.beta", state="scheduled", created=now - timedelta(minutes=2),
                 eta=now - timedelta(minutes=1), conn=conn)
        conn.execute(text(
            "INSERT INTO emails (recipients, subject, text_body, send_at, state) VALUES "
            "('[\"a@example.com\"]', 's', 't', now(), 'queued'), "
            "('[\"a@example.com\"]', 's', 't', now(), 'sent')"))
        conn.execute(text(
            "INSERT INTO beat_heartbeats (node, host, pid, role, started_at, last_tick_at) "
            "VALUES ('b1', 'h', 1, 'leader', now(), now() - interval '5 seconds')"))
    engine.dispose()

    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    m = samples(resp.get_data(as_text=True))

    assert m[("beatkeeper_job_runs_24h", (("state", "succeeded"), ("task", "t.alpha")))] == 3
    assert m[("beatkeeper_job_runs_24h", (("state", "failed"), ("task", "t.alpha")))] == 1
    assert m[("beatkeeper_job_runs_24h", (("state", "scheduled"), ("task", "t.beta")))] == 2

    def bucket(le: str) -> float:
        return m[("beatkeeper_job_run_duration_seconds_bucket", (("le", le), ("task", "t.alpha")))]

    assert bucket("0.1") == 0 and bucket("0.5") == 1 and bucket("2.5") == 3
    assert bucket("30.0") == 3 and bucket("60.0") == 4 and bucket("+Inf") == 4
    assert m[("beatkeeper_job_run_duration_seconds_count", (("task", "t.alpha"),))] == 4
    assert m[("beatkeeper_job_run_duration_seconds_sum", (("task", "t.alpha"),))] \
        == pytest.approx(44.3)
    assert ("beatkeeper_job_run_duration_seconds_count", (("task", "t.beta"),)) not in m

    assert m[("beatkeeper_job_runs_pending", (("state", "scheduled"),))] == 2
    assert m[("beatkeeper_job_runs_pending", (("state", "queued"),))] == 1
    assert m[("beatkeeper_job_runs_pending", (("state", "running"),))] == 0
    assert m[("beatkeeper_job_runs_scheduled_overdue", ())] == 1
    assert m[("beatkeeper_emails_pending", (("state", "queued"),))] == 1
    assert m[("beatkeeper_emails_pending", (("state", "scheduled"),))] == 0
    assert m[("beatkeeper_emails_needs_review", ())] == 0
    assert 4 <= m[("beatkeeper_beat_leader_tick_age_seconds", ())] < 60
    assert m[("beatkeeper_beats_alive", (("role", "leader"),))] == 1
    assert m[("beatkeeper_broker_up", ())] == 1
    assert m[("beatkeeper_workers_online", ())] >= 1
    assert ("beatkeeper_broker_queue_messages", (("queue", "celery"),)) in m


def test_metrics_without_a_leader_and_broker_down(services):
    down = create_app(test_settings(services, REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0"))
    started = time.monotonic()
    resp = down.test_client().get("/metrics")
    assert time.monotonic() - started < 5.0
    assert resp.status_code == 200
    m = samples(resp.get_data(as_text=True))
    assert m[("beatkeeper_broker_up", ())] == 0
    assert m[("beatkeeper_workers_online", ())] == 0
    assert m[("beatkeeper_beat_leader_tick_age_seconds", ())] == float("inf")


def test_metrics_token(services):
    app = create_app(test_settings(services, METRICS_TOKEN="s3cret-token"))
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "s3cret-token"}).status_code == 401
    resp = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert resp.status_code == 200 and "beatkeeper_job_runs_pending" in resp.get_data(True)
    # Only GET: no form posts to it, so CSRF has nothing to protect.
    assert client.post("/metrics").status_code == 405


# -- /readyz --------------------------------------------------------------------------------

def test_readyz_follows_beat_and_worker(services, beats, tmp_path):
    # The app and its own worker use another Redis database, so that only this worker can
    # answer the app's ping, and stopping it makes the workers check fail.
    redis_url = other_redis_db(services.redis_url)
    app = create_app(test_settings(services, REDIS_URL=redis_url, READY_BEAT_MAX_AGE_S=3.0))
    client = app.test_client()

    resp = client.get("/readyz")
    assert resp.status_code == 503
    checks = resp.get_json()["checks"]
    assert checks["database"]["ok"] and checks["broker"]["ok"]
    assert not checks["beat"]["ok"] and not checks["workers"]["ok"]

    own = CeleryProcess(Services(services.database_url, redis_url),
                        tmp_path / "ready-worker.log", name=f"ready{uuid.uuid4().hex[:6]}")
    own.start(app.extensions["celery"])
    try:
        beat = beats.start()
        body = wait_for(lambda: (r := client.get("/readyz")).status_code == 200 and r.get_json(),
                        timeout=60, message="/readyz 200")
        assert body["status"] == "ready"
        assert body["checks"]["workers"]["answered"] == [own.nodename()]
        assert body["checks"]["beat"]["age_s"] < 3.0

        beat.stop()
        body = wait_for(lambda: (r := client.get("/readyz")).status_code == 503 and r.get_json(),
                        timeout=30, message="/readyz 503 after the beat stopped")
        assert not body["checks"]["beat"]["ok"] and body["checks"]["workers"]["ok"]

        beats.start()
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout=60,
                 message="/readyz 200 after the beat came back")

        own.stop()
        started = time.monotonic()
        resp = client.get("/readyz")
        assert time.monotonic() - started < 5.0
        assert resp.status_code == 503
        checks = resp.get_json()["checks"]
        assert not checks["workers"]["ok"] and checks["beat"]["ok"] and checks["broker"]["ok"]
    finally:
        own.stop()


def test_readyz_broker_down_is_fast(services):
    down = create_app(test_settings(services, REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0"))
    started = time.monotonic()
    resp = down.test_client().get("/readyz")
    assert time.monotonic() - started < 5.0
    assert resp.status_code == 503
    checks = resp.get_json()["checks"]
    assert checks["database"]["ok"]
    assert checks["broker"] == {"ok": False, "error": "ConnectionError"}
    assert checks["workers"]["error"] == "broker unavailable"
