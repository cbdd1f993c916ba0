"""Benchmarks of the cost of our job records: worker throughput, and enqueue server time.

1. `throughput`: N demo.noop runs drained by one worker (2 prefork processes, the same Redis
   broker and worker settings), three sides alternated over the rounds (ABBA-style rotation):

   * ours: our worker (FlaskTask: an app context, a read of the run's row at start, and its
     running and final states written in batches by the process's recorder, on rows written
     at publish by scheduler.enqueue, the production path); its drain ends when the last
     record is written (max(updated_at)), if that is later than the last event;
   * plain: a plain Celery app (bench/plain_worker.py), task `bench.plain_noop`, no records,
     no result backend;
   * peer: the same plain app with Celery's database result backend on the same PostgreSQL,
     result_extended=True.

   Only the worker's work is timed. Each side starts its worker, warms it up (a few tasks, so
   each pool process has loaded what a task needs and opened its connections), stops it from
   consuming (`cancel_consumer`), publishes all N messages, then lets it consume again
   (`add_consumer`): the drain time runs from that moment to the `timestamp` of the last
   `task-succeeded` event of the batch.

   Why task events: the same yardstick for all three sides, and the plain side writes nothing
   else that could tell when its last task finished. Both apps send task events anyway
   (worker_send_task_events=True in app/config.py, shared by the plain app), so the worker's
   work is unchanged by the measurement. The bench process decodes every event (sent,
   received, started, succeeded: the same number per task on every side) on this shared
   2-core machine: a small per-task cost added to all sides, which pulls the ratios a little
   towards 1. Every side is checked besides: ours by its rows (all N succeeded), peer by its celery_taskmeta rows, plain by the
   worker's own counter (`inspect stats` total).

2. `enqueue`: server time of `POST /longtask` in-process with the Flask test client (run row
   committed, then published), against a bare `send_task("demo.long_task")` (no record),
   timed the same way with time.perf_counter(), alternated request by request; no worker runs
   meanwhile (the messages wait in Redis and are purged afterwards). `enqueue()` called in an
   app context, without the request, is timed as a third side to split the difference.
"""
from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from typing import Any, Callable

from bench.harness import (
    CeleryProcess, Harness, fmt_plain, fmt_ratio, fmt_s, median, p50, p95, redis_client, say,
)
from bench.plain_worker import PLAIN_TASK

#: Runs drained per side: full and --quick.
RUNS, QUICK_RUNS = 5000, 1000
#: Rounds of the three sides: full and --quick.
ROUNDS, QUICK_ROUNDS = 3, 1
#: Untimed tasks each fresh worker runs first.
WARM_UP = 8
#: Goal: ours at least this fraction of plain Celery's tasks/s.
GOAL_RATIO = 0.8
#: Timed requests per side of `enqueue`: full and --quick (200+ each).
REQUESTS, QUICK_REQUESTS = 400, 200

SIDES = ("ours", "plain", "peer")
LABELS = {"ours": "ours (job records)", "plain": "plain Celery",
          "peer": "Celery db backend, result_extended"}


def _rotation(round_no: int) -> tuple[str, ...]:
    """The order of the sides in a round: ours/plain/peer, then reversed, then rotated, so
    that each side is neither always first nor always last."""
    orders = [SIDES, SIDES[::-1], SIDES[1:] + SIDES[:1], SIDES[::-1][1:] + SIDES[::-1][:1]]
    return orders[round_no % len(orders)]


# --- task events ---------------------------------------------------------------------------


class SucceededEvents:
    """A thread collecting `task-succeeded` events (uuid -> the worker's timestamp)."""

    def __init__(self, celery_app) -> None:
        self.celery_app = celery_app
        self.lock = threading.Lock()
        self.done: dict[str, float] = {}
        self.receiver = None
        self.thread: threading.Thread | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def _on_succeeded(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.done[event["uuid"]] = event["timestamp"]

    def _run(self) -> None:
        try:
            with self.celery_app.connection_for_read() as conn:
                # All events ('#'): a narrower routing key ("task.succeeded") received
                # nothing over the Redis transport here; the handler picks what it needs.
                self.receiver = self.celery_app.events.Receiver(
                    conn, handlers={"task-succeeded": self._on_succeeded})
                # consume() declares the queue and binds it before its first drain: signal
                # ready once that happened (the mixin's on_consume_ready hook).
                self.receiver.on_consume_ready = lambda *a, **k: self.ready.set()
                self.receiver.capture(limit=None, timeout=None, wakeup=False)
        except BaseException as exc:  # reported by wait()
            self.error = exc
            self.ready.set()

    def start(self) -> "SucceededEvents":
        self.thread = threading.Thread(target=self._run, name="bench-events", daemon=True)
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("the event receiver did not start")
        if self.error:
            raise RuntimeError(f"event receiver: {self.error!r}")
        time.sleep(0.2)  # the pattern subscription is in place on the server
        return self

    def wait(self, ids: list[str], timeout: float, check: Callable[[], None]) -> float:
        """Wait until every id has succeeded; the latest event timestamp among them."""
        deadline = time.monotonic() + timeout
        wanted = set(ids)
        while True:
            if self.error:
                raise RuntimeError(f"event receiver: {self.error!r}")
            with self.lock:
                got = [self.done[i] for i in wanted if i in self.done]
            if len(got) == len(wanted):
                return max(got)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(got)} of {len(wanted)} task-succeeded events "
                                   f"after {timeout:.0f} s")
            check()
            time.sleep(0.05)

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        if self.thread is not None:
            self.thread.join(10)


