"""The REST API against its own OpenAPI document (schemathesis): no 500 on any generated input.

Every operation gets schema-valid and schema-violating requests (bounded, so the
run stays short), as an admin and without credentials. Each response must not be
a server error, must use a documented status code and, on success, match the
documented schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.channels.web.conftest import Web, serve_in_thread, web_app, web_settings
from ticketing.access import Role, create_api_token
from ticketing.db import Database

EXAMPLES_PER_OPERATION = 20


@pytest.fixture
def live_api(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A running server with a few tickets; yields (base URL, admin token)."""
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    database = Database(url)
    database.migrate()
    database.dispose()
    app, asgi = web_app(web_settings(tmp_path, url))
    try:
        with serve_in_thread(asgi) as base_url:
            seeded = Web(base_url=base_url, app=app)
            seeded.ticket(group="network")
            seeded.ticket(requester="frank@demo.local", group="hardware", subject="Printer jammed")
            with app.db.transaction() as session:
                _, token = create_api_token(session, agent="carol@example.com", role=Role.ADMIN)
            yield base_url, token
    finally:
        app.db.dispose()


def test_no_server_error_on_generated_requests(live_api: tuple[str, str]) -> None:
    base_url, token = live_api
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 13
    failures: list[str] = []
    calls: list[int] = []

    def fuzz(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> None:
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def exercise(case: schemathesis.Case) -> None:
            response = case.call(base_url=base_url, headers=headers, timeout=15)
            calls.append(response.status_code)
            checks = [not_a_server_error, status_code_conformance]
            if mode is GenerationMode.POSITIVE and response.status_code < 300:
                checks.append(response_schema_conformance)
            try:
                case.validate_response(response, checks=checks)
            except (AssertionError, FailureGroup) as exc:  # collected, so one run reports every failing operation
                failures.append(f"{operation.label} ({mode.value}, auth={bool(headers)}): {exc}")

        exercise()

    for operation in operations:
        for mode in GenerationMode:
            for headers in ({"Authorization": f"Bearer {token}"}, {}):
                fuzz(operation, mode, headers)
    print(f"\nschemathesis: {len(calls)} requests over {len(operations)} operations, statuses {sorted(set(calls))}")
    assert not failures, "\n\n".join(failures[:5])
    # Enough requests reached the server, and not only the authentication check.
    assert len(calls) >= len(operations) * 20, len(calls)
    assert {200, 401, 404, 422} <= set(calls), sorted(set(calls))
