"""`flask --app app schedules ...`: every command, and bad input that changes nothing."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from models import JobRun, Schedule, db


@pytest.fixture
def cli(app, services):
    runner = app.test_cli_runner()

    def invoke(*args: str):
        return runner.invoke(args=["schedules", *args], catch_exceptions=False)

    return invoke


def _schedule(app, name: str) -> Schedule | None:
    with app.app_context():
        s = db.session.scalar(select(Schedule).where(Schedule.name == name))
        if s is not None:
            db.session.expunge(s)
        return s


def test_add_list_edit_enable_disable_remove(app, cli):
    out = cli("add", "tick", "--task", "demo.noop", "--every", "10s", "--args", "[1, 2]")
    assert out.exit_code == 0, out.output
    assert "every 10 seconds" in out.output
    out = cli("add", "nightly", "--task", "demo.noop", "--cron", "0 2 * * *",
              "--tz", "Europe/Berlin", "--kwargs", '{"a": 1}', "--overlap", "skip")
    assert out.exit_code == 0, out.output
    assert "every day at 02:00 Europe/Berlin" in out.output
    out = cli("add", "xmas", "--task", "demo.noop", "--at", "2026-12-24T18:00+01:00")
    assert out.exit_code == 0, out.output
    assert _schedule(app, "xmas").clocked_at.isoformat() == "2026-12-24T17:00:00+00:00"

    table = cli("list").output.splitlines()
    assert table[0].split()[:3] == ["NAME", "TASK", "TIMING"]
    assert [line.split()[0] for line in table[1:]] == ["nightly", "tick", "xmas"]
    rows = json.loads(cli("list", "--json").output)
    tick = next(r for r in rows if r["name"] == "tick")
    assert tick["args"] == [1, 2] and tick["enabled"] is True and tick["source"] == "user"

    assert cli("edit", "tick", "--every", "5m").exit_code == 0
    assert _schedule(app, "tick").every_s == 300
    assert _schedule(app, "tick").args == [1, 2]  # untouched by the edit
    assert cli("edit", "tick", "--cron", "*/5 * * * *").exit_code == 0
    edited = _schedule(app, "tick")
    assert edited.kind == "crontab" and edited.every_s is None

    assert cli("disable", "tick").exit_code == 0
    assert _schedule(app, "tick").enabled is False
    assert cli("enable", "tick").exit_code == 0
    assert _schedule(app, "tick").enabled is True

    assert cli("remove", "tick").exit_code == 0
    assert _schedule(app, "tick") is None


def test_run_now_is_recorded_as_manual(app, cli):
    cli("add", "manual", "--task", "demo.noop", "--every", "1h", "--args", '["hi"]')
    out = cli("run", "manual")
    assert out.exit_code == 0, out.output
    task_id = out.output.strip()
    with app.app_context():
        run = db.session.scalar(select(JobRun).where(JobRun.task_id == task_id))
        assert run.trigger == "manual"
        assert run.schedule_id == _schedule(app, "manual").id
        assert run.args == ["hi"] and run.scheduled_for is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "demo.noop", "--cron", "61 * * * *"], "minute 61 is out of range"),
        (["--task", "demo.noop", "--cron", "* * *"], "invalid cron expression"),
        (["--task", "no.such.task", "--every", "1m"], "unknown task 'no.such.task'"),
        (["--task", "demo.noop", "--cron", "0 2 * * *", "--tz", "Mars/Base"],
         "unknown time zone 'Mars/Base'"),
        (["--task", "demo.noop", "--every", "0s"], "interval must be positive"),
        (["--task", "demo.noop", "--every", "-5m"], "interval must be positive"),
        (["--task", "demo.noop", "--every", "1m", "--args", "[1,"], "args is not valid JSON"),
        (["--task", "demo.noop", "--every", "1m", "--args", '{"a": 1}'],
         "args must be a JSON array"),
        (["--task", "demo.noop", "--every", "1m", "--kwargs", "[1]"],
         "kwargs must be a JSON object"),
        (["--task", "demo.noop", "--every", "1m", "--start", "2026-12-02T00:00Z",
          "--end", "2026-12-01T00:00Z"], "end"),
        (["--task", "demo.noop", "--at", "next tuesday"], "cannot read time"),
        (["--task", "demo.noop", "--every", "1m", "--cron", "* * * * *"], "only one of"),
        (["--task", "demo.noop"], "a timing is required"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(app, cli, args, message):
    out = cli("add", "bad", *args)
    assert out.exit_code != 0
    assert message in out.output
    assert "Traceback" not in out.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Schedule)) == 0


def test_bad_edit_changes_nothing(app, cli):
    cli("add", "keep", "--task", "demo.noop", "--every", "1m")
    out = cli("edit", "keep", "--cron", "not a cron")
    assert out.exit_code != 0 and "invalid cron expression" in out.output
    kept = _schedule(app, "keep")
    assert kept.kind == "interval" and kept.every_s == 60


def test_unknown_schedule_name(cli):
    for command in ("enable", "disable", "remove", "run"):
        out = cli(command, "ghost")
        assert out.exit_code != 0 and "no schedule named 'ghost'" in out.output


def test_duplicate_name_is_refused(cli):
    assert cli("add", "twice", "--task", "demo.noop", "--every", "1m").exit_code == 0
    out = cli("add", "twice", "--task", "demo.noop", "--every", "2m")
    assert out.exit_code != 0 and "already exists" in out.output