# --- 1. throughput -------------------------------------------------------------------------


def throughput(h: Harness) -> None:
    n = QUICK_RUNS if h.quick else RUNS
    rounds = QUICK_ROUNDS if h.quick else ROUNDS
    rates: dict[str, list[float]] = defaultdict(list)
    queue = h.celery_app.conf.task_default_queue
    try:
        for round_no in range(rounds):
            for side in _rotation(round_no):
                seconds, note = _drain(h, side, n, queue)
                rates[side].append(n / seconds)
                say(f"  round {round_no + 1} {LABELS[side]}: {n} runs drained in "
                    f"{fmt_s(seconds)}, {n / seconds:.0f} tasks/s{note}")
    finally:
        _clean(h)
        if h.worker is None:
            h.start_worker()  # back to the harness's usual worker

    med = {side: median(rates[side]) for side in SIDES}
    ours_ratio = med["ours"] / med["plain"]
    peer_ratio = med["peer"] / med["plain"]
    say(f"throughput ({n} demo.noop runs, 2 prefork processes, median of {rounds} round(s)): "
        f"ours {med['ours']:.0f} tasks/s; plain Celery {med['plain']:.0f} tasks/s; "
        f"Celery db backend (result_extended) {med['peer']:.0f} tasks/s; "
        f"ratio ours/plain {fmt_ratio(med['ours'], med['plain'])}, "
        f"peer/plain {fmt_ratio(med['peer'], med['plain'])}, "
        f"ours/peer {fmt_ratio(med['ours'], med['peer'])}")
    h.goals.goal("throughput_ratio", ours_ratio, f">= {GOAL_RATIO}", ours_ratio >= GOAL_RATIO,
                 fmt=fmt_plain)
    say(f"  (peer/plain {fmt_plain(peer_ratio)})")


def _drain(h: Harness, side: str, n: int, queue: str) -> tuple[float, str]:
    """Start the side's worker, warm it up, pause it, publish n messages, resume: the drain
    time from the resume to the last task-succeeded event. Leaves no worker running."""
    h.stop_worker()
    _clean(h)
    worker = _start_side_worker(h, side)
    events = SucceededEvents(h.celery_app).start()
    try:
        check = worker.check_alive
        warm = _publish(h, side, WARM_UP)
        events.wait(warm, 60, check)
        stats_before = _total(h, worker, side)
        replies = h.celery_app.control.cancel_consumer(
            queue, destination=[worker.nodename], reply=True, timeout=5.0)
        if not replies:
            raise RuntimeError(f"{side} worker did not answer cancel_consumer")
        ids = _publish(h, side, n)
        client = redis_client(h.redis_url)
        try:
            waiting = client.llen(queue)
        finally:
            client.close()
        began = time.time()
        replies = h.celery_app.control.add_consumer(
            queue, destination=[worker.nodename], reply=True, timeout=5.0)
        if not replies:
            raise RuntimeError(f"{side} worker did not answer add_consumer")
        last = events.wait(ids, 300 + n / 10, check)
        seconds = last - began
        note, written = _check(h, worker, side, n, ids, began, stats_before)
        if written is not None:
            # Ours writes records in batches after the event: the drain ends when the last
            # record is in PostgreSQL.
            seconds = max(seconds, written - began)
        if waiting < n:
            note += f" ({n - waiting} taken while paused)"
        return seconds, note
    finally:
        events.stop()
        if worker is h.worker:
            h.stop_worker()
        else:
            worker.stop()


def _start_side_worker(h: Harness, side: str) -> CeleryProcess:
    if side == "ours":
        h.start_worker()
        return h.worker
    env = {**h.base_env, "BENCH_PLAIN_BACKEND": "db" if side == "peer" else ""}
    worker = CeleryProcess("worker", env, h.tmpdir / f"worker-{side}.log",
                           name=f"bench-{side}", app="bench.plain_worker").start()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            worker.check_alive()
            if h.celery_app.control.ping(destination=[worker.nodename], timeout=0.5):
                return worker
        raise RuntimeError(f"{side} worker not ready:\n{worker.log_tail()}")
    except BaseException:
        worker.stop()
        raise


