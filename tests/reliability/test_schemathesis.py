"""Generated requests for every operation of openapi/openapi.json, against the running app.

schemathesis builds requests from the checked-in document (valid ones, with the API key)
and sends them to a real uvicorn on a real database. No answer may be a 5xx, and every
answer must be one the document declares: status code, content type (problems as
`application/problem+json`, RFC 9457) and body schema.

The one 5xx allowed is the gateway answer about an IMAP server that cannot be reached,
a documented 502/503/504 problem (`unreachable`, `timeout`...); a 500 is always a failure.

Left out: `GET /v1/events`, a Server-Sent Events stream that stays open by design
(tests/api/test_events_sse.py covers it). Operations that talk to an IMAP server (remote
search, connection checks) stay in: generated mailbox ids name no mailbox, and generated
hosts fail at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import APIOperation, Case, CheckContext, Response
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from app.config import Settings
from tests.live_api import LiveApi

DOCUMENT = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
EXAMPLES_PER_OPERATION = 5
LEFT_OUT = {"GET /v1/events"}
AnyCase = Case[Any]
AnyOperation = APIOperation[Any, Any, Any, Any]
GATEWAY_STATUSES = {502, 503, 504}


def no_internal_error(ctx: CheckContext, response: Response, case: AnyCase) -> bool | None:
    """Fail on any 5xx except the gateway answers about the IMAP server (502/503/504)."""
    if response.status_code in GATEWAY_STATUSES:
        return None  # status_code_conformance checks the operation documents it
    return not_a_server_error(ctx, response, case)


CHECKS = [
    no_internal_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

SCHEMA = schemathesis.openapi.from_path(DOCUMENT)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations() if isinstance(result, Ok)]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings with a rate limit no bounded run reaches (429 is tested elsewhere).

    Generated IMAP hosts must fail fast instead of waiting out a connect timeout.
    """
    return settings.model_copy(
        update={"api_rate_limit_per_minute": 10_000, "imap_connect_timeout": 1}
    )


def check_operation(operation: AnyOperation, live_api: LiveApi) -> None:
    """Send `EXAMPLES_PER_OPERATION` generated requests to one operation and check each answer."""
    headers = {"Authorization": f"Bearer {live_api.api_key}"}

    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: AnyCase) -> None:
        response = case.call(base_url=live_api.base_url, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS)

    run()


def test_every_operation_answers_as_documented_and_never_5xx(live_api: LiveApi) -> None:
    documented = sum(len(item) for item in SCHEMA.raw_schema["paths"].values())
    assert len(OPERATIONS) == documented, "some operations of the document did not load"
    checked = [operation for operation in OPERATIONS if operation.label not in LEFT_OUT]
    assert len(checked) == documented - len(LEFT_OUT)
    for operation in checked:
        check_operation(operation, live_api)
