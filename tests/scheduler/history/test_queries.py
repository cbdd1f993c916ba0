"""scheduler.history.queries called directly: the counts of the runs list (the list itself is
tested through its page, in tests/app/test_admin_runs.py)."""
from __future__ import annotations

from scheduler.history import queries
from tests.factories import make_run


def test_counts_are_exact_when_small_and_bounded_when_big(app, viewer_client, monkeypatch):
    for _ in range(3):
        make_run(app, state="failed")
    make_run(app, state="succeeded")
    with app.app_context():
        assert str(queries.count_runs(queries.RunFilters(states=("failed",)))) == "3"
        monkeypatch.setattr(queries, "COUNT_EXACT_MAX", 2)
        assert str(queries.count_runs(queries.RunFilters(states=("failed",)))) \
            == "more than 2"
        monkeypatch.setattr(queries, "COUNT_ESTIMATE_FROM", 0)
        assert str(queries.count_runs(queries.RunFilters())).startswith("about ")
