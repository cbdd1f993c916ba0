"""Soak: many demo.noop runs through one worker; its memory and throughput must stay flat.

`python -m bench soak [--runs 1000000] [--slice 100000] [--stall-s 60]` (--quick: 50,000 runs
in slices of 10,000 unless given). One fresh worker of the harness (prefork, 2 pool processes,
no max-tasks-per-child: the same processes run every task) runs N demo.noop runs; at each
slice boundary (every `--slice` runs done) the bench takes

- the RSS of the worker's main process and of each pool child (psutil, by pid), and
- the slice's throughput: slice runs / the time since the previous boundary.

Goals: the RSS of every worker process at the last boundary within 10% of its RSS at the
first one (the value is the ratio last/first furthest from 1; a pool child replaced meanwhile
misses the goal), and the last slice's throughput at least 0.9 of the first slice's.

Warm-up: WARM_UP untimed runs first (each pool process loads what a task needs), kept in the
tables, which are then analyzed: on a freshly truncated job_runs the first minute ran ~30%
slower until autovacuum analyzed it, which would have flattered the last/first ratio.

Feeding: the broker never holds the whole run. The worker stops consuming while the first
`ahead` runs (min(AHEAD, slice)) are published, then the clock starts; after that a chunk of
CHUNK runs is published whenever fewer than `ahead` are outstanding (published, not yet
recorded succeeded), so the queue holds about `ahead` messages and does not run dry. `ahead`
runs more than --runs are published and drained after the last boundary, so that every slice,
the last one too, shares the machine with as much publishing as the first. A chunk's rows are
written by records.create (the row enqueue() commits) in one transaction, then its messages
are published on one producer the way the dispatcher publishes runs that have their row
(task.publish): the same rows and messages as enqueue(). Publishing costs the bench process
about 2.5 ms of CPU per run on this 2-core machine, the same in every slice.

Counting: completions are read from the job records (job_runs rows of the bench's chunks in
state succeeded), by id range of the chunks not yet complete, so a poll costs the same at
the millionth run as at the first. A boundary's time is interpolated between the two polls
around it. The worker writes its records in batches (scheduler.recorder), so the counts lag
the tasks by RECORD_FLUSH_S, the same at every boundary.

Stall: when the count does not move for --stall-s seconds (default 60), both goals are
recorded short, the queue is purged and the worker restarted, and the benchmark ends instead
of hanging. A worker that exits is reported the same way, then as an error.
"""
from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.harness import Harness, fmt_mib, fmt_plain, fmt_s, redis_client, say

#: Runs and slice: full, and --quick (when not given).
RUNS, SLICE = 1_000_000, 100_000
QUICK_RUNS, QUICK_SLICE = 50_000, 10_000
#: No progress for this long is a stall.
STALL_S = 60.0
#: Runs published per chunk (one transaction), and at most this many outstanding runs kept
#: ahead of the worker (fewer when the slice is smaller).
CHUNK = 1000
AHEAD = 10_000
#: Untimed runs first, so that each pool process has loaded what a task needs and the run
#: tables are not empty (then analyzed: plans as on a table with history, not a new one).
WARM_UP = 2000
#: Seconds between two counts.
POLL_S = 0.5
#: Goals: RSS last/first within this fraction of 1; last slice's rate / first's at least.
RSS_TOLERANCE = 0.10
RATE_RATIO = 0.9

TASK = "demo.noop"
TRIGGER = "bench"

_options = {"runs": None, "slice": None, "stall_s": STALL_S}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("soak")
    group.add_argument("--runs", type=int, metavar="N",
                       help=f"soak: runs in all (default {RUNS:,}; --quick {QUICK_RUNS:,})")
    group.add_argument("--slice", type=int, metavar="N",
                       help=f"soak: runs per slice, dividing --runs "
                            f"(default {SLICE:,}; --quick {QUICK_SLICE:,})")
    group.add_argument("--stall-s", type=float, default=STALL_S, metavar="S",
                       help=f"soak: no progress for this long fails the goals "
                            f"(default {STALL_S:.0f})")


def configure(args: argparse.Namespace, error: Callable[[str], None]) -> None:
    runs = args.runs if args.runs is not None else (QUICK_RUNS if args.quick else RUNS)
    size = args.slice if args.slice is not None else (QUICK_SLICE if args.quick else SLICE)
    if size <= 0 or runs < 2 * size or runs % size:
        error(f"--runs ({runs}) must be a multiple of --slice ({size}), at least two slices")
    if args.stall_s <= 0:
        error("--stall-s must be positive")
    _options.update(runs=runs, slice=size, stall_s=args.stall_s)


@dataclass
class _Chunk:
    first_id: int
    last_id: int
    n: int


