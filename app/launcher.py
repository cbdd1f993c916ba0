"""`./run`: embedded servers when no URL is set, migrations, then web, worker and beat (and a
local SMTP capture server when no MAIL_SERVER is set).

Their output is interleaved line by line, each line labelled with its process. SIGINT or SIGTERM
stops every process it started (children first, then the embedded servers); if one child
exits, the others are stopped too.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from app import masking
from app.config import Config
from app.embedded import EmbeddedServices

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STOP_TIMEOUT_S = 15.0
_print_lock = threading.Lock()


PR_SET_PDEATHSIG = 1
# Loaded here, not in the forked child, where loading a library could deadlock.
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def _die_with_parent() -> None:
    """In the child: receive SIGTERM if the launcher itself dies (even by kill -9)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _secrets(env: dict[str, str]) -> list[str]:
    """The values no relayed line may show: the app's secret settings (SECRET_KEY,
    MAIL_PASSWORD, METRICS_TOKEN) and the passwords in its URLs, as the children get them."""
    return masking.secret_values({k: v for k, v in env.items() if hasattr(Config, k)})


def _relay(label: str, stream, secrets: list[str] = ()) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        # A child may print a URL or a secret (a driver's error, a debug line): mask it here,
        # the one place every line passes.
        line = masking.mask_text(line, secrets)
        with _print_lock:
            print(f"{label:<6} | {line}", flush=True)


def _spawn(label: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        argv, cwd=PROJECT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
    )
    threading.Thread(target=_relay, args=(label, proc.stdout, _secrets(env)),
                     daemon=True).start()
    return proc


def _stop(procs: dict[str, subprocess.Popen]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for label, proc in procs.items():
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"{label:<6} | did not stop in {STOP_TIMEOUT_S:.0f} s; killing", flush=True)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port")


def main() -> int:
    stop_event = threading.Event()

    def request_stop(signum, _frame):
        stop_event.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    embedded = None
    root = Path(Config.EMBEDDED_PATH)
    if not (Config.DATABASE_URL and Config.REDIS_URL):
        embedded = EmbeddedServices(root)
        print(f"run    | starting embedded PostgreSQL and Redis under {root}", flush=True)
        urls = embedded.start()
        env.update({k: v for k, v in urls.items() if not getattr(Config, k)})
    procs: dict[str, subprocess.Popen] = {}
    code = 0
    try:
        flask = [str(BIN / "flask"), "--app", "app"]
        print("run    | migrating the database", flush=True)
        migrate = _spawn("db", flask + ["db", "upgrade"], env)
        if migrate.wait() != 0:
            print("run    | migration failed; stopping", flush=True)
            return 1
        if _spawn("users", flask + ["users", "ensure-admin"], env).wait() != 0:
            print("run    | could not create the first admin; stopping", flush=True)
            return 1
        if not Config.MAIL_SERVER:
            port = _free_port(8025)
            mailbox = root / "mailbox"
            env.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=str(port),
                       MAIL_CAPTURE_DIR=str(mailbox))
            procs["mail"] = _spawn("mail", [sys.executable, "-m", "app.mailbox", str(mailbox),
                                            str(port)], env)
        celery = [str(BIN / "celery"), "-A", "worker"]
        port = str(Config.PORT)
        procs["web"] = _spawn("web", flask + ["run", "--host", "127.0.0.1", "--port", port,
                                              "--no-reload"], env)
        procs["worker"] = _spawn("worker", celery + ["worker", "--loglevel", "INFO",
                                                     "--concurrency", "2"], env)
        procs["beat"] = _spawn("beat", celery + ["beat", "--loglevel", "INFO"], env)
        print(f"run    | web on http://127.0.0.1:{port} ; Ctrl-C stops everything", flush=True)
        while not stop_event.wait(0.5):
            exited = [label for label, p in procs.items() if p.poll() is not None]
            if exited:
                print(f"run    | {', '.join(exited)} exited; stopping the others", flush=True)
                code = 1
                break
    finally:
        print("run    | stopping", flush=True)
        _stop(procs)
        if embedded is not None:
            embedded.stop()
        print("run    | stopped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
