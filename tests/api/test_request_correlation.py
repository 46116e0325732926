"""Every answer names its request's correlation id in `X-Request-ID` (real uvicorn)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.live_api import LiveApi

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    "offered", ["crm-7f3a:42", "0f8fad5b-d9cb-469f-a165-70867728950e", "YWJj/ZA+=="]
)
def test_a_sane_request_id_from_the_caller_is_kept_and_echoed(
    live_api: LiveApi, offered: str
) -> None:
    answer = live_api.client.get("/v1/mailboxes", headers={"X-Request-ID": offered})

    assert answer.status_code == 200
    assert answer.headers["X-Request-ID"] == offered


@pytest.mark.parametrize(
    "offered", ["", "two words", "x" * 65, "semi;colon", "caf\u00e9".encode().decode("latin-1")]
)
def test_a_request_id_that_is_not_sane_is_replaced_by_a_new_one(
    live_api: LiveApi, offered: str
) -> None:
    answer = live_api.client.get(
        "/v1/mailboxes", headers=[(b"X-Request-ID", offered.encode("latin-1"))]
    )

    assert answer.status_code == 200
    assert GENERATED.fullmatch(answer.headers["X-Request-ID"]), answer.headers["X-Request-ID"]


def test_every_answer_carries_its_own_new_request_id_when_none_was_sent(live_api: LiveApi) -> None:
    answers = [
        live_api.client.get("/healthz"),
        live_api.client.get("/v1/mailboxes/999999"),  # 404 problem
        httpx.get(f"{live_api.base_url}/v1/mailboxes"),  # 401 problem, no key
        live_api.client.post(
            "/v1/mailboxes", content=b"{", headers={"Content-Type": "application/json"}
        ),  # 422 problem
    ]

    assert [a.status_code for a in answers] == [200, 404, 401, 422]
    ids = [a.headers.get("X-Request-ID", "") for a in answers]
    assert all(GENERATED.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids), "two requests shared an id"
