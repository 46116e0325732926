"""`POST /v1/connection/check` over HTTP against the real Dovecot: each way it works or fails."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.connection_budget import Pool, connection_budget
from tests.support.dovecot import MailUser
from tests.support.live_api import LiveApi
from tests.support.secret_watch import SecretKind, register_secret


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """Return the shared settings, changed by `parametrize("settings", [...], indirect=True)`."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    return settings.model_copy(update=overrides)


def check_body(user: MailUser, **imap: Any) -> dict[str, Any]:
    settings = {
        "host": user.dovecot.host,
        "port": user.dovecot.tls_port,
        "security": "ssl",
        "username": user.name,
    }
    return {"imap": settings | imap, "auth": {"type": "password", "password": user.password}}


def check(live_api: LiveApi, body: dict[str, Any], *, secret: str) -> httpx.Response:
    """POST the check and make sure the answer never repeats the credential."""
    kind = SecretKind.ACCESS_TOKEN if body["auth"]["type"] == "oauth" else SecretKind.IMAP_PASSWORD
    register_secret(kind, secret, "sent to the connection check")
    response = live_api.client.post("/v1/connection/check", json=body)
    assert secret not in response.text
    return response


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code
    assert problem["type"] == f"/problems/{code}"
    return problem


def test_check_returns_capabilities_and_the_folder_tree_and_saves_nothing(
    live_api: LiveApi, mail_user: MailUser
) -> None:
    mail_user.create_folder("Projects/Acme")

    response = check(live_api, check_body(mail_user), secret=mail_user.password)

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["ok"] is True
    assert {"IMAP4REV1", "IDLE", "SPECIAL-USE"} <= set(result["capabilities"])
    roots = {node["full_name"]: node for node in result["folders"]}
    assert result["folders"][0]["full_name"] == "INBOX"
    assert roots["INBOX"]["type"] == "inbox"
    assert roots["Sent"] == {
        "full_name": "Sent",
        "name": "Sent",
        "delimiter": "/",
        "type": "sent",
        "selectable": True,
        "children": [],
    }
    assert {roots[name]["type"] for name in ("Drafts", "Trash", "Junk", "Archive")} == {
        "drafts",
        "trash",
        "spam",
        "archive",
    }
    (acme,) = roots["Projects"]["children"]
    assert (acme["full_name"], acme["name"], acme["type"]) == ("Projects/Acme", "Acme", "other")
    assert live_api.client.get("/v1/mailboxes").json()["items"] == []  # nothing saved


def test_wrong_password_is_auth_failed_naming_auth(live_api: LiveApi, mail_user: MailUser) -> None:
    body = check_body(mail_user)
    body["auth"]["password"] = "not-the-password-9f3k"

    response = check(live_api, body, secret="not-the-password-9f3k")

    problem = assert_problem(response, 422, "auth_failed")
    assert [error["field"] for error in problem["errors"]] == ["auth"]


def test_refused_oauth_token_is_auth_failed_and_never_repeated(
    live_api: LiveApi, mail_user: MailUser
) -> None:
    body = check_body(mail_user)
    token = "ya29.refused-token-b7c1"
    body["auth"] = {"type": "oauth", "provider": "gmail", "access_token": token}

    assert_problem(check(live_api, body, secret=token), 422, "auth_failed")


def test_an_unknown_oauth_provider_is_refused_naming_the_field(
    live_api: LiveApi, mail_user: MailUser
) -> None:
    body = check_body(mail_user)
    body["auth"] = {"type": "oauth", "provider": "google", "access_token": "ya29.token"}

    response = check(live_api, body, secret="ya29.token")

    assert_problem(response, 422, "validation_error")
    assert [error["field"] for error in response.json()["errors"]] == ["auth.provider"]


@pytest.mark.parametrize(
    "settings", [{"imap_ca_file": None}], indirect=True, ids=["system-trust-store"]
)
def test_certificate_from_an_untrusted_ca_is_tls_error(
    live_api: LiveApi, mail_user: MailUser
) -> None:
    response = check(live_api, check_body(mail_user), secret=mail_user.password)
    assert_problem(response, 502, "tls_error")

    starttls = check_body(mail_user, port=mail_user.dovecot.plain_port, security="starttls")
    assert_problem(check(live_api, starttls, secret=mail_user.password), 502, "tls_error")

    unverified = check_body(mail_user, tls_verify=False)
    assert check(live_api, unverified, secret=mail_user.password).status_code == 200


