"""Benchmark of the runs admin on a long history: server time of the runs list and a run page.

A fast bulk loader writes 1,000,000 runs (100,000 with --quick) with their events straight
into PostgreSQL (`INSERT ... SELECT generate_series`, the secondary indexes dropped and built
again afterwards). Then the pages are requested in-process with the Flask test client, signed
in as a viewer, alternating between the kinds, and timed with `time.perf_counter()` around each
request: server time, no network. The baseline, measured in the same run, is the first page's
query done with OFFSET 500,000 (what page 10,000 of an OFFSET pager costs), against the same
depth reached with a key.
"""
from __future__ import annotations

import re
import time
from typing import Callable

from bench.harness import Harness, fmt_ratio, fmt_s, p50, p95, say

#: Runs loaded: full and --quick.
RUNS, QUICK_RUNS = 1_000_000, 100_000
#: Requests timed per page kind (at least 50), alternating between the kinds.
REQUESTS, QUICK_REQUESTS = 60, 50
#: Rows per INSERT ... SELECT.
CHUNK = 250_000
#: Schedules the beat-fired runs belong to (disabled: beat must not fire them).
SCHEDULES = 20
#: How far back the history reaches.
HISTORY_DAYS = 90
#: The baseline's depth.
OFFSET = 500_000
#: Goal of every page kind, seconds.
GOAL_P95_S = 0.100

#: Tasks of the history and their share in percent (cumulative bounds below).
TASKS = [("mail.send", 30), ("demo.noop", 25), ("reports.daily", 15), ("demo.long_task", 10),
         ("mail.sweep", 10), ("demo.fail", 5), ("beat.prune_heartbeats", 5)]
#: Final states and their share in percent.
STATES = [("succeeded", 86), ("failed", 6), ("revoked", 2), ("lost", 1), ("skipped", 5)]
#: Publishers and their share in percent.
TRIGGERS = [("beat", 55), ("web", 20), ("api", 8), ("cli", 4), ("external", 10), ("rerun", 3)]


def _pick(column: str, choices: list[tuple[str, int]]) -> str:
    """A CASE choosing a value by `column` (uniform in [0, 100)) and the shares."""
    parts, bound = [], 0
    for value, share in choices[:-1]:
        bound += share
        parts.append(f"WHEN {column} < {bound} THEN '{value}'")
    return f"CASE {' '.join(parts)} ELSE '{choices[-1][0]}' END"


