"""Benchmarks of the database beat scheduler: fire lateness, edit pick-up, countdown release.

Each has two sides measured in the same run and alternated (ABBA...), since the machine is
shared and noisy: ours (beat firing / releasing from PostgreSQL) and a baseline doing the same
job another way. Lateness is read from the job records that beat, the dispatcher and the
worker write: all processes share the machine's clock.
"""
from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone

from bench.harness import (
    Harness, fmt_ratio, fmt_s, median, p50, p99, say, seconds_between, sides, summary,
    wait_until,
)
from models import utcnow

#: When the released run was handed to the broker: its `queued` event.
_RELEASED_AT = ("(SELECT min(e.at) FROM job_events e "
                "WHERE e.run_id = r.id AND e.state = 'queued') AS released_at")


# --- 1. fire lateness ----------------------------------------------------------------------


def fire_lateness(h: Harness) -> None:
    """A `every 1s` schedule of demo.noop: how late each slot is released and started.

    Baseline: plain Celery doing the same job, a stream of demo.noop due once a second
    (send_task with an eta on each whole second, held in memory by the worker); its
    start lateness is started_at minus that eta.
    """
    total_s = 15 if h.quick else 60
    rounds = 1 if h.quick else 2
    per_round = total_s / rounds
    ours_release: list[float] = []
    ours_start: list[float] = []
    base_start: list[float] = []
    skipped = 0

    def ours(round_no: int) -> None:
        nonlocal skipped
        release, start, skips = _fire_ours(h, f"bench-fire-{round_no}", per_round)
        ours_release.extend(release)
        ours_start.extend(start)
        skipped += skips
        say(f"  round {round_no + 1} ours: {len(start)} runs; release {summary(release)}; "
            f"start {summary(start)}")

    def baseline(round_no: int) -> None:
        start = _fire_plain(h, per_round)
        base_start.extend(start)
        say(f"  round {round_no + 1} plain Celery: {len(start)} runs; start {summary(start)}")

    for round_no in range(rounds):
        for _side, run in sides(round_no, ours, baseline):
            run(round_no)

    base99 = p99(base_start)
    say(f"fire lateness (1 s schedule, {total_s} s): release {summary(ours_release)}; "
        f"start {summary(ours_start)}; plain Celery 1/s countdowns start "
        f"{summary(base_start)}; ratio ours/baseline start p99 "
        f"{fmt_ratio(p99(ours_start), base99)}, release p99 {fmt_ratio(p99(ours_release), base99)}"
        + (f"; {skipped} slot(s) skipped" if skipped else ""))
    value = p99(ours_start)
    h.goals.goal("beat_fire_lateness_p99", value, "<= 1.0 s", value <= 1.0)


def _fire_ours(h: Harness, name: str, seconds: float) -> tuple[list[float], list[float], int]:
    from scheduler.beat import schedules

    with h.app.app_context():
        schedule_id = schedules.create(name, {"task": "demo.noop", "every": "1s"}).id
    time.sleep(seconds)
    with h.app.app_context():
        # Disabled, not removed: removing would set the runs' schedule_id to NULL.
        schedules.set_enabled(schedules.get(name), False)
    h.wait_idle()
    rows = h.rows(
        f"SELECT r.state, r.scheduled_for, r.started_at, {_RELEASED_AT} "
        "FROM job_runs r WHERE r.schedule_id = :id", id=schedule_id,
    )
    h.truncate()
    fired = [r for r in rows if r.state != "skipped"]
    release = [seconds_between(r.released_at, r.scheduled_for) for r in fired if r.released_at]
    start = [seconds_between(r.started_at, r.scheduled_for) for r in fired if r.started_at]
    return release, start, len(rows) - len(fired)


def _fire_plain(h: Harness, seconds: float) -> list[float]:
    first = int(time.time()) + 2
    due = {}
    for i in range(int(seconds)):
        eta = datetime.fromtimestamp(first + i, timezone.utc)
        due[h.celery_app.send_task("demo.noop", args=[i], eta=eta).id] = eta
    h.wait_started(due, timeout=seconds + 60)
    rows = h.rows("SELECT task_id, started_at FROM job_runs WHERE task_id = ANY(:ids)",
                  ids=list(due))
    h.truncate()
    return [seconds_between(r.started_at, due[r.task_id]) for r in rows]


# --- 2. edit pick-up -----------------------------------------------------------------------


def edit_pickup(h: Harness) -> None:
    """Edit a planned `every 1h` schedule to `every 1s`: time from the edit to its first run.

    Baseline: a new `every 1s` schedule, time from its creation to its first run (the same
    path without the edit), alternated with the edits.
    """
    reps = 2 if h.quick else 5
    ours: list[float] = []
    base: list[float] = []

    for rep in range(reps):
        for side, _ in sides(rep, None, None):
            if side == "ours":
                value = _edit_once(h, f"bench-edit-{rep}")
                ours.append(value)
            else:
                value = _create_once(h, f"bench-new-{rep}")
                base.append(value)
            say(f"  round {rep + 1} {'edit' if side == 'ours' else 'new schedule'}: "
                f"first run after {fmt_s(value)}")

    say(f"edit pick-up (every 1h -> every 1s, {reps} edits): median {fmt_s(median(ours))} "
        f"max {fmt_s(max(ours))}; new 1 s schedule median {fmt_s(median(base))} "
        f"max {fmt_s(max(base))}; ratio ours/baseline median "
        f"{fmt_ratio(median(ours), median(base))}, max {fmt_ratio(max(ours), max(base))}")
    h.goals.goal("beat_edit_pickup_max", max(ours), "<= 5 s", max(ours) <= 5.0)


