"""`flask --app app jobs list|show|run|cancel|rerun|prune|rollup`."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text

from scheduler.upkeep import retention
from tests.factories import make_run
from tests.helpers import wait_for_state


@pytest.fixture
def cli(app, services):
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(args=["jobs", *args], catch_exceptions=False)


def run_count(services) -> int:
    engine = create_engine(services.database_url)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM job_runs")).scalar()
    engine.dispose()
    return n


def test_run_list_show_cancel_rerun(app, cli, services):
    out = cli("run", "demo.noop", "--args", "[1, 2]", "--kwargs", '{"x": "y"}',
              "--countdown", "600")
    assert out.exit_code == 0, out.output
    run_id, task_id, state = out.output.split()
    assert state == "scheduled"
    other = cli("run", "demo.noop", "--countdown", "600").output.split()[0]

    rows = json.loads(cli("list", "--json", "--task", "demo.noop").output)
    assert [r["id"] for r in rows] == [int(other), int(run_id)]
    assert rows[1]["trigger"] == "cli" and rows[1]["state"] == "scheduled"
    assert json.loads(cli("list", "--json", "--limit", "1").output)[0]["id"] == int(other)
    assert json.loads(cli("list", "--json", "--state", "succeeded").output) == []
    table = cli("list", "--state", "scheduled").output.splitlines()
    assert table[0].split()[:3] == ["ID", "TASK_NAME", "STATE"] and len(table) == 3

    shown = json.loads(cli("show", run_id, "--json").output)
    assert shown["task_id"] == task_id and shown["args"] == [1, 2]
    assert shown["kwargs"] == {"x": "y"} and shown["trigger"] == "cli"
    assert [e["state"] for e in shown["events"]] == ["scheduled"]
    text_out = cli("show", run_id).output
    assert task_id in text_out and "AT" in text_out and "scheduled" in text_out

    out = cli("cancel", run_id)
    assert out.exit_code == 0 and f"Run {run_id} cancelled." in out.output
    out = cli("cancel", run_id)
    assert out.exit_code != 0 and "only scheduled, queued or retrying" in out.output
    assert [e["state"] for e in json.loads(cli("show", run_id, "--json").output)["events"]] \
        == ["scheduled", "revoked"]

    out = cli("rerun", run_id)
    assert out.exit_code == 0, out.output
    new_id = out.output.split()[-1].rstrip(".")
    rerun = json.loads(cli("show", new_id, "--json").output)
    assert rerun["rerun_of_id"] == int(run_id) and rerun["args"] == [1, 2]
    out = cli("rerun", other)  # still scheduled: not finished
    assert out.exit_code != 0 and "only finished runs" in out.output
    cli("cancel", other)


def test_run_reaches_the_worker(app, cli, worker):
    out = cli("run", "demo.noop", "--args", '["hi"]')
    assert out.exit_code == 0, out.output
    run = wait_for_state(app, out.output.split()[1], "succeeded")
    assert run.result == {"args": ["hi"], "kwargs": {}} and run.trigger == "cli"


@pytest.mark.parametrize("args, message", [
    (["run", "no.such.task"], "unknown task 'no.such.task'"),
    (["run", "celery.ping"], "unknown task"),
    (["run", "demo.noop", "--args", "[1,"], "not valid JSON"),
    (["run", "demo.noop", "--args", '{"a": 1}'], "must be a JSON array"),
    (["run", "demo.noop", "--kwargs", "[1]"], "must be a JSON object"),
    (["run", "demo.noop", "--countdown", "-5"], "--countdown"),
    (["show", "999999"], "no run 999999"),
    (["show", "abc"], "is not a valid integer"),
    (["cancel", "999999"], "no run 999999"),
    (["rerun", "999999"], "no run 999999"),
    (["list", "--state", "bogus"], "'bogus' is not one of"),
    (["list", "--limit", "0"], "--limit"),
    (["prune", "--days", "0"], "--days"),
])
def test_bad_input_changes_nothing(cli, services, args, message):
    out = cli(*args)
    assert out.exit_code != 0 and message in out.output, out.output
    assert run_count(services) == 0


def days_ago(days: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(days=days)


@pytest.fixture
def no_rollups(services):
    """Rollups written by a prune are emptied after the test (clean_tables predates them)."""
    yield
    engine = create_engine(services.database_url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE job_run_daily"))
    engine.dispose()


def test_prune_keeps_recent_unfinished_last_failures_and_schedule_tail(app, cli, services,
                                                                       no_rollups):
    from scheduler.beat import schedules

    with app.app_context():
        schedule_id = schedules.create("prune-me", {"task": "demo.noop", "every": "1h"}).id
    engine = create_engine(services.database_url)
    with engine.begin() as conn:
        gone = [make_run(app, "t.a", state="succeeded", created=days_ago(40), conn=conn)
                for _ in range(3)]
        # not the last failure of t.a
        gone.append(make_run(app, "t.a", state="failed", created=days_ago(45), conn=conn))
        # kept: the last failure
        last_failure = make_run(app, "t.a", state="failed", created=days_ago(41), conn=conn)
        # t.b failed again later
        gone.append(make_run(app, "t.b", state="failed", created=days_ago(40), conn=conn))
        recent_failure = make_run(app, "t.b", state="failed", created=days_ago(1), conn=conn)
        # never pruned: not finished
        unfinished = make_run(app, "t.a", state="queued", created=days_ago(60), conn=conn)
        recent = make_run(app, "t.a", state="succeeded", created=days_ago(5), conn=conn)
        sched = [make_run(app, "demo.noop", state="succeeded", created=days_ago(50 - i * 0.01),
                          schedule_id=schedule_id, conn=conn)
                 for i in range(103)]
        gone += sched[:3]                                     # the newest 100 stay
        conn.execute(text("INSERT INTO job_events (run_id, state) VALUES (:id, 'succeeded')"),
                     {"id": gone[0]})

    with app.app_context():
        assert retention.prune(30, batch=2).deleted == len(gone)  # several batches
        assert retention.prune(30, batch=2).deleted == 0
    with engine.connect() as conn:
        left = set(conn.execute(text("SELECT id FROM job_runs")).scalars())
        assert conn.execute(text("SELECT count(*) FROM job_events WHERE run_id = :id"),
                            {"id": gone[0]}).scalar() == 0
    assert left.isdisjoint(gone)
    assert {last_failure, recent_failure, unfinished, recent} <= left
    assert set(sched[3:]) <= left

    out = cli("prune", "--days", "3")                         # the 5-day-old success goes
    assert out.exit_code == 0
    assert out.output.splitlines() == ["deleted 1 run older than 3 days",
                                       "rolled up 2 days (1 sealed)"]  # 5 and 1 days ago
    out = cli("prune")                                        # RUN_RETENTION_DAYS = 30
    assert out.exit_code == 0 and "deleted 0 runs older than 30 days" in out.output
    out = cli("rollup")                                       # yesterday is still settling
    assert out.exit_code == 0 and out.output.strip() == "rolled up 1 day"
    engine.dispose()