@dataclass
class _Feed:
    """The chunks published and how many of their runs have succeeded."""

    h: Harness
    total: int
    published: int = 0
    #: Seconds spent publishing.
    busy: float = 0.0
    #: Runs of the chunks fully succeeded.
    settled: int = 0
    open: list[_Chunk] = field(default_factory=list)

    def publish(self, n: int) -> None:
        """n more runs: rows in one transaction, then the messages on one producer."""
        from celery.utils import uuid

        from scheduler import records

        began = time.monotonic()
        args = [[self.published + k] for k in range(n)]
        ids = [uuid() for _ in range(n)]
        with self.h.app.app_context(), self.h.engine.begin() as conn:
            run_ids = [records.create(tid, TASK, a, {}, trigger=TRIGGER, conn=conn)
                       for tid, a in zip(ids, args)]
        if None in run_ids:
            raise RuntimeError("records.create found a run row already there")
        task = self.h.celery_app.tasks[TASK]
        with self.h.celery_app.producer_or_acquire() as producer:
            for tid, a in zip(ids, args):
                task.publish(tid, a, {}, producer=producer)
        self.open.append(_Chunk(min(run_ids), max(run_ids), n))
        self.published += n
        self.busy += time.monotonic() - began

    def top_up(self, done: int, ahead: int) -> None:
        """Publish chunks until `ahead` runs are outstanding (or all are published)."""
        while self.published < self.total and self.published - done < ahead:
            self.publish(min(CHUNK, ahead, self.total - self.published))

    def done(self) -> int:
        """Runs of the bench's chunks recorded succeeded."""
        if not self.open:
            return self.settled
        rows = self.h.rows(
            "SELECT c.i, count(r.id) AS n "
            "FROM unnest(CAST(:los AS bigint[]), CAST(:his AS bigint[])) "
            "  WITH ORDINALITY AS c(lo, hi, i) "
            "LEFT JOIN job_runs r ON r.id BETWEEN c.lo AND c.hi AND r.state = 'succeeded' "
            "  AND r.task_name = :task AND r.trigger = :trigger "
            "GROUP BY c.i ORDER BY c.i",
            los=[c.first_id for c in self.open], his=[c.last_id for c in self.open],
            task=TASK, trigger=TRIGGER)
        counts = [row.n for row in rows]
        # Chunks complete from the front are settled and no longer read.
        while self.open and counts[0] == self.open[0].n:
            self.settled += self.open.pop(0).n
            counts.pop(0)
        return self.settled + sum(counts)


class _Stalled(Exception):
    pass


