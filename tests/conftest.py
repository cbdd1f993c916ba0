"""Fixtures: real PostgreSQL and Redis (embedded, or TEST_DATABASE_URL / TEST_REDIS_URL), the
schema from `alembic upgrade head`, a real `celery worker` process, and the Flask app. The
helpers they use are in tests/helpers.py; the run factory is in tests/factories.py."""
from __future__ import annotations

import os
import threading

import pytest
from sqlalchemy import create_engine, text

from app import create_app
from app.embedded import EmbeddedServices
from tests.helpers import (
    IN_CI, CeleryProcess, Services, SmtpSink, reset_schema, signed_in_client, test_settings,
)


@pytest.fixture(scope="session")
def services(tmp_path_factory) -> Services:
    db_url = os.environ.get("TEST_DATABASE_URL")
    redis_url = os.environ.get("TEST_REDIS_URL")
    embedded = None
    if not (db_url and redis_url):
        embedded = EmbeddedServices(tmp_path_factory.mktemp("embedded"))
        urls = embedded.start()
        db_url = db_url or urls["DATABASE_URL"]
        redis_url = redis_url or urls["REDIS_URL"]
    svc = Services(db_url, redis_url)
    svc.redis().flushdb()
    reset_schema(db_url)
    yield svc
    if embedded is not None:
        embedded.stop()


@pytest.fixture(scope="session")
def smtp() -> SmtpSink:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def app(services: Services, smtp: SmtpSink):
    return create_app(test_settings(services, MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp.port))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(autouse=True)
def clean_tables(request):
    """Empty the tables before each test that uses the database."""
    if "services" not in request.fixturenames:
        yield
        return
    services = request.getfixturevalue("services")
    engine = create_engine(services.database_url)
    with engine.begin() as conn:
        # No RESTART IDENTITY: a run still finishing from an earlier test must not find
        # its old id reused by a new row.
        conn.execute(text("TRUNCATE job_runs, job_events, schedules, beat_heartbeats, emails, "
                          "failure_alerts, users, job_run_daily CASCADE"))
    engine.dispose()
    yield


@pytest.fixture(scope="session")
def worker(app, services, smtp, tmp_path_factory):
    proc = CeleryProcess(services, tmp_path_factory.mktemp("worker") / "worker.log", smtp=smtp)
    proc.start(app.extensions["celery"])
    yield proc
    proc.stop()


@pytest.fixture
def beats(services, smtp, tmp_path):
    """Start beat processes on demand: `beats.start()`; all are stopped after the test."""

    class Beats(list):
        def start(self) -> CeleryProcess:
            proc = CeleryProcess(services, tmp_path / f"beat{len(self)}.log", kind="beat",
                                 smtp=smtp)
            self.append(proc.start())
            return proc

    started = Beats()
    yield started
    for proc in started:
        proc.stop()


@pytest.fixture
def viewer_client(app, services):
    return signed_in_client(app, "viewer")


@pytest.fixture
def operator_client(app, services):
    return signed_in_client(app, "operator")


@pytest.fixture
def admin_client(app, services):
    return signed_in_client(app, "admin")


@pytest.fixture(scope="session")
def live_server(app):
    """The app served over HTTP in a thread, for the browser."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright; missing in CI is a failure, elsewhere a skip."""
    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        if IN_CI:
            pytest.fail("Chromium is missing at /usr/bin/chromium (./test installs it)")
        pytest.skip("Chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update"],
        )
        yield browser
        browser.close()