def _edit_once(h: Harness, name: str) -> float:
    from scheduler.beat import schedules

    with h.app.app_context():
        schedule_id = schedules.create(name, {"task": "demo.noop", "every": "1h"}).id
    # Let beat plan it first, so the edit replaces a planned slot an hour away.
    wait_until(lambda: h.scalar("SELECT next_fire_at IS NOT NULL FROM schedules WHERE id = :id",
                                id=schedule_id), 30, 0.02, "beat to plan the schedule")
    time.sleep(random.uniform(0.0, 1.0))  # a random phase against beat's tick
    with h.app.app_context():
        schedule = schedules.get(name)
        edited_at = utcnow()
        schedules.update(schedule, {"every": "1s"})
    return _first_run_after(h, name, schedule_id, edited_at)


def _create_once(h: Harness, name: str) -> float:
    from scheduler.beat import schedules

    time.sleep(random.uniform(0.0, 1.0))
    with h.app.app_context():
        created_at = utcnow()
        schedule_id = schedules.create(name, {"task": "demo.noop", "every": "1s"}).id
    return _first_run_after(h, name, schedule_id, created_at)


def _first_run_after(h: Harness, name: str, schedule_id: int, since: datetime) -> float:
    from scheduler.beat import schedules

    first = wait_until(
        lambda: h.scalar("SELECT min(created_at) FROM job_runs WHERE schedule_id = :id",
                         id=schedule_id),
        60, 0.02, "the first run of the schedule",
    )
    with h.app.app_context():
        schedules.set_enabled(schedules.get(name), False)
    h.wait_idle()
    h.truncate()
    return seconds_between(first, since)


# --- 3. countdown release ------------------------------------------------------------------


def countdown_release(h: Harness) -> None:
    """N demo.noop runs enqueued with the same eta: how late the dispatcher releases them.

    Baseline: plain Celery countdowns (send_task with an eta, held in memory by the worker);
    its start lateness is started_at minus the eta.
    """
    n = 200 if h.quick else 1000
    rounds = 1 if h.quick else 3
    lead = timedelta(seconds=10)
    rel99: list[float] = []
    start99: list[float] = []
    base99: list[float] = []
    rel50: list[float] = []
    start50: list[float] = []
    base50: list[float] = []

    for round_no in range(rounds):
        for side, _ in sides(round_no, None, None):
            if side == "ours":
                release, start, note = _countdown_ours(h, n, lead)
                rel50.append(p50(release))
                rel99.append(p99(release))
                start50.append(p50(start))
                start99.append(p99(start))
                say(f"  round {round_no + 1} ours: release {summary(release)}; "
                    f"start {summary(start)}{note}")
            else:
                start = _countdown_plain(h, n, lead)
                base50.append(p50(start))
                base99.append(p99(start))
                say(f"  round {round_no + 1} plain Celery: start {summary(start)}")

    say(f"countdown release ({n} due at once, median of {rounds} round(s)): "
        f"release p50 {fmt_s(median(rel50))} p99 {fmt_s(median(rel99))}; "
        f"start p50 {fmt_s(median(start50))} p99 {fmt_s(median(start99))}; "
        f"plain Celery start p50 {fmt_s(median(base50))} p99 {fmt_s(median(base99))}; "
        f"ratio ours/baseline start p99 {fmt_ratio(median(start99), median(base99))}, "
        f"release p99 {fmt_ratio(median(rel99), median(base99))}")
    value = median(rel99)
    h.goals.goal("countdown_release_lateness_p99", value, "<= 1.0 s", value <= 1.0)


def _countdown_ours(h: Harness, n: int, lead: timedelta) -> tuple[list[float], list[float], str]:
    from scheduler.enqueue import enqueue

    due = utcnow() + lead
    with h.app.app_context():
        for i in range(n):
            enqueue("demo.noop", [i], trigger="bench", eta=due)
    enqueued_in = seconds_between(utcnow(), due - lead)
    note = ""
    if utcnow() >= due:
        note = f" (enqueueing took {fmt_s(enqueued_in)}: some were not held as countdowns)"
    wait_until(lambda: h.scalar("SELECT count(*) FROM job_runs WHERE trigger = 'bench' "
                                "AND state = 'succeeded'") == n or h.check_processes(),
               lead.total_seconds() + 180, 0.1, f"{n} runs to finish")
    rows = h.rows(f"SELECT r.eta, r.started_at, {_RELEASED_AT} FROM job_runs r "
                  "WHERE r.trigger = 'bench'")
    h.truncate()
    held = [r for r in rows if r.eta is not None and r.released_at is not None]
    if len(held) < n:
        note += f" ({n - len(held)} published at once, not counted)"
    release = [seconds_between(r.released_at, r.eta) for r in held]
    start = [seconds_between(r.started_at, r.eta) for r in held]
    return release, start, note + f"; enqueued in {fmt_s(enqueued_in)}"


def _countdown_plain(h: Harness, n: int, lead: timedelta) -> list[float]:
    due = utcnow() + lead
    ids = [h.celery_app.send_task("demo.noop", args=[i], eta=due).id for i in range(n)]
    h.wait_started(ids, timeout=lead.total_seconds() + 180)
    rows = h.rows("SELECT started_at FROM job_runs WHERE task_id = ANY(:ids)", ids=ids)
    h.truncate()
    return [seconds_between(r.started_at, due) for r in rows]


BENCHMARKS = {
    "fire_lateness": fire_lateness,
    "edit_pickup": edit_pickup,
    "countdown_release": countdown_release,
}