def _publish(h: Harness, side: str, n: int) -> list[str]:
    """n messages for the side's task; ours through scheduler.enqueue (the row first)."""
    if side != "ours":
        return [h.celery_app.send_task(PLAIN_TASK, args=[i]).id for i in range(n)]
    from scheduler.enqueue import enqueue

    with h.app.app_context():
        return [enqueue("demo.noop", [i], trigger="bench") for i in range(n)]


def _total(h: Harness, worker: CeleryProcess, side: str) -> int:
    """Tasks the worker has run so far, by its own counter (inspect stats)."""
    name = "demo.noop" if side == "ours" else PLAIN_TASK
    reply = h.celery_app.control.inspect([worker.nodename], timeout=5.0).stats() or {}
    return (reply.get(worker.nodename) or {}).get("total", {}).get(name, 0)


def _check(h: Harness, worker: CeleryProcess, side: str, n: int, ids: list[str], began: float,
           stats_before: int) -> tuple[str, float | None]:
    """Cross-check the events with what the side itself knows: a note for the round line,
    and for ours the time its last record was written."""
    ran = _total(h, worker, side) - stats_before
    if ran != n:
        raise RuntimeError(f"{side}: the worker counted {ran} tasks, not {n}")
    if side == "ours":
        deadline = time.monotonic() + 10
        while True:
            row = h.rows("SELECT count(*) AS done, max(updated_at) AS last FROM job_runs "
                         "WHERE task_id = ANY(:ids) AND state = 'succeeded'", ids=ids)[0]
            if row.done == n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"ours: {row.done} of {n} runs succeeded")
            time.sleep(0.05)
        written = row.last.timestamp()
        return f" (last record written at {fmt_s(written - began)})", written
    if side == "peer":
        done = h.scalar("SELECT count(*) FROM celery_taskmeta WHERE task_id = ANY(:ids) "
                        "AND status = 'SUCCESS'", ids=ids)
        if done != n:
            raise RuntimeError(f"peer: {done} of {n} results stored")
    return "", None


def _clean(h: Harness) -> None:
    """Empty the queue, the run tables and the db backend's results (when it has any)."""
    h.celery_app.control.purge()
    h.truncate()
    if h.scalar("SELECT to_regclass('celery_taskmeta') IS NOT NULL"):
        from sqlalchemy import text

        with h.engine.begin() as conn:
            conn.execute(text("TRUNCATE celery_taskmeta, celery_tasksetmeta"))


# --- 2. enqueue ----------------------------------------------------------------------------


def enqueue_time(h: Harness) -> None:
    requests = QUICK_REQUESTS if h.quick else REQUESTS
    from scheduler.enqueue import enqueue

    client = h.app.test_client()
    page = client.get("/").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    headers = {"X-CSRFToken": token, "Accept": "application/json"}

    def post() -> None:
        resp = client.post("/longtask", headers=headers)
        if resp.status_code != 202:
            raise RuntimeError(f"POST /longtask: HTTP {resp.status_code}")

    def direct() -> None:
        with h.app.app_context():
            enqueue("demo.long_task", trigger="bench")

    def bare() -> None:
        h.celery_app.send_task("demo.long_task")

    kinds = {"post": post, "enqueue": direct, "bare": bare}
    timings: dict[str, list[float]] = {k: [] for k in kinds}
    h.stop_worker()  # nothing may run demo.long_task meanwhile
    try:
        for fn in kinds.values():  # untimed: templates, connections, first statements
            for _ in range(10):
                fn()
        order = list(kinds)
        for i in range(requests):
            # A rotating order, reversed every other turn (ABBA-like over the three).
            turn = order[i % 3:] + order[:i % 3]
            for kind in (turn if i % 2 == 0 else turn[::-1]):
                began = time.perf_counter()
                kinds[kind]()
                timings[kind].append(time.perf_counter() - began)
    finally:
        purged = h.celery_app.control.purge()
        h.truncate()
        h.start_worker()
    post_t, direct_t, bare_t = timings["post"], timings["enqueue"], timings["bare"]
    say(f"  {purged} queued message(s) purged")
    say(f"enqueue server time ({requests} of each, alternated): POST /longtask "
        f"p50 {_ms(p50(post_t))} p95 {_ms(p95(post_t))}; enqueue() without the request "
        f"p50 {_ms(p50(direct_t))} p95 {_ms(p95(direct_t))}; bare send_task "
        f"p50 {_ms(p50(bare_t))} p95 {_ms(p95(bare_t))}; ratio POST/bare "
        f"p50 {fmt_ratio(p50(post_t), p50(bare_t))}, p95 {fmt_ratio(p95(post_t), p95(bare_t))}; "
        f"enqueue()/bare p50 {fmt_ratio(p50(direct_t), p50(bare_t))}")


def _ms(seconds: float) -> str:
    """Sub-millisecond figures need a decimal that fmt_s does not give."""
    return f"{seconds * 1000:.2f} ms"


BENCHMARKS = {
    "throughput": throughput,
    "enqueue": enqueue_time,
}
