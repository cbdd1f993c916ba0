"""The benchmark harness: services, real worker and beat processes, the app, and small helpers.

Services are started the way the tests start theirs: embedded PostgreSQL and Redis in a
temporary folder, unless BENCH_DATABASE_URL and BENCH_REDIS_URL are both set (that database's
`public` schema is then dropped and recreated from the migrations, and that Redis database is
flushed). Everything started here is stopped by Harness.close(), which `with Harness(...)`
calls on the way out, also on Ctrl-C, SIGTERM or an exception.
"""
from __future__ import annotations

import ctypes
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from models.states import UNFINISHED_STATES, names

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
#: Tables emptied between two sides of a benchmark.
BENCH_TABLES = "job_events, job_runs, schedules, emails"

PR_SET_PDEATHSIG = 1
# Loaded here, not in the forked child, where loading a library could deadlock.
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def _die_with_parent() -> None:
    """In a child: get SIGTERM if the benchmark itself dies, even by kill -9."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# --- figures -------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def p50(values: Sequence[float]) -> float:
    return percentile(values, 50)


def p95(values: Sequence[float]) -> float:
    return percentile(values, 95)


def p99(values: Sequence[float]) -> float:
    return percentile(values, 99)


def median(values: Sequence[float]) -> float:
    """The usual median (mean of the two middle values for an even count)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def fmt_s(seconds: float) -> str:
    """A duration for people: milliseconds under a second, else seconds."""
    if seconds is None or math.isnan(seconds):
        return "n/a"
    if abs(seconds) < 1.0:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_mib(nbytes: float) -> str:
    if nbytes is None or math.isnan(nbytes):
        return "n/a"
    return f"{nbytes / 2**20:.1f} MiB"


def fmt_plain(value: float) -> str:
    """A bare number (a ratio against a target such as `<= 1.0`)."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.2f}"


def fmt_ratio(ours: float, baseline: float) -> str:
    if any(v is None or math.isnan(v) for v in (ours, baseline)) or baseline <= 0:
        return "n/a"
    return f"{ours / baseline:.2f}x"


def summary(values: Sequence[float]) -> str:
    return f"p50 {fmt_s(p50(values))} p99 {fmt_s(p99(values))}"


def sides(round_no: int, ours: Any = None, baseline: Any = None) -> list[tuple[str, Any]]:
    """ABBA order: ours first in even rounds, baseline first in odd ones."""
    return [("ours", ours), ("baseline", baseline)][:: 1 if round_no % 2 == 0 else -1]


def seconds_between(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier).total_seconds()



def say(line: str) -> None:
    print(line, flush=True)


@dataclass
class Goal:
    name: str
    value: float
    target: str
    ok: bool
    #: How the value is written: a duration by default.
    fmt: Callable[[float], str] = fmt_s

    def line(self) -> str:
        return (f"goal {self.name}: {self.fmt(self.value)} ({self.target}) "
                f"{'ok' if self.ok else 'short'}")


@dataclass
class Goals:
    """Collects the goals met or missed by the benchmarks; printed at the end."""

    items: list[Goal] = field(default_factory=list)

    def goal(self, name: str, value: float, target: str, ok: bool,
             fmt: Callable[[float], str] = fmt_s) -> Goal:
        item = Goal(name, value, target, bool(ok), fmt)
        self.items.append(item)
        return item

    def lines(self) -> list[str]:
        return [g.line() for g in self.items]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1,
               what: str = "condition") -> Any:
    """Poll until predicate() is truthy and return its value; TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- processes -----------------------------------------------------------------------------


