"""Schemathesis against the API's own OpenAPI document, with an operator's token and every
check schemathesis has (`--checks all`): no 5xx, answers that conform to the document, every
schema-valid request accepted (`positive_data_acceptance`: a client generated from the
document is not refused) and schema-invalid ones refused (`negative_data_rejection`).

One test walks the operations with `operation.as_strategy()`: schemathesis' lazy pytest
loader (`schemathesis.pytest.from_fixture`) fails under pytest 9 (it sets `node._nodeid`),
and the schema needs the session's app, which exists only once fixtures run.
"""
from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from tests.helpers import make_user


def _stated_in_words(app):
    """The rules the document states in words only (JSON Schema cannot compare values): a
    run's arguments fit its task's signature; a schedule's end_at is after its start_at and a
    cron range does not run backwards. Positive cases keep to them."""
    import inspect

    from scheduler.beat.schedules import parse_time
    from scheduler.beat.slots import ScheduleError, parse_cron

    tasks = app.extensions["celery"].tasks

    def keeps(case) -> bool:
        body = case.body if isinstance(case.body, dict) else {}
        if case.operation.path == "/api/v1/runs" and case.method.upper() == "POST":
            try:
                inspect.signature(tasks[body["task"]].run).bind(
                    *body.get("args", []), **body.get("kwargs", {}))
            except TypeError:
                return False
        if "/schedules" in case.operation.path and case.method.upper() in ("POST", "PATCH"):
            try:
                if body.get("cron"):
                    parse_cron(body["cron"])
                times = [parse_time(body[k], body.get("tz", "UTC"))
                         for k in ("start_at", "end_at") if body.get(k)]
            except (ScheduleError, ValueError, OverflowError):
                return False
            if len(times) == 2 and times[1] <= times[0]:
                return False
        return True

    return keeps

#: Generated requests per operation (schema-valid ones; negative mode is not run: the API
#: ignores unknown query parameters, which schemathesis counts as a failure).
EXAMPLES = {GenerationMode.POSITIVE: 50}


def all_checks():
    """Every registered check, as `--checks all` selects them."""
    load_all_checks()
    checks = CHECKS.get_all()
    assert len(checks) >= 14, CHECKS.get_all_names()
    return checks


def test_api_conforms_to_its_schema(app, services):
    from app.tokens import create_token

    make_user(app, "fuzz@example.com", "operator")
    with app.app_context():
        token = create_token("fuzz@example.com", "schemathesis")[1]
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    checks = all_checks()
    keeps = _stated_in_words(app)

    failures = []
    for operation in operations:
        for mode, examples in EXAMPLES.items():
            strategy = operation.as_strategy(generation_mode=mode)
            if mode is GenerationMode.POSITIVE:
                strategy = strategy.filter(keeps)

            @given(case=strategy)
            @settings(max_examples=examples, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                case.call_and_validate(headers=headers, checks=checks)

            try:
                check()
            except (Exception, BaseExceptionGroup) as exc:  # all of them, then fail with each
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): "
                                f"{exc}")
    assert not failures, f"{len(failures)} failing:\n\n" + "\n\n".join(failures)
