"""The worker process's writer of run records: a buffer flushed in batches, kept through
database outages.

Each worker process (prefork child, or the solo/threads worker) has one Recorder. At a run's
start the task thread reads the run's row once (is it already final? then the body does not
run); everything else a run reports (running, its outcome, progress) goes into an in-memory
buffer keyed by task_id, which a background thread writes every RECORD_FLUSH_S as one
statement for the whole batch (jsonb_to_recordset: one round trip and one commit for many
runs). A run that ends before the next flush has its `running` and final states written
together (both events kept, both timestamps real).

When PostgreSQL does not answer, the buffer is kept and the flush retried with a backoff
(RECORD_RETRY_MAX_S at most) until it is back: outcomes are written late, never dropped, and
the worker does not crash. The buffer is bounded (RECORD_MAX_PENDING runs): past it, new runs
wait before they start instead of growing memory without end.

Writes that hand the run to another message or process (a retry, a requeue) and the outcomes
of late-acknowledged tasks (acked only after the body returns) are written before the task
returns (`wait=True`), so the next reader of the row sees them; the rest are written within
RECORD_FLUSH_S. The price of the batch: a worker process killed with -9 loses its last
RECORD_FLUSH_S of outcomes (those runs then show `lost` from the sweep, or are run again by
the recovery of queued runs).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime
from typing import Any

import psycopg2
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from models import utcnow
from models.states import SETTLED_STATES, RunState, names
from scheduler import heartbeat, payload, records, reports

logger = logging.getLogger(__name__)

#: A run in one of these is not started (a cancel, a duplicate delivery).
_SETTLED = frozenset(names(SETTLED_STATES))

#: First delay after a failed flush; doubles up to RECORD_RETRY_MAX_S.
_RETRY_FIRST_S = 0.5
#: Most runs written by one statement (a backlog after an outage goes in several).
_BATCH_MAX = 1000
#: Past this many bytes buffered (results and tracebacks of an outage), new runs wait too.
_MAX_PENDING_BYTES = 128 * 1024 * 1024


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0]


class Recorder:
    """Buffered writes of one worker process's run records (see the module docstring)."""

    def __init__(self, engine: Engine, flush_s: float, max_pending: int,
                 retry_max_s: float, max_bytes: int = _MAX_PENDING_BYTES) -> None:
        self.engine = engine
        self.max_bytes = max_bytes
        self.flush_s = flush_s
        self.max_pending = max_pending
        self.retry_max_s = retry_max_s
        self.pid = os.getpid()
        self._lock = threading.Condition()
        self._pending: dict[str, reports.Report] = {}
        self._flush_now = threading.Event()
        self._stopping = False
        #: Set by stop(): retry every 0.5 s instead of the backoff, the process is exiting.
        self._draining = False
        self._wake_stop = threading.Event()
        #: Runs taken out of the buffer by the writer thread and not written yet.
        self._writing = 0
        #: Roughly the bytes buffered.
        self._bytes = 0
        self._reader = None
        self._reader_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="beatkeeper-recorder",
                                        daemon=True)
        self._thread.start()

    # --- the task thread's side ------------------------------------------------------------

    def begin(self, task_id: str, task_name: str, args: Any, kwargs: Any, *,
              queue: str | None, host: str, pid: int, now: datetime) -> tuple[int | None, bool]:
        """Note the start of a run. Returns (run id or None, run?): run? is False when the
        run is already final (cancelled before it started, or a duplicate delivery)."""
        self._wait_for_room()
        entry = reports.Report(task_id, started_at=now, host=host, pid=pid,
                               process_id=heartbeat.current_id())
        try:
            row = self._read(task_id)
        except (psycopg2.Error, SQLAlchemyError) as exc:
            # The database is down: run it and write everything when it is back.
            logger.warning("run %s: cannot read its record (%s); it runs, and its record is "
                           "written when the database answers", task_id, type(exc).__name__)
            entry.task_name, entry.queue = task_name, queue
            call = payload.encode_call(args, kwargs)
            entry.args, entry.kwargs, entry.call_json = call.args, call.kwargs, call.call_json
            self._add(entry)
            return None, True
        if row is None:
            # No publisher wrote a row (send_task, `celery call`): create it running, now.
            started = records.start(task_id, task_name, args, kwargs, queue=queue,
                                    worker_host=host, worker_pid=pid,
                                    process_id=heartbeat.current_id())
            return (started[0], True) if started else (None, False)
        run_id, state = row
        if state in _SETTLED:
            return run_id, False
        self._add(entry)
        return run_id, True

    def finish(self, task_id: str, state: RunState, at: datetime, *, result: str | None = None,
               error_type: str | None = None, error_message: str | None = None,
               traceback: str | None = None, eta: datetime | None = None,
               message: str | None = None, wait: bool = False,
               wait_s: float = 10.0) -> bool:
        """reports.Report a run's outcome; with wait, return once it is written (True) or wait_s
        passed (False: it stays buffered and is written later)."""
        entry = reports.Report(task_id, state=state.value, at=at, result=result, error_type=error_type,
                       error_message=error_message, traceback=traceback, eta=eta,
                       message=message)
        entry = self._add(entry)
        if not wait:
            return False
        self._flush_now.set()
        return entry.written.wait(wait_s)

    def progress(self, task_id: str, current: int | None, total: int | None,
                 message: str | None, at: datetime) -> None:
        self._add(reports.Report(task_id, progress_current=current, progress_total=total, progress_message=message, progress_at=at))

    def flush(self, timeout: float) -> bool:
        """Write everything buffered; True when nothing is left within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._pending and not self._writing:
                    return True
            if time.monotonic() >= deadline:
                return False
            self._flush_now.set()
            time.sleep(0.01)

    def stop(self, timeout: float) -> None:
        """Flush what is buffered (the process is exiting), then stop the thread."""
        self._draining = True
        self._wake_stop.set()
        if not self.flush(timeout):
            with self._lock:
                left = sorted(self._pending)
            logger.error("exiting with %d run record(s) not written: %s", len(left),
                         ", ".join(left[:50]))
        self._stopping = True
        self._flush_now.set()
        self._thread.join(timeout=2)
        with self._reader_lock:
            self._close_reader()

    def _add(self, entry: reports.Report) -> reports.Report:
        # _bytes is the sum of what each pending entry was counted at (`counted`): a merge
        # counts only the difference, and taking an entry out subtracts exactly what it
        # added, so the sum cannot drift however often reports merge.
        with self._lock:
            known = self._pending.get(entry.task_id)
            if known is None:
                self._pending[entry.task_id] = known = entry
            else:
                known.absorb(entry)
            self._count(known)
            return known

    def _count(self, entry: reports.Report) -> None:
        """Bring _bytes up to date with entry's size (under the lock)."""
        size = entry.size()
        self._bytes += size - entry.counted
        entry.counted = size

    def _full(self) -> bool:
        return len(self._pending) >= self.max_pending or self._bytes >= self.max_bytes

    def _wait_for_room(self) -> None:
        with self._lock:
            if self._full():
                logger.warning("%d run records (%d MiB) wait for the database; runs wait too",
                               len(self._pending), self._bytes >> 20)
            while self._full():
                self._lock.wait(1.0)

    def _read(self, task_id: str) -> tuple[int, str] | None:
        """(id, state) of the run's row, or None. On a connection of its own, outside the
        pool, with a prepared statement: this read is on every run's path."""
        with self._reader_lock:
            for attempt in (1, 2):
                try:
                    if self._reader is None:
                        self._reader = self._connect_reader()
                    with self._reader.cursor() as cur:
                        cur.execute("EXECUTE beatkeeper_run_state (%s)", (task_id,))
                        return cur.fetchone()
                except psycopg2.Error as exc:
                    # A connection the server closed (restart): one more try on a new one.
                    gone = self._reader is None or bool(self._reader.closed) or isinstance(
                        exc, (psycopg2.OperationalError, psycopg2.InterfaceError))
                    self._close_reader()
                    if attempt == 2 or not gone:
                        raise
        return None

    def _connect_reader(self):
        pooled = self.engine.raw_connection()  # the engine's connect options
        conn = pooled.driver_connection
        pooled.detach()  # ours for the process's life, not the pool's
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("PREPARE beatkeeper_run_state (text) AS "
                        "SELECT id, state FROM job_runs WHERE task_id = $1")
        return conn

    def _close_reader(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # closing a dead connection may fail: nothing to keep
                pass
            self._reader = None

    # --- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        conn = None
        delay = 0.0
        while not self._stopping:
            self._flush_now.wait(self.flush_s)
            self._flush_now.clear()
            with self._lock:
                batch = []
                for task_id in list(self._pending)[:_BATCH_MAX]:
                    entry = self._pending.pop(task_id)
                    self._bytes -= entry.counted
                    entry.counted = 0
                    batch.append(entry)
                if self._pending:
                    self._flush_now.set()  # a backlog: the next batch right after this one
                self._writing = len(batch)
            if not batch:
                continue
            try:
                if conn is None:
                    conn = self.engine.connect()
                try:
                    self._write(conn, batch)
                except DBAPIError as exc:
                    if _unreachable(exc):
                        raise
                    conn.rollback()
                    self._write_one_by_one(conn, batch, exc)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any error
                self._put_back(batch)  # also ends `_writing`
                delay = min(self.retry_max_s, max(_RETRY_FIRST_S, delay * 2))
                logger.warning("could not write %d run record(s) (%s: %s); retrying in %.1f s",
                               len(batch), type(exc).__name__, _first_line(exc), delay,
                               exc_info=not isinstance(exc, SQLAlchemyError))
                if conn is not None:
                    try:
                        conn.invalidate()
                        conn.close()
                    except Exception:  # closing a dead connection may fail
                        pass
                    conn = None
                self._wake_stop.wait(0.5 if self._draining else delay)
                continue
            if delay:
                logger.warning("run records written again after a database outage")
            delay = 0.0
            for entry in batch:
                entry.written.set()
            with self._lock:
                self._writing = 0
                self._lock.notify_all()
        if conn is not None:
            conn.close()

    def _write(self, conn, batch: list[reports.Report]) -> None:
        create = [
            {"task_id": e.task_id, "task_name": e.task_name, "args": json.loads(e.args),
             "kwargs": json.loads(e.kwargs), "call_json": e.call_json, "queue": e.queue,
             "at": (e.started_at or utcnow()).isoformat()}
            for e in batch if e.task_name is not None
        ]
        if create:
            conn.execute(text(reports.CREATE_SQL), {"batch": json.dumps(create)})
        conn.execute(text(reports.FLUSH_SQL), reports.flush_parameters(batch))
        conn.commit()

    def _write_one_by_one(self, conn, batch: list[reports.Report], exc: DBAPIError) -> None:
        """The server refused the batch's data (not an outage): write each run alone, so
        that one bad record does not hold back the others; a record refused on its own is
        logged and dropped."""
        logger.warning("a batch of run records was refused (%s); writing them one by one",
                       _first_line(exc.orig or exc))
        for entry in list(batch):
            for attempt in (entry, entry.plain()):
                try:
                    self._write(conn, [attempt])
                    break
                except DBAPIError as one:
                    if _unreachable(one):
                        raise  # `batch` holds what is left, for the retry
                    conn.rollback()
                    reason = _first_line(one.orig or one)
                    if attempt is entry:
                        logger.error("run %s: record refused by the database (%s); writing "
                                     "its state without progress and result", entry.task_id,
                                     reason)
                    else:
                        logger.error("run %s: record refused by the database, dropped: %s",
                                     entry.task_id, reason)
            batch.remove(entry)
            entry.written.set()

    def _put_back(self, batch: list[reports.Report]) -> None:
        """A failed flush: the batch goes back in front of what arrived meanwhile."""
        with self._lock:
            self._writing = 0
            newer = self._pending
            self._pending = {e.task_id: e for e in batch}
            for task_id, entry in newer.items():
                if task_id in self._pending:
                    self._pending[task_id].absorb(entry)
                else:
                    self._pending[task_id] = entry
            self._bytes = 0
            for entry in self._pending.values():
                entry.counted = 0
                self._count(entry)


def _unreachable(exc: DBAPIError) -> bool:
    """Is this the database being unreachable (retry later), not a refused statement?"""
    return exc.connection_invalidated or isinstance(
        exc.orig, (psycopg2.OperationalError, psycopg2.InterfaceError))


_recorder: Recorder | None = None
_recorder_lock = threading.Lock()


def current(engine: Engine, config: dict[str, Any]) -> Recorder:
    """This process's Recorder (a new one after a fork)."""
    global _recorder
    with _recorder_lock:
        if _recorder is None or _recorder.pid != os.getpid():
            _recorder = Recorder(engine, config["RECORD_FLUSH_S"], config["RECORD_MAX_PENDING"],
                                 config["RECORD_RETRY_MAX_S"])
        return _recorder


def stop_current(timeout: float) -> None:
    """Flush and stop this process's Recorder, if it has one."""
    recorder = _recorder
    if recorder is not None and recorder.pid == os.getpid():
        recorder.stop(timeout)