def _worker_rss(h: Harness) -> dict[int, tuple[str, int]]:
    """pid -> (role, RSS bytes) of the worker's main process and its pool children."""
    import psutil

    h.worker.check_alive()
    main = psutil.Process(h.worker.proc.pid)
    out = {main.pid: ("main", main.memory_info().rss)}
    for child in main.children(recursive=True):
        try:
            out[child.pid] = ("child", child.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return out


def _rss_text(sample: dict[int, tuple[str, int]]) -> str:
    return ", ".join(f"{role} {pid} {fmt_mib(rss)}" for pid, (role, rss) in sample.items())


def soak(h: Harness) -> None:
    total, size, stall_s = _options["runs"], _options["slice"], _options["stall_s"]
    if total is None:  # not configured through __main__
        total, size = (QUICK_RUNS, QUICK_SLICE) if h.quick else (RUNS, SLICE)
    queue = h.celery_app.conf.task_default_queue
    # One fresh worker for the whole soak: its processes' memory from their start.
    h.stop_worker()
    h.celery_app.control.purge()
    h.truncate()
    h.start_worker()

    rates: list[float] = []
    samples: list[dict[int, tuple[str, int]]] = []
    failure = ""
    error: Exception | None = None
    dry = 0
    client = redis_client(h.redis_url)
    try:
        warm = _Feed(h, WARM_UP)
        warm.top_up(0, WARM_UP)
        _wait(h, warm, stall_s, lambda done, now: None)
        time.sleep(1.0)
        idle = _worker_rss(h)
        say(f"  after {WARM_UP} warm-up runs: RSS {_rss_text(idle)}")

        from sqlalchemy import text

        with h.engine.begin() as conn:
            conn.execute(text("ANALYZE job_runs, job_events"))

        # The first chunks are published while the worker does not consume, so that the
        # clock starts with a full queue.
        node = [h.worker.nodename]
        if not h.celery_app.control.cancel_consumer(queue, destination=node, reply=True,
                                                    timeout=5.0):
            raise RuntimeError("the worker did not answer cancel_consumer")
        # `ahead` more runs than counted, so that the last slice has as many runs published
        # meanwhile as the first (the feeding costs the machine CPU): drained afterwards.
        ahead = min(AHEAD, size)
        feed = _Feed(h, total + ahead)
        feed.top_up(0, ahead)
        if not h.celery_app.control.add_consumer(queue, destination=node, reply=True,
                                                 timeout=5.0):
            raise RuntimeError("the worker did not answer add_consumer")
        began = time.monotonic()
        first_id = feed.open[0].first_id
        boundary = [size]  # the next boundary
        last = [(began, 0)]  # the previous poll, and the previous boundary's time
        prev_t = [began]

        def on_poll(done: int, now: float) -> None:
            nonlocal dry
            feed.top_up(done, ahead)
            if feed.published < feed.total and client.llen(queue) == 0:
                dry += 1
            t0, d0 = last[0]
            while boundary[0] <= total and done >= boundary[0]:
                b = boundary[0]
                # Interpolated between the previous poll and this one.
                t = t0 + (now - t0) * ((b - d0) / (done - d0)) if done > d0 else now
                seconds = t - prev_t[0]
                prev_t[0] = t
                rates.append(size / seconds)
                sample = _worker_rss(h)
                samples.append(sample)
                say(f"  slice {len(rates)}/{total // size}: {b:,} runs at "
                    f"{fmt_s(t - began)}, {size:,} in {fmt_s(seconds)}, "
                    f"{size / seconds:.0f} runs/s; RSS {_rss_text(sample)}")
                boundary[0] += size
            last[0] = (now, done)

        try:
            _wait(h, feed, stall_s, on_poll)
        except _Stalled as exc:
            failure = str(exc)
        except RuntimeError as exc:  # the worker exited, or the feed failed
            failure = f"failed: {str(exc).splitlines()[0]}"
            error = exc
        else:
            counts = dict(h.rows(
                "SELECT state, count(*) FROM job_runs WHERE task_name = :task "
                "AND trigger = :trigger AND id >= :first GROUP BY state", task=TASK,
                trigger=TRIGGER, first=first_id))
            elapsed = prev_t[0] - began
            say(f"  {total:,} runs in {fmt_s(elapsed)} ({total / elapsed:.0f} runs/s), then "
                f"{ahead:,} more drained; rows by state {counts}; publishing took {fmt_s(feed.busy)} of the bench; "
                f"polls with the queue empty while runs were left to publish: {dry}")
    finally:
        client.close()
    _record(h, total, size, rates, samples, failure)
    if failure:
        say(f"  {failure}")
        h.stop_worker()  # its reserved messages go back to the queue: purged next
        purged = h.celery_app.control.purge()
        say(f"  {purged} message(s) purged; worker restarted")
        h.start_worker()
    h.truncate()
    if error is not None:
        raise error


def _wait(h: Harness, feed: _Feed, stall_s: float,
          on_poll: Callable[[int, float], None]) -> None:
    """Poll until every run of `feed` succeeded; _Stalled after stall_s without progress."""
    best, moved = -1, time.monotonic()
    while True:
        h.worker.check_alive()
        done = feed.done()
        now = time.monotonic()
        if done > best:
            best, moved = done, now
        on_poll(done, now)
        if done >= feed.total:
            return
        if now - moved > stall_s:
            raise _Stalled(f"stalled: no run finished for {stall_s:.0f} s, "
                           f"{done:,} runs done, {feed.published:,} published")
        time.sleep(POLL_S)


def _record(h: Harness, total: int, size: int, rates: list[float],
            samples: list[dict[int, tuple[str, int]]], failure: str) -> None:
    slices = total // size
    complete = len(rates) == slices and not failure
    short = "" if complete else f"; {len(rates)} of {slices} slices"

    rate_ratio = rates[-1] / rates[0] if len(rates) >= 2 else math.nan
    if rates:
        say(f"soak ({total:,} {TASK} runs, one worker, 2 prefork processes, slices of "
            f"{size:,}): first slice {rates[0]:.0f} runs/s, last {rates[-1]:.0f} runs/s, "
            f"min {min(rates):.0f}, max {max(rates):.0f}; ratio last/first "
            f"{fmt_plain(rate_ratio)}")
    h.goals.goal("soak_throughput_last_first", rate_ratio, f">= {RATE_RATIO}{short}",
                 complete and rate_ratio >= RATE_RATIO, fmt=fmt_plain)

    worst, note = math.nan, ""
    if len(samples) >= 2:
        first, last = samples[0], samples[-1]
        parts = []
        for pid, (role, rss) in first.items():
            if pid in last:
                ratio = last[pid][1] / rss
                if math.isnan(worst) or abs(ratio - 1) > abs(worst - 1):
                    worst = ratio
                parts.append(f"{role} {pid} {fmt_mib(rss)} -> {fmt_mib(last[pid][1])} "
                             f"({ratio:.3f})")
            else:
                parts.append(f"{role} {pid} gone")
        gone = set(first) ^ set(last)
        if gone:
            note = f"; processes changed: {sorted(gone)}"
        say(f"  RSS first boundary -> last: {'; '.join(parts)}")
    ok = (complete and not note and not math.isnan(worst)
          and abs(worst - 1) <= RSS_TOLERANCE)
    h.goals.goal("soak_rss_last_first", worst,
                 f"every process within {RSS_TOLERANCE:.0%} of its first{short}{note}", ok,
                 fmt=fmt_plain)


BENCHMARKS = {"soak": soak}
