"""Errors, auth and probes over real HTTP: what every route relies on."""

from __future__ import annotations

import httpx

from app.config import Settings
from app.main import create_app
from tests.support.live_api import LiveApi, serving


def test_health_and_readiness(live_api: LiveApi) -> None:
    assert live_api.client.get("/healthz").json() == {"status": "ok"}
    assert live_api.client.get("/readyz").json() == {"status": "ready"}


def test_unknown_route_is_a_problem(live_api: LiveApi) -> None:
    response = live_api.client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"
    assert response.json()["type"] == "/problems/not_found"


def test_v1_needs_a_valid_api_key(live_api: LiveApi) -> None:
    for headers in ({}, {"Authorization": "Bearer ib_nothere_x"}, {"Authorization": "Basic eA=="}):
        response = httpx.get(f"{live_api.base_url}/v1/mailboxes", headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_database_that_does_not_answer_is_a_503_problem(settings: Settings) -> None:
    unreachable = settings.model_copy(
        update={"database_url": "postgresql://nobody@127.0.0.1:9/nothing?connect_timeout=2"}
    )
    with serving(create_app(unreachable)) as base_url:
        listed = httpx.get(
            f"{base_url}/v1/mailboxes", headers={"Authorization": "Bearer ib_abcd1234_secret"}
        )
        ready = httpx.get(f"{base_url}/readyz")
    for response in (listed, ready):
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "database_unavailable"
    assert listed.headers["retry-after"] == "5"
    assert "nobody" not in listed.text  # no connection details leak


def test_readiness_names_the_dependencies_down_and_never_the_database_error(
    settings: Settings,
) -> None:
    down = settings.model_copy(
        update={
            "database_url": "postgresql://crm_admin_7q@db-primary-7q.invalid:5432/crm"
            "?connect_timeout=2",
            "redis_url": "redis://127.0.0.1:9/0",
        }
    )
    with serving(create_app(down)) as base_url:
        ready = httpx.get(f"{base_url}/readyz", timeout=30)

    assert ready.status_code == 503
    for connection_detail in ("crm_admin_7q", "db-primary-7q", "5432"):
        assert connection_detail not in ready.text, f"{connection_detail!r} leaked: {ready.text}"
    assert ready.headers["content-type"] == "application/problem+json"
    assert int(ready.headers["retry-after"]) > 0
    problem = ready.json()
    assert problem["code"] == "database_unavailable"
    assert problem["detail"] == "not ready: database and redis are down"
