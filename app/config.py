"""Configuration: defaults, then the environment, then the test dict (the only reader of os.environ)."""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

from app.embedded import DEFAULT_ROOT, running_urls


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _local_secret_key(folder: Path) -> str:
    """A random key made once per machine and shared by its processes (never a constant that
    anyone could read in the source and use to forge sessions)."""
    path = folder / "secret_key"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
    for _ in range(50):  # the other process may still be writing it
        key = path.read_text().strip()
        if key:
            return key
        time.sleep(0.01)
    raise RuntimeError(f"empty secret key file {path}")


def celery_settings(broker_url: str | None) -> dict[str, Any]:
    """Celery 5 settings (lower-case names); JSON is the only content accepted on the wire."""
    return {
        "broker_url": broker_url,
        # Redis is transport, not storage: run state lives in job_runs; the README's "Guarantees".
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        "beat_scheduler": "scheduler.beat.scheduler:DatabaseScheduler",
        "broker_connection_retry_on_startup": True,
        # A publish must give up quickly when Redis is down, so a request can answer 503
        # within seconds instead of hanging (the seed hung 19 s, then gave 500).
        "broker_connection_timeout": 2.0,
        "broker_transport_options": {
            "socket_connect_timeout": 2.0,
            "socket_timeout": 5.0,
        },
        "task_publish_retry_policy": {
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 0.5,
        },
        "worker_hijack_root_logger": False,
        "worker_prefetch_multiplier": 1,
        # Tasks declared safe to repeat (acks_late=True) go back to the queue when their
        # worker process dies, instead of being acknowledged and lost.
        "task_reject_on_worker_lost": True,
        # Task events, so `celery events`, `celery inspect` and Flower see our tasks.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
    }