def _load_runs_sql() -> str:
    # r1..r3: independent uniform draws in [0, 100) per row; g orders ids with created_at.
    return f"""
    INSERT INTO job_runs (task_id, task_name, state, trigger, queue, args, kwargs, attempts,
        worker_host, worker_pid, result, error_type, error_message, traceback,
        progress_current, progress_total, progress_message, progress_at, created_at,
        updated_at, queued_at, started_at, succeeded_at, failed_at, revoked_at, lost_at,
        skipped_at, schedule_id, scheduled_for, skip_reason)
    SELECT md5('bench' || g)::uuid::text, t.task, t.state, t.trig,
        CASE WHEN t.task LIKE 'mail.%' THEN 'mail' END,
        CASE WHEN t.task = 'mail.send' THEN jsonb_build_array(g)
             WHEN t.task = 'reports.daily' THEN jsonb_build_array('customer-' || (g % 5000),
                                                                  'report-' || (g % 977))
             ELSE '[]'::jsonb END,
        CASE WHEN t.task = 'demo.long_task' THEN jsonb_build_object('steps', 10 + g % 41)
             WHEN t.task = 'reports.daily' THEN jsonb_build_object(
                 'email', 'user' || (g % 5000) || '@example.com',
                 'period', (ARRAY['daily', 'weekly', 'monthly'])[1 + g % 3])
             ELSE '{{}}'::jsonb END,
        CASE WHEN t.state = 'skipped' THEN 0 WHEN t.state = 'failed' THEN 1 + g % 3 ELSE 1 END,
        CASE WHEN t.state <> 'skipped' THEN 'worker-' || (g % 4) || '@bench' END,
        CASE WHEN t.state <> 'skipped' THEN 1000 + g % 64 END,
        CASE WHEN t.state = 'succeeded' THEN jsonb_build_object(
            'result', 42, 'rows', g % 977, 'status', 'Task completed!') END,
        CASE WHEN t.state = 'failed' THEN 'DemoFailure' END,
        CASE WHEN t.state = 'failed' THEN 'demo failure number ' || g END,
        CASE WHEN t.state = 'failed' THEN
            'Traceback (most recent call last):' || chr(10)
            || '  File "scheduler/task.py", line 61, in __call__' || chr(10)
            || '    result = self.run(*args, **kwargs)' || chr(10)
            || '  File "scheduler/tasks/demo.py", line 50, in fail' || chr(10)
            || '    raise DemoFailure(message)' || chr(10)
            || 'DemoFailure: demo failure number ' || g END,
        CASE WHEN t.task = 'demo.long_task' AND t.state = 'succeeded' THEN 10 + g % 41 END,
        CASE WHEN t.task = 'demo.long_task' AND t.state = 'succeeded' THEN 10 + g % 41 END,
        CASE WHEN t.task = 'demo.long_task' AND t.state = 'succeeded' THEN 'Task completed!' END,
        CASE WHEN t.task = 'demo.long_task' AND t.state = 'succeeded' THEN t.at + t.took END,
        t.at, t.at + t.took, t.at,
        CASE WHEN t.state <> 'skipped' THEN t.at + interval '5 ms' END,
        CASE WHEN t.state = 'succeeded' THEN t.at + t.took END,
        CASE WHEN t.state = 'failed' THEN t.at + t.took END,
        CASE WHEN t.state = 'revoked' THEN t.at + t.took END,
        CASE WHEN t.state = 'lost' THEN t.at + t.took END,
        CASE WHEN t.state = 'skipped' THEN t.at END,
        CASE WHEN t.trig = 'beat' THEN :first_schedule + g % {SCHEDULES} END,
        CASE WHEN t.trig = 'beat' THEN t.at END,
        CASE WHEN t.state = 'skipped' THEN 'previous run is still running' END
    FROM generate_series(:first, :last) AS g
    CROSS JOIN LATERAL (
        SELECT {_pick("r1", TASKS)} AS task, {_pick("r2", STATES)} AS state,
               {_pick("r3", TRIGGERS)} AS trig,
               :start + (g - 1) * :step AS at,
               make_interval(secs => 0.01 + (g % 200) / 20.0) AS took
        FROM (SELECT random() * 100 AS r1, random() * 100 AS r2, random() * 100 AS r3,
                     g AS keep) AS draw
    ) AS t
    ORDER BY g
    """


#: The timeline of each loaded run: queued, running (not for skipped runs), its final state.
_LOAD_EVENTS_SQL = """
    INSERT INTO job_events (run_id, at, state, attempt, message)
    SELECT r.id, e.at, e.state, e.attempt, e.message
    FROM job_runs r CROSS JOIN LATERAL (VALUES
        (r.queued_at, 'queued', 0, 'published by ' || r.trigger),
        (r.started_at, 'running', r.attempts, 'started on ' || r.worker_host || ' pid '
                                              || r.worker_pid),
        (coalesce(r.succeeded_at, r.failed_at, r.revoked_at, r.lost_at, r.skipped_at), r.state,
         r.attempts, coalesce(r.error_type || ': ' || r.error_message, r.skip_reason))
    ) AS e(at, state, attempt, message)
    WHERE r.id BETWEEN :lo AND :hi AND e.at IS NOT NULL
    ORDER BY r.id, e.at
"""


