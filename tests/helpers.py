"""Helpers of the tests (no fixtures: those are in conftest.py): the test services and
settings, a real SMTP server, real `celery worker|beat` processes, waiting for a run, and
signing in."""
from __future__ import annotations

import asyncio
import shutil
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import redis
from sqlalchemy import create_engine, text

from app.embedded import redis_server_binary
from models import JobRun, db
from scheduler.broker import redis_client

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
#: Step length of demo.long_task in the worker under test (the seed's is 1 s).
DEMO_STEP_S = 0.05
WORKER_READY_TIMEOUT_S = 60.0
#: The tests' Redis commands wait this long (the product's client gives up after 1 s).
REDIS_TIMEOUT_S = 30.0


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
        return redis_client(self.redis_url, timeout_s=REDIS_TIMEOUT_S)


def reset_schema(url: str) -> None:
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


def run_row(app, run_id: int) -> JobRun:
    """A run by id, with its timeline, detached from the session."""
    with app.app_context():
        run = db.session.get(JobRun, run_id)
        run.events  # noqa: B018 - load the timeline before the session closes
        db.session.expunge(run)
        return run


def csrf_token(client, path: str = "/") -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


#: The password of every user made by make_user.
PASSWORD = "correct horse battery"


def make_user(app, email: str, role: str):
    from app.auth import create_user

    with app.app_context():
        return create_user(email, role, PASSWORD).id


def sign_in(client, email: str, password: str = PASSWORD):
    token = csrf_token(client, "/login")
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": token})


def signed_in_client(app, role: str):
    make_user(app, f"{role}@example.com", role)
    client = app.test_client()
    assert sign_in(client, f"{role}@example.com").status_code == 302
    return client


#: What the test workers, beat and apps use: quick recovery, a short wait for buffered records.
RECOVERY_SETTINGS = {"REQUEUE_AFTER_S": 20.0, "REQUEUE_AFTER_LOSS_S": 1.0,
                     "RECORD_RETRY_MAX_S": 0.5}


class PrivateRedis:
    """A redis-server of one test (the embedded one's binary and options, append-only file on)
    that can die without saving and come back empty on the same socket."""

    def __init__(self) -> None:
        # A short folder: a unix socket path has at most 107 bytes.
        self.folder = Path(tempfile.mkdtemp(prefix="bk7-"))
        self.socket = self.folder / "redis.sock"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket}"

    def client(self) -> redis.Redis:
        return redis_client(self.url, 5)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(redis_server_binary()), "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--dir", str(self.folder), "--appendonly", "yes",
             "--save", "", "--logfile", str(self.folder / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, timeout=30, message="the private Redis to start")

    def _answers(self) -> bool:
        try:
            return self.client().ping()
        except (redis.RedisError, OSError):
            return False

    def lose_everything(self) -> None:
        """SHUTDOWN NOSAVE, then remove the append-only file: it comes back empty."""
        try:
            self.client().shutdown(nosave=True)
        except redis.ConnectionError:
            pass
        self.proc.wait(timeout=10)
        (self.folder / "appendonly.aof").unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)