class Config:
    """Defaults for every process; each may be overridden by an environment variable of the same name."""

    #: PostgreSQL URL; None means "start the embedded server under instance/".
    DATABASE_URL: str | None = os.environ.get("DATABASE_URL") or None
    #: Redis URL for the broker; None means "start the embedded server under instance/".
    REDIS_URL: str | None = os.environ.get("REDIS_URL") or None
    #: Signs sessions and CSRF tokens; when unset, a random key kept in the instance folder.
    SECRET_KEY: str | None = os.environ.get("SECRET_KEY") or None
    PORT: int = _env_int("PORT", 5000)
    #: Largest request body in bytes; a larger one is answered 413 before it is read (Flask).
    MAX_CONTENT_LENGTH: int = _env_int("MAX_CONTENT_LENGTH", 1024 * 1024)
    #: Cookies scripts cannot read and other sites do not send; Secure behind HTTPS.
    SESSION_COOKIE_HTTPONLY: bool = True
    SESSION_COOKIE_SAMESITE: str = "Lax"
    SESSION_COOKIE_SECURE: bool = _env_bool("SESSION_COOKIE_SECURE", False)
    REMEMBER_COOKIE_HTTPONLY: bool = True
    REMEMBER_COOKIE_SAMESITE: str = "Lax"
    REMEMBER_COOKIE_SECURE: bool = _env_bool("SESSION_COOKIE_SECURE", False)

    #: SMTP server; None in development means "./run starts a local capture server".
    MAIL_SERVER: str | None = os.environ.get("MAIL_SERVER") or None
    MAIL_PORT: int = _env_int("MAIL_PORT", 25)
    MAIL_USE_TLS: bool = _env_bool("MAIL_USE_TLS", False)
    MAIL_USE_SSL: bool = _env_bool("MAIL_USE_SSL", False)
    MAIL_USERNAME: str | None = os.environ.get("MAIL_USERNAME") or None
    MAIL_PASSWORD: str | None = os.environ.get("MAIL_PASSWORD") or None
    MAIL_DEFAULT_SENDER: str = os.environ.get("MAIL_DEFAULT_SENDER", "beatkeeper@localhost")
    #: Never print the SMTP conversation: it would show the AUTH exchange (the password).
    MAIL_DEBUG: bool = False
    #: Flask-Mail suppresses sending under TESTING by default; the tests use a real server.
    MAIL_SUPPRESS_SEND: bool = False
    #: Seconds before an SMTP connection or answer is given up.
    MAIL_TIMEOUT_S: float = _env_float("MAIL_TIMEOUT_S", 30.0)
    #: Transient failures (server unreachable, 4xx answers) are retried until this long after
    #: the e-mail's due time, then it is marked failed. A deadline, not a count of attempts:
    #: 8 attempts gave up on an outage of ~10 min; MTAs keep mail for days.
    MAIL_GIVE_UP_AFTER_S: float = _env_float("MAIL_GIVE_UP_AFTER_S", 86400.0)
    #: Celery queue of the e-mail runs (None: Celery's default), so that only workers that can
    #: reach the SMTP server (`celery worker -Q mail`) send mail. Stored on each run row.
    MAIL_QUEUE: str | None = os.environ.get("MAIL_QUEUE") or None
    #: Backoff after a transient failure: base * 2 ** (attempt - 1), at most max.
    MAIL_RETRY_BASE_S: float = _env_float("MAIL_RETRY_BASE_S", 5.0)
    MAIL_RETRY_MAX_S: float = _env_float("MAIL_RETRY_MAX_S", 300.0)
    #: An e-mail `sending` for longer than this is flagged for review by the sweep.
    MAIL_SENDING_STUCK_S: float = _env_float("MAIL_SENDING_STUCK_S", 600.0)
    #: Every worker process (pool children too) writes its heartbeat row this often.
    HEARTBEAT_S: float = _env_float("HEARTBEAT_S", 2.0)
    #: A worker process not seen for this long is gone: the sweep marks its running runs
    #: lost, or queues them again when their task is safe to repeat (acks_late).
    LOST_AFTER_S: float = _env_float("LOST_AFTER_S", 60.0)
    #: A run `queued` this long whose message is in no queue and on no worker is published
    #: again by the sweep (a Redis restart without saving, a worker killed holding
    #: prefetched messages). Keep it above the longest publish (broker timeouts and retry).
    REQUEUE_AFTER_S: float = _env_float("REQUEUE_AFTER_S", 60.0)
    #: The same, for runs queued before Redis was seen to lose its data (checked sooner).
    REQUEUE_AFTER_LOSS_S: float = _env_float("REQUEUE_AFTER_LOSS_S", 30.0)
    #: Where ./run's local SMTP capture server writes messages (development only).
    MAIL_CAPTURE_DIR: str | None = os.environ.get("MAIL_CAPTURE_DIR") or None
    #: Delay of the demo's "Send in 1 minute" button.
    DEMO_EMAIL_DELAY_S: float = _env_float("DEMO_EMAIL_DELAY_S", 60.0)
    #: Base of the links in e-mails (failure alerts).
    BASE_URL: str = os.environ.get("BASE_URL", "http://127.0.0.1:5000")
    #: At most one failure alert per task in this many seconds; later failures are folded.
    ALERT_QUIET_S: float = _env_float("ALERT_QUIET_S", 900.0)
    ALERT_EMAILS: list[str] = [
        a.strip() for a in os.environ.get("ALERT_EMAILS", "").split(",") if a.strip()
    ]

    #: Seconds per step of demo.long_task (the seed's is 1 s; tests shorten it).
    DEMO_STEP_SECONDS: float = _env_float("DEMO_STEP_SECONDS", 1.0)
    #: Largest stored result or argument document, in bytes, before it is replaced by a marker.
    RESULT_MAX_BYTES: int = _env_int("RESULT_MAX_BYTES", 64 * 1024)
    #: Minimum seconds between two progress writes of one run.
    PROGRESS_MIN_INTERVAL_S: float = _env_float("PROGRESS_MIN_INTERVAL_S", 0.5)
    #: A worker process writes the run records it buffered at least this often (seconds).
    RECORD_FLUSH_S: float = _env_float("RECORD_FLUSH_S", 0.05)
    #: Run records a worker process buffers while PostgreSQL is down before runs wait.
    RECORD_MAX_PENDING: int = _env_int("RECORD_MAX_PENDING", 50000)
    #: Longest pause between two tries to write buffered records during an outage.
    RECORD_RETRY_MAX_S: float = _env_float("RECORD_RETRY_MAX_S", 15.0)
    #: How long an exiting worker process tries to write what it buffered.
    RECORD_SHUTDOWN_WAIT_S: float = _env_float("RECORD_SHUTDOWN_WAIT_S", 30.0)
    #: Where the embedded PostgreSQL and Redis keep their data.
    EMBEDDED_PATH: str = os.environ.get("EMBEDDED_PATH") or str(DEFAULT_ROOT)

    #: Bearer token /metrics requires when set; unset, /metrics is open (keep it off the
    #: public network then).
    METRICS_TOKEN: str | None = os.environ.get("METRICS_TOKEN") or None
    #: /readyz fails when the beat leader's last heartbeat is older than this.
    READY_BEAT_MAX_AGE_S: float = _env_float("READY_BEAT_MAX_AGE_S", 10.0)
    #: `flask jobs prune` removes finished runs older than this many days by default.
    RUN_RETENTION_DAYS: int = _env_int("RUN_RETENTION_DAYS", 30)

    SQLALCHEMY_ENGINE_OPTIONS: dict[str, Any] = {
        "pool_pre_ping": True,
        # TCP keepalives: a connection to a host that vanished (not a refused one) fails in
        # about a minute instead of hanging (libpq ignores them on unix sockets).
        "connect_args": {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 30,
                         "keepalives_interval": 10, "keepalives_count": 3},
    }


def load(test_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the settings as a dict: Config's values, overridden by test_config."""
    settings = {k: getattr(Config, k) for k in dir(Config) if k.isupper()}
    settings.update(test_config or {})
    if not (settings.get("DATABASE_URL") and settings.get("REDIS_URL")) and not test_config:
        # Not configured: use the embedded servers of a running ./run, if any.
        for key, url in running_urls(settings["EMBEDDED_PATH"]).items():
            settings[key] = settings.get(key) or url
    if not settings.get("DATABASE_URL"):
        raise RuntimeError(
            "DATABASE_URL is not set. Start the service with ./run (it starts an embedded "
            "PostgreSQL) or set DATABASE_URL=postgresql://..."
        )
    if not settings.get("REDIS_URL"):
        raise RuntimeError(
            "REDIS_URL is not set. Start the service with ./run (it starts an embedded "
            "Redis) or set REDIS_URL=redis://..."
        )
    if not settings.get("SECRET_KEY"):
        settings["SECRET_KEY"] = _local_secret_key(Path(settings["EMBEDDED_PATH"]))
    settings["SQLALCHEMY_DATABASE_URI"] = settings["DATABASE_URL"]
    celery = celery_settings(settings["REDIS_URL"])
    celery.update(settings.get("CELERY") or {})
    settings["CELERY"] = celery
    return settings