def load_history(h: Harness, n: int) -> float:
    """Write n final runs (and their events) spread over HISTORY_DAYS; return the seconds it
    took. The secondary indexes of both tables are dropped first and built again at the end,
    which is several times faster than keeping them up to date row by row."""
    from sqlalchemy import text

    began = time.perf_counter()
    with h.engine.begin() as conn:
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        conn.execute(text(
            "INSERT INTO schedules (name, task, kind, every_s, enabled, source) "
            "SELECT 'history-' || i, 'demo.noop', 'interval', 60, false, 'user' "
            f"FROM generate_series(1, {SCHEDULES}) AS i"))
        first_schedule = conn.execute(text("SELECT min(id) FROM schedules "
                                           "WHERE name LIKE 'history-%'")).scalar()
        indexes = _drop_secondary_indexes(conn)
    start = time.time() - HISTORY_DAYS * 86400
    step = HISTORY_DAYS * 86400 / n
    sql = text(_load_runs_sql())
    for first in range(1, n + 1, CHUNK):
        last = min(first + CHUNK - 1, n)
        with h.engine.begin() as conn:
            conn.execute(text("SET LOCAL synchronous_commit = off"))
            conn.execute(text("SELECT setseed(:s)"), {"s": (first % 997) / 997.0})
            conn.execute(sql, {"first": first, "last": last,
                               "start": _timestamp(start), "step": _interval(step),
                               "first_schedule": first_schedule})
    with h.engine.begin() as conn:
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        lo, hi = conn.execute(text("SELECT min(id), max(id) FROM job_runs")).one()
        for a in range(lo, hi + 1, CHUNK):
            conn.execute(text(_LOAD_EVENTS_SQL), {"lo": a, "hi": min(a + CHUNK - 1, hi)})
    with h.engine.begin() as conn:
        conn.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
        for definition in indexes:
            conn.execute(text(definition))
    with h.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE job_runs"))
        conn.execute(text("VACUUM ANALYZE job_events"))
    return time.perf_counter() - began


def _drop_secondary_indexes(conn) -> list[str]:
    """Drop the indexes of job_runs and job_events that back no constraint; return their
    definitions to create them again."""
    from sqlalchemy import text

    rows = conn.execute(text("""
        SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
        FROM pg_index i
        WHERE i.indrelid IN ('job_runs'::regclass, 'job_events'::regclass)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
    """)).all()
    for row in rows:
        conn.execute(text(f"DROP INDEX {row.name}"))
    return [row.definition for row in rows]


def _timestamp(epoch_s: float):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch_s, timezone.utc)


def _interval(seconds: float):
    from datetime import timedelta

    return timedelta(seconds=seconds)


# --- the benchmark -------------------------------------------------------------------------


