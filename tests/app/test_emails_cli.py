"""`flask --app app emails send|list|cancel`."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from models import Email, db


@pytest.fixture
def cli(app, services):
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(args=["emails", *args], catch_exceptions=False)


def test_send_list_cancel(app, cli):
    out = cli("send", "a@example.com", "b@example.com", "--subject", "Report",
              "--text", "Numbers", "--in", "10m", "--key", "report-1")
    assert out.exit_code == 0, out.output
    email_id = int(out.output.split()[0])
    assert "scheduled" in out.output
    again = cli("send", "a@example.com", "--subject", "Report", "--text", "Numbers",
                "--in", "10m", "--key", "report-1")
    assert int(again.output.split()[0]) == email_id  # the same e-mail, not a second one

    rows = json.loads(cli("list", "--json").output)
    assert [r["id"] for r in rows] == [email_id]
    assert rows[0]["to"] == "a@example.com, b@example.com" and rows[0]["state"] == "scheduled"
    table = cli("list", "--state", "scheduled").output.splitlines()
    assert table[0].split()[:3] == ["ID", "STATE", "TO"] and len(table) == 2

    assert cli("cancel", str(email_id)).exit_code == 0
    out = cli("cancel", str(email_id))
    assert out.exit_code != 0 and "it is cancelled" in out.output
    assert cli("cancel", "999999").exit_code != 0


@pytest.mark.parametrize("args, message", [
    (["bad-address", "--subject", "s", "--text", "t"], "invalid e-mail address"),
    (["a@example.com", "--subject", "s", "--text", "t", "--in", "0s"], "interval must be positive"),
    (["a@example.com", "--subject", "s", "--text", "t", "--at", "soon"], "cannot read time"),
    (["a@example.com", "--subject", "s", "--text", "t", "--in", "1m", "--at",
      "2030-01-01T00:00Z"], "not both"),
])
def test_bad_input_writes_nothing(app, cli, args, message):
    out = cli("send", *args)
    assert out.exit_code != 0 and message in out.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Email)) == 0
