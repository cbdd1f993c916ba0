"""A beat leader whose host vanishes, with real processes: the leader runs in its own network
namespace, joined to the host by a veth pair with loopback-range addresses, and its link is cut
(no FIN, no RST: packets just stop). The standby on the host side must lead within 30 s, and
after the link comes back the old leader must stand by, with no slot run twice.

PostgreSQL and Redis for this test are private ones listening on the host end of the veth
(the embedded ones only have Unix sockets, which a network cut would not touch).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from scheduler.beat.schedules import timing_of
from scheduler.beat.slots import count_between
from tests.helpers import BIN, PROJECT, CeleryProcess, Services, wait_for

#: What the issue asks: a standby leads within this long after the leader's host vanished.
TAKEOVER_LIMIT_S = 30.0
START_TIMEOUT_S = 30.0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _only_ipv4(interface: str) -> str:
    """Shell that turns IPv6 off on an interface, so that it sends nothing (no link-local
    solicitations) outside 127.0.0.0/8."""
    path = f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6"
    return f"if [ -e {path} ]; then echo 1 > {path}; fi"


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Namespace:
    """A network namespace and a veth pair: HOST on the host end, PEER on the namespace end.

    Both are in 127.0.0.0/8, so nothing can leave the machine: a host route in the `local`
    table (more specific than 127.0.0.0/8 on lo) sends PEER through the veth, and
    route_localnet lets the two ends accept loopback-range addresses. The namespace's own lo
    stays down, so its 127.0.0.0/8 does not shadow HOST there.
    """

    def __init__(self) -> None:
        tag = os.getpid() % 100_000
        self.name = f"bk-takeover-{tag}"
        self.host_if, self.peer_if = f"bkt{tag}h", f"bkt{tag}n"
        octet = os.getpid() % 250 + 1
        self.host_addr, self.peer_addr = f"127.42.{octet}.1", f"127.42.{octet}.2"

    def create(self) -> None:
        try:
            made = _ip("netns", "add", self.name, check=False)
        except FileNotFoundError:
            pytest.skip("`ip` (iproute2) is not installed: no network namespace possible")
        if made.returncode != 0:
            pytest.skip(f"`ip netns add` is impossible here: {made.stderr.strip()}")
        try:
            self._wire()
        except BaseException:
            self.destroy()
            raise

    def _wire(self) -> None:
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if,
            "netns", self.name)
        subprocess.run(["sh", "-c", _only_ipv4(self.host_if)], check=True)
        Path(f"/proc/sys/net/ipv4/conf/{self.host_if}/route_localnet").write_text("1")
        _ip("addr", "add", f"{self.host_addr}/32", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("route", "add", f"{self.peer_addr}/32", "dev", self.host_if, "src", self.host_addr,
            "table", "local")
        _ip("-n", self.name, "addr", "add", f"{self.peer_addr}/32", "dev", self.peer_if)
        peer_setup = (f"{_only_ipv4(self.peer_if)}; "
                      f"echo 1 > /proc/sys/net/ipv4/conf/{self.peer_if}/route_localnet")
        subprocess.run(["ip", "netns", "exec", self.name, "sh", "-c", peer_setup], check=True)
        self.link_up()

    def link_up(self) -> None:
        _ip("-n", self.name, "link", "set", self.peer_if, "up")
        # Bringing the link down dropped this route; the address-derived ones come back alone.
        _ip("-n", self.name, "route", "replace", f"{self.host_addr}/32", "dev", self.peer_if,
            "src", self.peer_addr)

    def cut(self) -> None:
        """The namespace's side goes down: the host's packets to it vanish in the veth (the
        host keeps its route), and it has no route out."""
        _ip("-n", self.name, "link", "set", self.peer_if, "down")

    def destroy(self) -> None:
        _ip("netns", "del", self.name, check=False)
        if _ip("link", "show", self.host_if, check=False).returncode == 0:
            _ip("link", "del", self.host_if, check=False)


class PrivatePostgres:
    """pgserver's PostgreSQL binaries, listening only on `host` over TCP, data in a temp dir."""

    def __init__(self, host: str, log_path: Path) -> None:
        import pgserver

        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.host, self.port = host, _free_port(host)
        self.log_path = log_path
        self.root = Path(tempfile.mkdtemp(prefix="beatkeeper-takeover-pg-"))
        self.pgdata = self.root / "data"
        self.user = None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def start(self) -> None:
        self.pgdata.mkdir()
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: pgserver's own user
            from pgserver.utils import ensure_user_exists

            entry = ensure_user_exists("pgserver")
            self.user = entry.pw_name
            self.root.chmod(0o755)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                        "--auth=trust", "--encoding=utf8", "--no-sync"],
                       check=True, capture_output=True, user=self.user)
        with open(self.pgdata / "pg_hba.conf", "a") as hba:  # initdb trusts 127.0.0.1 only
            hba.write(f"host all all {self.host}/32 trust\nhost all all 127.42.0.0/16 trust\n")
        with open(self.log_path, "ab") as log:  # the server keeps its own copy of the fd
            self.proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.pgdata), "-h", self.host,
                 "-p", str(self.port), "-c", "unix_socket_directories=", "-c", "fsync=off",
                 "-c", "log_connections=on", "-c", "log_disconnections=on"],
                stdout=log, stderr=subprocess.STDOUT, user=self.user, start_new_session=True)
        engine = create_engine(self.url)

        def accepts() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited:\n{self.log_path.read_text()[-2000:]}")
            try:
                with engine.connect():
                    return True
            except Exception:
                return False

        wait_for(accepts, timeout=START_TIMEOUT_S, interval=0.2, message="private PostgreSQL")
        engine.dispose()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: does not wait for clients
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    def __init__(self, host: str, log_path: Path) -> None:
        from app.embedded import redis_server_binary

        self.binary = redis_server_binary()
        self.host, self.port = host, _free_port(host)
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [str(self.binary), "--bind", self.host, "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--logfile", str(self.log_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=1)

        def pong() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError("private Redis exited")
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(pong, timeout=START_TIMEOUT_S, interval=0.1, message="private Redis")
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class NamespacedBeat(CeleryProcess):
    """`celery beat` started inside the namespace (ip netns exec execs it: same pid)."""

    def __init__(self, namespace: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.namespace = namespace

    def argv(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace] + super().argv()


def _flask(url: str, redis_url: str, *args: str) -> None:
    result = subprocess.run([str(BIN / "flask"), "--app", "app", *args], cwd=PROJECT,
                            env=dict(os.environ, DATABASE_URL=url, REDIS_URL=redis_url),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _wait(predicate, timeout: float, what: str, *procs: CeleryProcess,
          interval: float = 0.1) -> None:
    try:
        wait_for(predicate, timeout=timeout, interval=interval, message=what)
    except AssertionError as exc:
        logs = "\n".join(f"--- {p.log_path.name}\n{p.log_tail(1500)}" for p in procs)
        raise AssertionError(f"{exc}\n{logs}") from None


def test_leader_host_vanishes_standby_leads_within_30_s_and_no_slot_runs_twice(tmp_path):
    ns = Namespace()
    with ExitStack() as cleanup:
        ns.create()
        cleanup.callback(ns.destroy)
        pg = PrivatePostgres(ns.host_addr, tmp_path / "postgres.log")
        cleanup.callback(pg.stop)
        pg.start()
        broker = PrivateRedis(ns.host_addr, tmp_path / "redis.log")
        cleanup.callback(broker.stop)
        broker.start()
        _flask(pg.url, broker.url, "db", "upgrade")
        _flask(pg.url, broker.url, "schedules", "add", "every-second", "--task", "demo.noop",
               "--every", "1s")
        engine = create_engine(pg.url)
        cleanup.callback(engine.dispose)

        def role_of(pid: int, since: datetime) -> str | None:
            with engine.connect() as conn:
                return conn.execute(text(
                    "SELECT role FROM beat_heartbeats WHERE pid = :pid AND last_tick_at > :since"
                ), {"pid": pid, "since": since}).scalar()

        def fresh() -> datetime:
            return datetime.now(timezone.utc) - timedelta(seconds=2)

        services = Services(pg.url, broker.url)
        old = NamespacedBeat(ns.name, services, tmp_path / "beat-namespace.log", kind="beat")
        cleanup.callback(old.stop)
        old.start()
        _wait(lambda: role_of(old.proc.pid, fresh()) == "leader", 60,
              "the namespaced beat to lead", old)
        standby = CeleryProcess(services, tmp_path / "beat-host.log", kind="beat")
        cleanup.callback(standby.stop)
        standby.start()
        _wait(lambda: role_of(standby.proc.pid, fresh()) == "standby", 60,
              "the host beat to stand by", standby)
        time.sleep(2)  # a few slots fired by the old leader

        cut_at = datetime.now(timezone.utc)
        ns.cut()
        _wait(lambda: role_of(standby.proc.pid, cut_at) == "leader", TAKEOVER_LIMIT_S + 10,
              "the standby to lead", standby, old, interval=0.05)
        takeover_s = (datetime.now(timezone.utc) - cut_at).total_seconds()
        print(f"\nleader's link cut: the standby led {takeover_s:.1f} s later")
        assert takeover_s <= TAKEOVER_LIMIT_S
        time.sleep(2)  # the new leader fires while the old one is still cut off

        restored_at = datetime.now(timezone.utc)
        ns.link_up()
        # The old leader's connections come back to sessions the server has dropped: it must
        # learn it lost the lock and stand by, not fire.
        _wait(lambda: role_of(old.proc.pid, restored_at) == "standby", 40,
              "the old leader to stand by", old, standby, interval=0.2)
        time.sleep(3)  # the old leader's next ticks, were it to fire again
        with engine.connect() as conn:
            leaders = conn.execute(text(
                "SELECT pid FROM beat_heartbeats WHERE role = 'leader' AND last_tick_at > :since"
            ), {"since": fresh()}).scalars().all()
        assert leaders == [standby.proc.pid]
        assert old.proc.poll() is None and standby.proc.poll() is None
        old.stop()
        standby.stop()

        with engine.connect() as conn:
            twice = conn.execute(text(
                "SELECT schedule_id, scheduled_for, count(*) FROM job_runs "
                "WHERE schedule_id IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1")).all()
            schedule = conn.execute(text(
                "SELECT * FROM schedules WHERE name = 'every-second'")).mappings().one()
            rows = conn.execute(text(
                "SELECT scheduled_for, state, skip_reason FROM job_runs "
                "WHERE schedule_id = :id ORDER BY scheduled_for"), {"id": schedule["id"]}).all()
        assert twice == [], f"slots with two runs: {twice}"
        # The stream went on through the cut and after the link came back, every slot from
        # the first to the last either fired once or is counted in a `skipped` row.
        assert rows[0].scheduled_for < cut_at and rows[-1].scheduled_for > restored_at
        slots = [r.scheduled_for for r in rows]
        assert len(slots) == len(set(slots))
        missed = sum(int(r.skip_reason.split()[1]) if r.skip_reason.startswith("missed") else 1
                     for r in rows if r.state == "skipped")
        fired = sum(1 for r in rows if r.state != "skipped")
        expected = count_between(timing_of(schedule), slots[0] - timedelta(microseconds=1),
                                 slots[-1])
        assert fired + missed == expected, "a slot was lost"
        # The old leader took the lock once, at its start, and never again.
        assert old.log_path.read_text().count("took the leader lock") == 1