def history(h: Harness) -> None:
    """Server time of the runs pages over a long history, and OFFSET against keys."""
    from sqlalchemy import text

    n = QUICK_RUNS if h.quick else RUNS
    requests = QUICK_REQUESTS if h.quick else REQUESTS
    took = load_history(h, n)
    events = h.scalar("SELECT count(*) FROM job_events")
    say(f"  loaded {n:,} runs and {events:,} events in {took:.1f} s "
        f"({n / took:,.0f} runs/s, indexes included)")
    try:
        client = _viewer_client(h)
        lo, hi = h.rows("SELECT min(id), max(id) FROM job_runs")[0]
        old = h.rows("SELECT id, task_id FROM job_runs WHERE id >= :id ORDER BY id LIMIT 1",
                     id=lo + (hi - lo) // 10)[0]
        failed = h.scalar("SELECT id FROM job_runs WHERE state = 'failed' AND id >= :id "
                          "ORDER BY id LIMIT 1", id=lo + (hi - lo) // 2)
        pages = {
            "first page": "/admin/runs",
            "filtered page": "/admin/runs?state=failed&task=mail.send",
            "deep page": f"/admin/runs?before={lo + 1000}",
            "task id search": f"/admin/runs?q={old.task_id}",
            # Rare text: the search looks through its whole window of runs.
            "argument search": "/admin/runs?q=customer-4242",
            "run page": f"/admin/runs/{failed}",
        }
        _check_deep_page_by_following_keys(client, pages["deep page"])
        timings = _time_pages(client, pages, requests)
        for kind, values in timings.items():
            say(f"  {kind}: p50 {fmt_s(p50(values))} p95 {fmt_s(p95(values))} "
                f"({len(values)} requests)")
        depth = min(OFFSET, n // 2)
        key, offset = _key_against_offset(h, depth, requests)
        say(f"  the first page's query {depth:,} runs deep: by key p50 {fmt_s(p50(key))} "
            f"p95 {fmt_s(p95(key))}; with OFFSET {depth:,} p50 {fmt_s(p50(offset))} "
            f"p95 {fmt_s(p95(offset))}; OFFSET/key {fmt_ratio(p50(offset), p50(key))} (p50), "
            f"{fmt_ratio(p95(offset), p95(key))} (p95)")
        for kind, values in timings.items():
            name = "run_page_p95" if kind == "run page" else f"runs_list_p95 ({kind})"
            value = p95(values)
            h.goals.goal(name, value, f"<= {GOAL_P95_S * 1000:.0f} ms", value <= GOAL_P95_S)
    finally:
        with h.engine.begin() as conn:
            conn.execute(text("DELETE FROM users WHERE email = :e"), {"e": VIEWER})
        h.truncate()


#: The benchmark's signed-in user.
VIEWER = "bench-viewer@example.com"


def _viewer_client(h: Harness):
    """A Flask test client signed in as a viewer through the sign-in form."""
    from app.auth import create_user

    password = "bench viewer password"
    with h.app.app_context():
        create_user(VIEWER, "viewer", password)
    client = h.app.test_client()
    login = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', login).group(1)
    resp = client.post("/login", data={"email": VIEWER, "password": password,
                                       "csrf_token": token})
    if resp.status_code != 302:
        raise RuntimeError(f"sign-in failed: HTTP {resp.status_code}")
    return client


def _get(client, path: str) -> str:
    resp = client.get(path)
    if resp.status_code != 200:
        raise RuntimeError(f"GET {path}: HTTP {resp.status_code}")
    return resp.get_data(as_text=True)


def _check_deep_page_by_following_keys(client, deep: str) -> None:
    """The jump is what following Older all the way gives: check a few steps of it."""
    html = _get(client, deep)
    for _ in range(3):
        match = re.search(r'href="([^"]+)" rel="next"', html)
        if not match:
            break
        html = _get(client, match.group(1).replace("&amp;", "&"))
    if 'rel="prev"' not in html:
        raise RuntimeError("a deep page has no Newer link")


def _time_pages(client, pages: dict[str, str], requests: int) -> dict[str, list[float]]:
    """Server time of each page, `requests` times, the kinds alternating (a rotating order);
    one untimed request each first (templates compiled, caches warm)."""
    for path in pages.values():
        _get(client, path)
    timings: dict[str, list[float]] = {kind: [] for kind in pages}
    kinds = list(pages)
    for i in range(requests):
        for kind in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:
            began = time.perf_counter()
            _get(client, pages[kind])
            timings[kind].append(time.perf_counter() - began)
    return timings


def _key_against_offset(h: Harness, depth: int, requests: int
                        ) -> tuple[list[float], list[float]]:
    """The list's first-page query `depth` runs deep: `id < key` against OFFSET depth,
    alternating (ABBA), in the app as the page runs it."""
    from sqlalchemy import select

    from models import JobRun, db
    from scheduler.history import queries

    columns = queries._list_columns(JobRun)
    newest_first = select(*columns).order_by(JobRun.id.desc())
    key_ms: list[float] = []
    offset_ms: list[float] = []
    with h.app.app_context():
        key = db.session.scalar(select(JobRun.id).order_by(JobRun.id.desc())
                                .offset(depth).limit(1)) + 1
        by_key = newest_first.where(JobRun.id < key).limit(queries.PAGE_SIZE + 1)
        by_offset = newest_first.offset(depth).limit(queries.PAGE_SIZE + 1)
        same = [r.id for r in db.session.execute(by_key)] == \
            [r.id for r in db.session.execute(by_offset)]
        if not same:
            raise RuntimeError("the key and OFFSET pages differ")
        for i in range(requests):
            order = [(by_key, key_ms), (by_offset, offset_ms)]
            for stmt, into in order if i % 2 == 0 else order[::-1]:
                began = time.perf_counter()
                db.session.execute(stmt).all()
                into.append(time.perf_counter() - began)
                db.session.rollback()
    return key_ms, offset_ms


BENCHMARKS: dict[str, Callable[[Harness], None]] = {"history": history}