def test_closed_port_is_unreachable(live_api: LiveApi, mail_user: MailUser) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    response = check(live_api, check_body(mail_user, port=closed_port), secret=mail_user.password)

    assert_problem(response, 502, "unreachable")


@pytest.mark.parametrize(
    "settings", [{"imap_connect_timeout": 0.5}], indirect=True, ids=["half-second"]
)
def test_silent_server_is_timeout(live_api: LiveApi, mail_user: MailUser) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts the TCP handshake, never says a word
        body = check_body(mail_user, port=silent.getsockname()[1])

        response = check(live_api, body, secret=mail_user.password)

    assert_problem(response, 504, "timeout")


@pytest.mark.parametrize(
    "settings", [{"imap_allow_private_hosts": False}], indirect=True, ids=["public-only"]
)
def test_loopback_host_is_blocked_host_naming_imap_host(
    live_api: LiveApi, mail_user: MailUser
) -> None:
    for host in ("127.0.0.1", "localhost"):
        response = check(live_api, check_body(mail_user, host=host), secret=mail_user.password)

        problem = assert_problem(response, 422, "blocked_host")
        assert [error["field"] for error in problem["errors"]] == ["imap.host"]


def test_invalid_settings_name_each_field(live_api: LiveApi, mail_user: MailUser) -> None:
    body = check_body(mail_user, port=70000, security="tls", host="https://imap.example.com/")
    body["auth"] = {"type": "password"}

    problem = assert_problem(
        check(live_api, body, secret=mail_user.password), 422, "validation_error"
    )

    assert {error["field"] for error in problem["errors"]} == {
        "imap.port",
        "imap.security",
        "auth.password",
    }
    body = check_body(mail_user, host="https://imap.example.com/")
    bad_host = check(live_api, body, secret=mail_user.password)
    assert [e["field"] for e in assert_problem(bad_host, 422, "validation_error")["errors"]] == [
        "imap.host"
    ]
    unknown_type = check_body(mail_user)
    unknown_type["auth"] = {"type": "kerberos", "password": mail_user.password}
    response = check(live_api, unknown_type, secret=mail_user.password)
    problem = assert_problem(response, 422, "validation_error")
    assert [error["field"] for error in problem["errors"]] == ["auth"]


def test_check_needs_an_api_key(live_api: LiveApi, mail_user: MailUser) -> None:
    response = httpx.post(
        f"{live_api.base_url}/v1/connection/check", json=check_body(mail_user), timeout=10
    )
    assert_problem(response, 401, "unauthorized")


@pytest.mark.parametrize("settings", [{"imap_max_connections_per_host": 1}], indirect=True)
def test_check_answers_503_with_retry_after_while_every_slot_of_the_host_is_taken(
    live_api: LiveApi, mail_user: MailUser, settings: Settings
) -> None:
    budget = connection_budget(settings)

    with budget.slot(Pool.IMAP, mail_user.dovecot.host, "a-syncing-account", wait=0):
        refused = check(live_api, check_body(mail_user), secret=mail_user.password)
    allowed = check(live_api, check_body(mail_user), secret=mail_user.password)

    problem = assert_problem(refused, 503, "waiting_for_connection_slot")
    assert refused.headers["retry-after"] == "5"
    assert "1 of 1 per-host connections in use" in problem["detail"]
    assert allowed.status_code == 200, allowed.text


@pytest.mark.parametrize("settings", [{"redis_url": "redis://127.0.0.1:1/0"}], indirect=True)
def test_check_answers_503_with_retry_after_while_the_budget_redis_is_away(
    live_api: LiveApi, mail_user: MailUser
) -> None:
    response = check(live_api, check_body(mail_user), secret=mail_user.password)

    assert_problem(response, 503, "connection_budget_unavailable")
    assert response.headers["retry-after"] == "10"