class CeleryProcess:
    """`celery -A worker worker|beat` in its own process group, output to a log file.

    `app` is the module given to `-A` (bench.plain_worker for the plain Celery baselines)."""

    def __init__(self, kind: str, env: dict[str, str], log_path: Path, name: str = "bench",
                 app: str = "worker"):
        self.kind = kind
        self.app = app
        self.env = env
        self.log_path = log_path
        self.name = name
        self.proc: subprocess.Popen | None = None

    @property
    def nodename(self) -> str:
        return f"{self.name}@{socket.gethostname()}"

    def argv(self) -> list[str]:
        base = [str(BIN / "celery"), "-A", self.app, self.kind, "--loglevel", "INFO"]
        if self.kind == "beat":
            return base
        return base + ["--pool", "prefork", "--concurrency", "2", "--hostname", self.nodename,
                       "--without-gossip", "--without-mingle"]

    def start(self) -> "CeleryProcess":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), cwd=PROJECT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            )
        return self

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"celery {self.kind} exited:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM to the process group (warm shutdown), then SIGKILL when it lingers."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                _killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    say(f"celery {self.kind} did not stop in {STOP_TIMEOUT_S:.0f} s; killing")
            # Prefork children left behind by a main process that is gone.
            _killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        finally:
            self.proc = None


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def tree_rss(pid: int) -> int:
    """Resident set size in bytes of a process plus all its descendants (sum of rss; pages
    shared after a fork are counted once per process)."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return total


def redis_client(url: str):
    """A redis-py client for a broker URL (redis:// or kombu's redis+socket://)."""
    import redis

    if url.startswith("redis+socket://"):
        return redis.Redis(unix_socket_path=url[len("redis+socket://"):])
    return redis.Redis.from_url(url)


def reset_schema(url: str) -> None:
    """Drop the public schema and build it again with the migrations, as in production."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    result = subprocess.run(
        [str(BIN / "flask"), "--app", "app", "db", "upgrade"],
        cwd=PROJECT, env=dict(os.environ, DATABASE_URL=url, REDIS_URL="redis://unused"),
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"flask db upgrade failed:\n{result.stderr}")


# --- the harness ---------------------------------------------------------------------------


class Harness:
    """Services, one worker, one beat and the in-process app, for the benchmarks.

    Use as a context manager; close() stops whatever was started, in reverse order.
    """

    def __init__(self, quick: bool = False) -> None:
        self.quick = quick
        self.goals = Goals()
        self.tmpdir: Path | None = None
        self.embedded = None
        self.database_url = ""
        self.redis_url = ""
        self.app = None
        self.celery_app = None
        self.engine = None
        self.worker: CeleryProcess | None = None
        self.beat: CeleryProcess | None = None
        #: Environment of the worker and beat processes: the services' URLs ...
        self.base_env: dict[str, str] = {}
        #: ... plus extra settings (MAIL_SERVER, ...), see restart().
        self.extra_env: dict[str, str] = {}

    def __enter__(self) -> "Harness":
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def open(self) -> None:
        from sqlalchemy import create_engine

        from app import create_app
        from app.embedded import EmbeddedServices

        self.tmpdir = Path(tempfile.mkdtemp(prefix="beatkeeper-bench-"))
        db_url = os.environ.get("BENCH_DATABASE_URL")
        redis_url = os.environ.get("BENCH_REDIS_URL")
        if db_url and redis_url:
            say("services: BENCH_DATABASE_URL / BENCH_REDIS_URL")
        else:
            say(f"services: embedded PostgreSQL and Redis under {self.tmpdir}")
            self.embedded = EmbeddedServices(self.tmpdir / "embedded")
            urls = self.embedded.start()
            db_url, redis_url = urls["DATABASE_URL"], urls["REDIS_URL"]
        self.database_url, self.redis_url = db_url, redis_url
        client = redis_client(redis_url)
        client.flushdb()
        client.close()
        reset_schema(db_url)
        self.engine = create_engine(db_url, pool_pre_ping=True)

        self.app = create_app({
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": "bench",
        })
        self.celery_app = self.app.extensions["celery"]

        self.base_env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=redis_url,
                             PYTHONUNBUFFERED="1")
        self.worker = CeleryProcess("worker", self._env(), self.tmpdir / "worker.log").start()
        self.beat = CeleryProcess("beat", self._env(), self.tmpdir / "beat.log").start()
        self._wait_worker()
        self._wait_beat_leads()
        say("worker and beat ready")

    def _env(self) -> dict[str, str]:
        return {**self.base_env, **self.extra_env}

    # --- worker and beat ---

    def start_worker(self) -> None:
        """Start a fresh worker (none may be running) and wait until it answers."""
        if self.worker is not None:
            raise RuntimeError("a worker is already running")
        self.worker = CeleryProcess("worker", self._env(), self.tmpdir / "worker.log").start()
        self._wait_worker()

    def stop_worker(self) -> None:
        """Stop the worker (warm shutdown: the messages it reserved go back to the broker)."""
        if self.worker is not None:
            try:
                self.worker.stop()
            finally:
                self.worker = None

    def restart(self, env: dict[str, Any] | None = None, beat: bool = True) -> None:
        """Stop the worker (and beat) and start fresh ones. `env`, when given, replaces the
        extra settings both get from now on (e.g. MAIL_SERVER / MAIL_PORT); {} drops them."""
        if env is not None:
            self.extra_env = {k: str(v) for k, v in env.items()}
        if beat and self.beat is not None:
            try:
                self.beat.stop()
            finally:
                self.beat = None
        self.stop_worker()
        self.start_worker()
        if beat:
            self.beat = CeleryProcess("beat", self._env(), self.tmpdir / "beat.log").start()
            self._wait_beat_leads()

    def worker_rss(self) -> int:
        """The worker's resident memory in bytes: main process plus its pool children."""
        self.worker.check_alive()
        return tree_rss(self.worker.proc.pid)

    def _wait_worker(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self.worker.check_alive()
            if self.celery_app.control.ping(destination=[self.worker.nodename], timeout=0.5):
                return
        raise RuntimeError(f"worker not ready:\n{self.worker.log_tail()}")

    def _wait_beat_leads(self) -> None:
        def leads():
            self.beat.check_alive()
            return self.scalar("SELECT count(*) FROM beat_heartbeats WHERE role = 'leader' "
                               "AND pid = :pid", pid=self.beat.proc.pid)

        try:
            wait_until(leads, READY_TIMEOUT_S, what="beat to lead")
        except TimeoutError:
            raise RuntimeError(f"beat did not take the lead:\n{self.beat.log_tail()}") from None

    def close(self) -> None:
        """Stop everything started, even when interrupted again meanwhile."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for proc in (self.beat, self.worker):
                if proc is not None:
                    try:
                        proc.stop()
                    except Exception as exc:  # keep stopping the rest
                        say(f"stopping celery {proc.kind}: {exc}")
            self.beat = self.worker = None
            if self.engine is not None:
                self.engine.dispose()
                self.engine = None
            if self.app is not None:
                try:
                    from models import db

                    with self.app.app_context():
                        db.engine.dispose()
                except Exception:
                    pass
                try:
                    self.celery_app.pool.force_close_all()
                except Exception:
                    pass
                self.app = None
            if self.embedded is not None:
                self.embedded.stop()
                self.embedded = None
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
                self.tmpdir = None
        finally:
            signal.signal(signal.SIGINT, previous)

    # --- database helpers ---

    def rows(self, sql: str, **params: Any) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).all()

    def scalar(self, sql: str, **params: Any) -> Any:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def truncate(self) -> None:
        """Empty the run and schedule tables between two sides (beat keeps its heartbeat)."""
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {BENCH_TABLES} CASCADE"))

    def unfinished(self) -> int:
        return self.scalar("SELECT count(*) FROM job_runs WHERE state = ANY(:states)",
                           states=names(UNFINISHED_STATES))

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Wait until no run is scheduled, queued or running."""
        def idle():
            self.check_processes()
            return self.unfinished() == 0

        wait_until(idle, timeout, 0.1, "every run to finish")

    def wait_started(self, task_ids: Iterable[str], timeout: float) -> None:
        """Wait until every run of `task_ids` has finished (rows exist once a worker starts
        a run published by send_task)."""
        ids = list(task_ids)

        def done():
            self.check_processes()
            return self.scalar(
                "SELECT count(*) FROM job_runs WHERE task_id = ANY(:ids) "
                "AND state NOT IN ('scheduled', 'queued', 'running', 'retrying')", ids=ids,
            ) == len(ids)

        wait_until(done, timeout, 0.1, f"{len(ids)} runs to finish")

    def check_processes(self) -> None:
        for proc in (self.worker, self.beat):
            if proc is not None:
                proc.check_alive()
