"""Worker processes' heartbeats: each worker process (the main one, and every pool child) keeps
its worker_processes row fresh every HEARTBEAT_S, from a thread of its own.

Whether a run's process is alive is read from these rows, never from a broadcast: a solo worker
running a task, a busy prefork main process or a blocked gevent hub cannot answer one, and an
unanswered broadcast proves nothing. A process not seen for LOST_AFTER_S is gone; the database's
clock stamps every row, so the hosts' clocks do not matter.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any, Callable

import psycopg2
from sqlalchemy import Engine, text

logger = logging.getLogger(__name__)

_REGISTER_SQL = """
    INSERT INTO worker_processes (host, pid, kind, node, pool, parent_id, started_at,
                                  last_seen_at)
    VALUES (%(host)s, %(pid)s, %(kind)s, %(node)s, %(pool)s, %(parent_id)s, now(), now())
    RETURNING id
"""
_BEAT_SQL = ("UPDATE worker_processes SET last_seen_at = now(), holds = %(holds)s "
             "WHERE id = %(id)s RETURNING id")
_STOP_SQL = ("UPDATE worker_processes SET last_seen_at = now(), stopped_at = now() "
             "WHERE id = %(id)s")


class Heartbeat:
    """This process's row in worker_processes, kept fresh by a daemon thread."""

    def __init__(self, engine: Engine, interval_s: float, *, kind: str, node: str | None,
                 pool: str | None, parent_id: int | None,
                 holds: Callable[[], list[str] | None] | None = None) -> None:
        # A connection of its own, outside SQLAlchemy's pool, whose locks gevent may have
        # patched: this thread is a real one.
        self.dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn = None
        self.interval_s = interval_s
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.kind, self.node, self.pool, self.parent_id = kind, node, pool, parent_id
        #: What this process holds (a main process: Celery's reserved requests), or None.
        self.holds = holds
        #: The row's id once registered (None while the database cannot be reached).
        self.id: int | None = None
        self._stop = threading.Event()
        self._register()
        self._thread = _real_thread(self._run, "beatkeeper-heartbeat")
        self._thread.start()

    def _execute(self, sql: str, params: dict[str, Any]) -> Any:
        """Run one statement (autocommit); a lost connection is made again next time."""
        try:
            if self._conn is None:
                self._conn = psycopg2.connect(self.dsn, connect_timeout=5)
                self._conn.autocommit = True
            with self._conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchone() if cur.description else None
        except psycopg2.Error:
            if self._conn is not None:
                try:
                    self._conn.close()
                except psycopg2.Error:
                    pass
                self._conn = None
            raise

    def _register(self) -> None:
        try:
            self.id = self._execute(_REGISTER_SQL, {
                "host": self.host, "pid": self.pid, "kind": self.kind, "node": self.node,
                "pool": self.pool, "parent_id": self.parent_id})[0]
        except psycopg2.Error as exc:  # the database may be down: retried every beat
            logger.warning("heartbeat: cannot register this process (%s); retrying",
                           type(exc).__name__)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.id is None:
                self._register()
                continue
            try:
                if self._execute(_BEAT_SQL, {"id": self.id,
                                             "holds": self.holds() if self.holds else None}
                                 ) is None:
                    self.id = None  # the row was pruned (gone a day): a new one next time
            except psycopg2.Error as exc:
                logger.warning("heartbeat: not written (%s)", type(exc).__name__)

    def stop(self) -> None:
        """The process exits cleanly: its row says so."""
        self._stop.set()
        self._thread.join(timeout=2)
        if self.id is not None:
            try:
                self._execute(_STOP_SQL, {"id": self.id})
            except psycopg2.Error as exc:  # exiting anyway
                logger.warning("heartbeat: exit not recorded (%s)", type(exc).__name__)
        if self._conn is not None:
            self._conn.close()


def _real_thread(target: Any, name: str) -> threading.Thread:
    """A thread of the operating system even under gevent's monkey-patching, so that the
    heartbeat goes on while a task blocks the hub (a blocked hub is a live process)."""
    try:
        from gevent import monkey
    except ImportError:
        return threading.Thread(target=target, name=name, daemon=True)
    if not monkey.is_module_patched("threading"):
        return threading.Thread(target=target, name=name, daemon=True)
    real = monkey.get_original("threading", "Thread")
    return real(target=target, name=name, daemon=True)


#: Rows of worker processes gone this long are deleted (the runs they ran keep their host and
#: pid).
STALE_PROCESS_S = 24 * 3600

_current: Heartbeat | None = None
_lock = threading.Lock()
#: Heartbeats inherited through a fork, kept alive: freeing one would close the parent's
#: connection from the child (libpq says goodbye on the shared socket).
_inherited: list[Heartbeat] = []


def start(engine: Engine, config: dict[str, Any], *, kind: str, node: str | None = None,
          pool: str | None = None) -> Heartbeat:
    """Register this process and keep its row fresh; a forked child's parent is the process
    it was forked from (whose Heartbeat it inherited)."""
    global _current
    with _lock:
        inherited = _current
        if inherited is not None and inherited.pid == os.getpid():
            return inherited
        parent = inherited if inherited is not None and kind == "child" else None
        if inherited is not None:
            _inherited.append(inherited)
        _current = Heartbeat(engine, config["HEARTBEAT_S"], kind=kind,
                             node=node or (parent.node if parent else None),
                             pool=pool or (parent.pool if parent else None),
                             parent_id=parent.id if parent else None,
                             holds=reserved_task_ids if kind == "main" else None)
        return _current


def current_id() -> int | None:
    """This process's worker_processes id, if it registered."""
    heartbeat = _current
    if heartbeat is None or heartbeat.pid != os.getpid():
        return None
    return heartbeat.id


def stop() -> None:
    """Record this process's clean exit."""
    heartbeat = _current
    if heartbeat is not None and heartbeat.pid == os.getpid():
        heartbeat.stop()


def reserved_task_ids() -> list[str] | None:
    """The task ids a worker's main process has received and not finished (Celery's
    reserved requests: prefetched, waiting for an ETA, or running); None when unknown."""
    from celery.worker import state

    for _ in range(10):
        try:  # the consumer changes the set while this thread reads it
            return sorted({request.id for request in list(state.reserved_requests)})
        except RuntimeError:
            continue
    return None


def prune(engine: Engine) -> int:
    """Delete the rows of worker processes gone for STALE_PROCESS_S; return how many."""
    with engine.begin() as conn:
        return conn.execute(text(
            "DELETE FROM worker_processes "
            "WHERE last_seen_at < now() - make_interval(secs => :stale)"
        ), {"stale": STALE_PROCESS_S}).rowcount
