"""`./run`'s launcher: embedded servers, migrations, web + worker + beat, and a clean stop."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import psutil
import pytest

from tests.helpers import PROJECT, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(opener, url: str) -> tuple[int, str]:
    try:
        with opener.open(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except OSError:
        return 0, ""


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_the_demo_and_stops_everything(tmp_path: Path, stop_signal):
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "MAIL_SERVER", "MAIL_PORT")}
    env.update(PORT=str(port), EMBEDDED_PATH=str(tmp_path / "instance"), DEMO_STEP_SECONDS="0.05",
               ADMIN_EMAIL="boss@example.com", ADMIN_PASSWORD="launcher-test-password")
    log = open(tmp_path / "run.log", "wb")
    launcher = subprocess.Popen([sys.executable, "-m", "app.launcher"], cwd=PROJECT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    try:
        status, page = wait_for(lambda: _get(opener, base + "/")[0] == 200 and _get(opener, base + "/"),
                                timeout=90, interval=0.5, message="the web process")
        token = page.split('name="csrf-token" content="')[1].split('"')[0]
        req = urllib.request.Request(base + "/longtask", method="POST",
                                     headers={"X-CSRFToken": token})
        with opener.open(req, timeout=10) as resp:
            assert resp.status == 202
            location = resp.headers["Location"]
        wait_for(lambda: '"SUCCESS"' in _get(opener, base + location)[1], timeout=60,
                 interval=0.5, message="the run to succeed under ./run")
        # The e-mail form works on a fresh machine: ./run captures the mail locally.
        form = urllib.parse.urlencode({"email": "dev@example.com", "submit": "Send",
                                       "csrf_token": token}).encode()
        with opener.open(urllib.request.Request(base + "/", data=form), timeout=10) as resp:
            assert "Sending email to dev@example.com" in resp.read().decode()
        # The first admin exists (from ADMIN_EMAIL / ADMIN_PASSWORD) and can read the mailbox.
        login = _get(opener, base + "/login")[1]
        token = login.split('name="csrf-token" content="')[1].split('"')[0]
        form = urllib.parse.urlencode({"email": "boss@example.com", "csrf_token": token,
                                       "password": "launcher-test-password"}).encode()
        with opener.open(urllib.request.Request(base + "/login", data=form), timeout=10) as resp:
            assert "boss@example.com" in resp.read().decode()
        wait_for(lambda: "Hello from Flask" in _get(opener, base + "/mailbox/")[1], timeout=30,
                 interval=0.5, message="the e-mail in the local mailbox")
        started = psutil.Process(launcher.pid).children(recursive=True)
        servers = [psutil.Process(pid) for pid in _embedded_server_pids(tmp_path / "instance")]
        assert len(servers) == 2
        labels = (tmp_path / "run.log").read_text()
        for label in ("web    |", "worker |", "beat   |", "mail   |"):
            assert label in labels
    finally:
        launcher.send_signal(stop_signal)
        launcher.wait(timeout=60)
    survivors = [p.pid for p in started + servers if _alive(p)]
    assert survivors == [], (tmp_path / "run.log").read_text()[-3000:]
    assert launcher.returncode == 0


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _embedded_server_pids(root: Path) -> list[int]:
    pg = int((root / "postgres" / "postmaster.pid").read_text().splitlines()[0])
    redis = int((root / "redis" / "redis.pid").read_text().strip())
    return [pg, redis]
