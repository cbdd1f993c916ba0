"""Fixtures: real PostgreSQL and Redis (embedded, or TEST_DATABASE_URL / TEST_REDIS_URL), the
schema from `alembic upgrade head`, a real `celery worker` process, and the Flask app."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
import redis
from sqlalchemy import create_engine, text

from app import create_app
from app.embedded import EmbeddedServices
from models import JobRun, db, utcnow

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
#: Step length of demo.long_task in the worker under test (the seed's is 1 s).
DEMO_STEP_S = 0.05
WORKER_READY_TIMEOUT_S = 60.0


class SmtpSink:
    """A real SMTP server (aiosmtpd) in the test process that keeps what it receives.

    Recipients containing "reject" are refused with a permanent 550, as a real server does;
    for recipients containing "slow" the server keeps the message but answers only after 8 s.
    stop() and start() again on the same port simulate an SMTP outage.
    """

    def __init__(self) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()
        self.controller = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if "reject" in address:
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        with self.lock:
            self.messages.append(message)
        if any("slow" in rcpt for rcpt in envelope.rcpt_tos):
            await asyncio.sleep(8)
        return "250 Message accepted for delivery"

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def to(self, address: str) -> list[EmailMessage]:
        """The messages received for this recipient."""
        with self.lock:
            return [m for m in self.messages
                    if address in [a.addr_spec for a in m["To"].addresses]]


@dataclass
class Services:
    database_url: str
    redis_url: str

    def redis(self) -> redis.Redis:
        return redis_client(self.redis_url)


def redis_client(url: str) -> redis.Redis:
    """A redis-py client for a broker URL (redis:// or kombu's redis+socket://)."""
    if url.startswith("redis+socket://"):
        return redis.Redis(unix_socket_path=url[len("redis+socket://"):])
    return redis.Redis.from_url(url)


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
    _reset_schema(db_url)
    yield svc
    if embedded is not None:
        embedded.stop()


def _reset_schema(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    # The schema comes from the migrations, as in production.
    result = subprocess.run(
        [str(BIN / "flask"), "--app", "app", "db", "upgrade"],
        cwd=PROJECT, env=dict(os.environ, DATABASE_URL=url, REDIS_URL="redis://unused"),
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr


#: Settings shared by the in-process app and the worker and beat processes of the tests:
#: short e-mail delays and retries, and failure alerts to a test address.
SHARED_SETTINGS = {
    "DEMO_STEP_SECONDS": DEMO_STEP_S,
    "PROGRESS_MIN_INTERVAL_S": 0.0,
    "DEMO_EMAIL_DELAY_S": 3.0,
    "MAIL_RETRY_BASE_S": 0.2,
    "MAIL_RETRY_MAX_S": 1.0,
    "MAIL_TIMEOUT_S": 5.0,
    "ALERT_QUIET_S": 4.0,
    "ALERT_EMAILS": "alerts@example.com",
}


@pytest.fixture(scope="session")
def smtp() -> SmtpSink:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


def test_settings(services: Services, **overrides: Any) -> dict[str, Any]:
    settings = {
        "TESTING": True,
        "DATABASE_URL": services.database_url,
        "REDIS_URL": services.redis_url,
        "SECRET_KEY": "test-secret",
        **SHARED_SETTINGS,
        **overrides,
    }
    settings["ALERT_EMAILS"] = [a for a in str(settings["ALERT_EMAILS"]).split(",") if a]
    return settings


test_settings.__test__ = False  # a helper, not a test


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
        conn.execute(text("TRUNCATE job_events, job_runs, schedules, beat_heartbeats, emails, "
                          "failure_alerts, users, job_run_daily CASCADE"))
    engine.dispose()
    yield


class CeleryProcess:
    """A real `celery -A worker worker|beat` subprocess with the test services' URLs."""

    def __init__(self, services: Services, log_path: Path, kind: str = "worker",
                 name: str = "test", smtp: SmtpSink | None = None,
                 queues: str | None = None, **env: str):
        self.services = services
        self.log_path = log_path
        self.kind = kind
        self.name = name
        self.queues = queues
        self.env = dict(
            os.environ,
            DATABASE_URL=services.database_url,
            REDIS_URL=services.redis_url,
            PYTHONUNBUFFERED="1",
            **{k: str(v) for k, v in SHARED_SETTINGS.items()},
            **env,
        )
        if smtp is not None:
            self.env.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=str(smtp.port))
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        base = [str(BIN / "celery"), "-A", "worker", self.kind, "--loglevel", "INFO"]
        if self.kind == "beat":
            return base
        return base + ["--concurrency", "2", "--pool", "prefork", "--hostname",
                       f"{self.name}@%h", "--without-gossip", "--without-mingle"] + (
                           ["--queues", self.queues] if self.queues else [])

    def start(self, celery_app=None) -> "CeleryProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), cwd=PROJECT, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if celery_app is not None:
            self.wait_ready(celery_app)
        return self

    def wait_ready(self, celery_app) -> None:
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start:\n{self.log_tail()}")
            if celery_app.control.ping(destination=[self.nodename()], timeout=0.5):
                return
        raise RuntimeError(f"{self.kind} not ready:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def nodename(self) -> str:
        import socket

        return f"{self.name}@{socket.gethostname()}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the main process only (kill -9 leaves its children to die on their own)."""
        os.kill(self.proc.pid, sig)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


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


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1,
             message: str = "condition") -> Any:
    """Poll until predicate() returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def load_run(app, task_id: str) -> JobRun | None:
    with app.app_context():
        run = db.session.query(JobRun).filter_by(task_id=task_id).one_or_none()
        if run is not None:
            run.events  # load the timeline before the session closes
            db.session.expunge(run)
        return run


def wait_for_state(app, task_id: str, *states: str, timeout: float = 30.0) -> JobRun:
    def check():
        run = load_run(app, task_id)
        return run if run is not None and run.state in states else None

    return wait_for(check, timeout, message=f"run {task_id} to reach {states}")


def report(app, task_id: str, state: str | None = None, *, result: Any = None,
           error: BaseException | None = None, traceback: str | None = None,
           progress: tuple[int, int, str] | None = None) -> None:
    """Write what a worker reports about a run (an outcome, progress) through the worker's
    own writer (scheduler.recorder), for tests that make runs in a given state."""
    from models.states import RunState
    from scheduler.recorder import Recorder

    with app.app_context():
        rec = Recorder(db.engine, flush_s=0.01, max_pending=10, retry_max_s=1.0)
    try:
        now = utcnow()
        if progress is not None:
            rec.progress(task_id, *progress, now)
        if state is not None:
            message = f"{type(error).__name__}: {error}" if error is not None else None
            rec.finish(task_id, RunState(state), now, result=json.dumps(result),
                       error_type=type(error).__name__ if error is not None else None,
                       error_message=str(error) if error is not None else None,
                       traceback=traceback, message=message)
        assert rec.flush(10), "the report was not written"
    finally:
        rec.stop(1)


def csrf_token(client, path: str = "/") -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


#: The password of every user made by the fixtures below.
PASSWORD = "correct horse battery"


def make_user(app, email: str, role: str):
    from app.auth import create_user

    with app.app_context():
        return create_user(email, role, PASSWORD).id


def sign_in(client, email: str, password: str = PASSWORD):
    token = csrf_token(client, "/login")
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": token})


def _signed_in_client(app, role: str):
    make_user(app, f"{role}@example.com", role)
    client = app.test_client()
    assert sign_in(client, f"{role}@example.com").status_code == 302
    return client


@pytest.fixture
def viewer_client(app, services):
    return _signed_in_client(app, "viewer")


@pytest.fixture
def operator_client(app, services):
    return _signed_in_client(app, "operator")


@pytest.fixture
def admin_client(app, services):
    return _signed_in_client(app, "admin")


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
