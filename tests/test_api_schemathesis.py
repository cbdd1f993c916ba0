"""Schemathesis against the API's own OpenAPI document: with an operator's token, every
operation's generated requests get no 5xx and answers that conform to the document.

One test walks the operations with `operation.as_strategy()`: schemathesis' lazy pytest
loader (`schemathesis.pytest.from_fixture`) fails under pytest 9 (it sets `node._nodeid`),
and the schema needs the session's app, which exists only once fixtures run.
"""
from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import make_user

#: Generated requests per operation.
EXAMPLES = 25


def test_api_conforms_to_its_schema(app, services):
    from app.tokens import create_token

    make_user(app, "fuzz@example.com", "operator")
    with app.app_context():
        token = create_token("fuzz@example.com", "schemathesis")[1]
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20

    failures = []
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(headers=headers,
                                   checks=[not_a_server_error, response_schema_conformance])

        try:
            check()
        except Exception as exc:  # collect them all, then fail with every one
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
