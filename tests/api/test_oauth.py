"""`/v1/oauth/...` over HTTP: provider settings, the popup flow's server side, get-token,
check-connection against a Dovecot that validates the tokens itself.

Google's and Microsoft's endpoints are faked with respx (their real answer
shapes); requests to the live API on 127.0.0.1 pass through untouched.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
import sqlalchemy as sa
from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import AuthType, Mailbox, OAuthFlow, OAuthProviderSettings, utcnow
from app.security import SecretBox
from tests.support.dovecot import Dovecot, DovecotInstances, MailUser
from tests.support.live_api import LiveApi
from tests.support.mailgen import make_message
from tests.support.oauth_rig import (
    GOOGLE_CLIENT_ID,
    GOOGLE_INVALID_CLIENT,
    GOOGLE_INVALID_GRANT,
    GOOGLE_TOKEN_URL,
    MICROSOFT_CLIENT_ID,
    MICROSOFT_INVALID_CLIENT,
    MICROSOFT_INVALID_GRANT,
    google_tokens,
    oauth_dovecot,
    sign_jwt,
)
from tests.support.secret_watch import SecretKind, register_secret

CRM_ORIGIN = "https://crm.example.com"
MICROSOFT_TENANT = "contoso.onmicrosoft.com"
MICROSOFT_TOKEN_URL = f"https://login.microsoftonline.com/{MICROSOFT_TENANT}/oauth2/v2.0/token"


@pytest.fixture
def jwt_dovecot(dovecot_instances: DovecotInstances) -> Dovecot:
    return oauth_dovecot(dovecot_instances)


@pytest.fixture
def settings(settings: Settings, jwt_dovecot: Dovecot, request: pytest.FixtureRequest) -> Settings:
    """The CRM page's origin is allowed, unless a test asks for the default (`[]`)."""
    origins = getattr(request, "param", [CRM_ORIGIN])
    return settings.model_copy(
        update={
            "imap_ca_file": jwt_dovecot.ca_file,
            "public_base_url": "https://bridge.test",
            "oauth_allowed_origins": origins,
        }
    )


@pytest.fixture
def providers() -> Iterator[respx.Router]:
    """Fake Google's and Microsoft's endpoints; everything on loopback goes through."""
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()
        yield router


@pytest.fixture
def gmail_enabled(live_api: LiveApi, providers: respx.Router) -> None:
    register_secret(SecretKind.OAUTH_CLIENT_SECRET, "GOCSPX-secret", "Gmail")
    probe = providers.post(GOOGLE_TOKEN_URL).respond(400, json=GOOGLE_INVALID_GRANT)
    answer = live_api.client.put(
        "/v1/oauth/providers/gmail",
        json={"client_id": GOOGLE_CLIENT_ID, "client_secret": "GOCSPX-secret", "enabled": True},
    )
    assert answer.status_code == 200, answer.text
    assert probe.called
    providers.reset()  # tests count only their own calls


def provider_settings(engine: Engine, name: str) -> OAuthProviderSettings | None:
    with session_scope(engine) as session:
        return session.get(OAuthProviderSettings, name)


def authorize(live_api: LiveApi, origin: str = CRM_ORIGIN, **extra: Any) -> dict[str, Any]:
    answer = live_api.client.post("/v1/oauth/gmail/authorize", json={"origin": origin, **extra})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_providers_list_the_built_ins_without_secrets(live_api: LiveApi) -> None:
    answer = live_api.client.get("/v1/oauth/providers")

    assert answer.status_code == 200
    by_name = {p["name"]: p for p in answer.json()}
    assert {"gmail", "microsoft"} <= set(by_name)
    gmail = by_name["gmail"]
    assert gmail["enabled"] is False
    assert gmail["has_client_secret"] is False
    assert gmail["redirect_uri"] == "https://bridge.test/oauth/gmail/callback"
    assert gmail["imap"] == {"host": "imap.gmail.com", "port": 993, "security": "ssl"}
    assert by_name["microsoft"]["uses_tenant"] is True


def test_enabling_with_a_secret_google_refuses_is_422_and_saves_nothing(
    live_api: LiveApi, providers: respx.Router, engine: Engine
) -> None:
    providers.post(GOOGLE_TOKEN_URL).respond(401, json=GOOGLE_INVALID_CLIENT)
    register_secret(SecretKind.OAUTH_CLIENT_SECRET, "GOCSPX-bad", "refused by Google")

    answer = live_api.client.put(
        "/v1/oauth/providers/gmail",
        json={"client_id": GOOGLE_CLIENT_ID, "client_secret": "GOCSPX-bad", "enabled": True},
    )

    assert answer.status_code == 422
    problem = answer.json()
    assert problem["code"] == "invalid_client"
    assert problem["errors"][0]["field"] == "client_secret"
    assert "GOCSPX-bad" not in answer.text
    stored = provider_settings(engine, "gmail")
    assert stored is None or not stored.enabled


def test_enabling_checks_the_credentials_and_stores_the_secret_encrypted(
    live_api: LiveApi, providers: respx.Router, engine: Engine, settings: Settings
) -> None:
    probe = providers.post(GOOGLE_TOKEN_URL).respond(400, json=GOOGLE_INVALID_GRANT)
    register_secret(SecretKind.OAUTH_CLIENT_SECRET, "GOCSPX-right", "Gmail")

    answer = live_api.client.put(
        "/v1/oauth/providers/gmail",
        json={"client_id": GOOGLE_CLIENT_ID, "client_secret": "GOCSPX-right", "enabled": True},
    )

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["enabled"] is True
    assert body["has_client_secret"] is True
    assert "GOCSPX-right" not in answer.text
    sent = parse_qs(probe.calls.last.request.content.decode())
    assert sent["client_secret"] == ["GOCSPX-right"]
    stored = provider_settings(engine, "gmail")
    assert stored is not None
    assert stored.client_secret_enc is not None
    assert "GOCSPX-right" not in stored.client_secret_enc
    assert SecretBox.from_settings(settings).decrypt(stored.client_secret_enc) == "GOCSPX-right"


def test_microsoft_checks_against_its_tenant_and_refuses_a_bad_secret(
    live_api: LiveApi, providers: respx.Router
) -> None:
    providers.post(MICROSOFT_TOKEN_URL).respond(401, json=MICROSOFT_INVALID_CLIENT)
    settings_body = {
        "client_id": MICROSOFT_CLIENT_ID,
        "client_secret": "bad",
        "tenant": MICROSOFT_TENANT,
        "enabled": True,
    }

    refused = live_api.client.put("/v1/oauth/providers/microsoft", json=settings_body)
    providers.post(MICROSOFT_TOKEN_URL).respond(400, json=MICROSOFT_INVALID_GRANT)
    accepted = live_api.client.put(
        "/v1/oauth/providers/microsoft", json=settings_body | {"client_secret": "good"}
    )

    assert refused.status_code == 422
    assert refused.json()["code"] == "invalid_client"
    assert accepted.status_code == 200
    assert accepted.json()["tenant"] == MICROSOFT_TENANT


@pytest.mark.parametrize(
    ("name", "body", "field"),
    [
        ("microsoft", {"client_id": MICROSOFT_CLIENT_ID, "tenant": "a/b"}, "tenant"),
        ("microsoft", {"client_id": MICROSOFT_CLIENT_ID, "tenant": "contoso.com\n"}, "tenant"),
        ("gmail", {"client_id": "123"}, "client_id"),
        ("gmail", {"client_id": GOOGLE_CLIENT_ID, "enabled": True}, "client_secret"),
    ],
)
def test_invalid_provider_settings_name_the_field(
    live_api: LiveApi, name: str, body: dict[str, Any], field: str
) -> None:
    answer = live_api.client.put(f"/v1/oauth/providers/{name}", json=body)

    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == field


def test_unknown_provider_is_404(live_api: LiveApi) -> None:
    answer = live_api.client.put("/v1/oauth/providers/yahoo", json={"client_id": "x"})
    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found"


def test_a_disabled_provider_cannot_start_a_flow(live_api: LiveApi) -> None:
    answer = live_api.client.post("/v1/oauth/gmail/authorize", json={"origin": CRM_ORIGIN})

    assert answer.status_code == 409
    assert answer.json()["code"] == "provider_disabled"


@pytest.mark.usefixtures("gmail_enabled")
@pytest.mark.parametrize(
    "origin", ["crm.example.com", "https://crm.example.com/page", "javascript:alert(1)"]
)
def test_authorize_takes_only_an_origin(live_api: LiveApi, origin: str) -> None:
    answer = live_api.client.post("/v1/oauth/gmail/authorize", json={"origin": origin})

    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "origin"


@pytest.mark.usefixtures("gmail_enabled")
@pytest.mark.parametrize(
    ("settings", "allowed", "refused"),
    [
        ([CRM_ORIGIN, "http://localhost:8080"], "http://localhost:8080", "https://evil.example"),
        (["http://localhost:49152"], "http://localhost:49152", "http://localhost:49153"),
        ([], "https://bridge.test", CRM_ORIGIN),
    ],
    indirect=["settings"],
    ids=["listed", "five-digit port", "unset: PUBLIC_BASE_URL only"],
)
def test_authorize_binds_flows_only_to_allowed_origins(
    live_api: LiveApi, engine: Engine, allowed: str, refused: str
) -> None:
    works = live_api.client.post("/v1/oauth/gmail/authorize", json={"origin": allowed})
    refusal = live_api.client.post("/v1/oauth/gmail/authorize", json={"origin": refused})

    assert works.status_code == 200, works.text
    assert refusal.status_code == 422, refusal.text
    assert refusal.json()["code"] == "origin_not_allowed"
    assert [error["field"] for error in refusal.json()["errors"]] == ["origin"]
    with session_scope(engine) as session:
        origins = [flow.origin for flow in session.scalars(sa.select(OAuthFlow))]
    assert refused not in origins, "a flow was opened for a refused origin"


@pytest.mark.usefixtures("gmail_enabled")
def test_authorize_builds_a_pkce_url_for_google(live_api: LiveApi) -> None:
    started = authorize(live_api, login_hint="ann@example.com")

    url = urlsplit(started["authorization_url"])
    query = {key: values[0] for key, values in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}{url.path}" == (
        "https://accounts.google.com/o/oauth2/v2/auth"
    )
    assert query["response_type"] == "code"
    assert query["client_id"] == GOOGLE_CLIENT_ID
    assert query["redirect_uri"] == "https://bridge.test/oauth/gmail/callback"
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert query["state"] == started["state"]
    assert query["access_type"] == "offline"
    assert query["login_hint"] == "ann@example.com"
    assert "https://mail.google.com/" in query["scope"].split()


@pytest.mark.usefixtures("gmail_enabled")
def test_the_callback_page_posts_the_code_to_the_bound_origin_only(live_api: LiveApi) -> None:
    state = authorize(live_api)["state"]

    page = httpx.get(
        f"{live_api.base_url}/oauth/gmail/callback", params={"code": "4/0Ab", "state": state}
    )
    unknown = httpx.get(
        f"{live_api.base_url}/oauth/gmail/callback", params={"code": "4/0Ab", "state": "forged"}
    )

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'nonce-" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    message = {"type": "imap-bridge-oauth", "provider": "gmail", "state": state, "code": "4/0Ab"}
    assert f'postMessage({json.dumps(message)}, "{CRM_ORIGIN}")' in page.text
    assert unknown.status_code == 400
    assert "postMessage" not in unknown.text


def test_a_state_with_a_nul_is_refused_before_the_database_sees_it(live_api: LiveApi) -> None:
    callback = httpx.get(
        f"{live_api.base_url}/oauth/gmail/callback", params={"code": "c", "state": "a\x00"}
    )
    token = live_api.client.post("/v1/oauth/gmail/token", json={"code": "c", "state": "a\x00"})

    for response in (callback, token):
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"].endswith("state")


@pytest.mark.usefixtures("gmail_enabled")
def test_the_callback_page_passes_on_a_denial(live_api: LiveApi) -> None:
    state = authorize(live_api)["state"]

    page = httpx.get(
        f"{live_api.base_url}/oauth/gmail/callback",
        params={"error": "access_denied", "state": state},
    )

    assert '"error": "access_denied"' in page.text
    assert CRM_ORIGIN in page.text


def test_get_token_exchanges_the_code_with_the_verifier_once(
    live_api: LiveApi, providers: respx.Router, gmail_enabled: None
) -> None:
    started = authorize(live_api)
    challenge = parse_qs(urlsplit(started["authorization_url"]).query)["code_challenge"][0]
    token_route = providers.post(GOOGLE_TOKEN_URL).respond(
        200,
        json=google_tokens("ya29.access", refresh_token="1//refresh", email="Ann@Gmail.com"),
    )
    body = {"code": "4/0Ab-code", "state": started["state"]}

    answer = live_api.client.post("/v1/oauth/gmail/token", json=body)
    replay = live_api.client.post("/v1/oauth/gmail/token", json=body)

    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "access_token": "ya29.access",
        "refresh_token": "1//refresh",
        "expires_in": 3599,
        "email_address": "ann@gmail.com",
    }
    sent = parse_qs(token_route.calls.last.request.content.decode())
    assert sent["code"] == ["4/0Ab-code"]
    assert sent["redirect_uri"] == ["https://bridge.test/oauth/gmail/callback"]
    verifier_hash = hashlib.sha256(sent["code_verifier"][0].encode()).digest()
    assert base64.urlsafe_b64encode(verifier_hash).rstrip(b"=").decode() == challenge
    assert replay.status_code == 400
    assert replay.json()["code"] == "state_used"
    assert token_route.call_count == 1


@pytest.mark.usefixtures("gmail_enabled")
def test_an_expired_or_foreign_state_is_refused(live_api: LiveApi, engine: Engine) -> None:
    state = authorize(live_api)["state"]
    with session_scope(engine) as session:
        session.execute(
            sa.update(OAuthFlow)
            .where(OAuthFlow.state == state)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )

    expired = live_api.client.post("/v1/oauth/gmail/token", json={"code": "c", "state": state})
    foreign = live_api.client.post("/v1/oauth/gmail/token", json={"code": "c", "state": "x" * 43})
    page = httpx.get(
        f"{live_api.base_url}/oauth/gmail/callback", params={"code": "c", "state": state}
    )

    assert expired.status_code == 400
    assert expired.json()["code"] == "state_expired"
    assert foreign.status_code == 400
    assert foreign.json()["code"] == "invalid_state"
    assert '"error": "state_expired"' in page.text


def test_check_connection_logs_in_with_the_token(live_api: LiveApi, jwt_dovecot: Dovecot) -> None:
    user = jwt_dovecot.add_user()
    message = make_message()
    user.append("INBOX", message)
    imap = {"host": jwt_dovecot.host, "port": jwt_dovecot.tls_port, "username": user.name}

    works = live_api.client.post(
        "/v1/oauth/gmail/check-connection",
        json={"access_token": sign_jwt(user.name), "imap": imap},
    )
    yes_or_no = live_api.client.post(
        "/v1/oauth/gmail/check-connection",
        params={"preview": "false"},
        json={"access_token": sign_jwt(user.name), "imap": imap},
    )
    expired = live_api.client.post(
        "/v1/oauth/gmail/check-connection",
        json={"access_token": sign_jwt(user.name, expires_in=-60), "imap": imap},
    )

    assert works.status_code == 200, works.text
    assert "INBOX" in {folder["full_name"] for folder in works.json()["folders"]}
    preview = works.json()["preview"]
    assert (preview["messages"], preview["bytes"]) == (1, len(message))
    assert yes_or_no.status_code == 200, yes_or_no.text
    assert yes_or_no.json()["preview"] is None
    assert expired.status_code == 422
    assert expired.json()["code"] == "auth_failed"


def test_a_mailbox_registered_with_oauth_stores_its_tokens_encrypted(
    live_api: LiveApi, jwt_dovecot: Dovecot, engine: Engine, settings: Settings
) -> None:
    user: MailUser = jwt_dovecot.add_user()
    access_token = sign_jwt(user.name)
    register_secret(SecretKind.REFRESH_TOKEN, "1//refresh", "sent by the CRM")

    answer = live_api.client.post(
        "/v1/mailboxes",
        json={
            "email_address": f"{user.name}@example.com",
            "owner": {"user_id": "crm-7"},
            "imap": {"host": jwt_dovecot.host, "port": jwt_dovecot.tls_port, "username": user.name},
            "auth": {
                "type": "oauth",
                "provider": "gmail",
                "access_token": access_token,
                "refresh_token": "1//refresh",
                "expires_in": 3599,
            },
        },
    )

    assert answer.status_code == 201, answer.text
    assert answer.json()["auth"] == {"type": "oauth", "provider": "gmail"}
    assert access_token not in answer.text
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, answer.json()["id"])
    assert mailbox is not None
    assert mailbox.auth_type is AuthType.OAUTH
    secrets = SecretBox.from_settings(settings)
    assert mailbox.access_token_enc is not None
    assert mailbox.refresh_token_enc is not None
    assert access_token not in mailbox.access_token_enc
    assert secrets.decrypt(mailbox.access_token_enc) == access_token
    assert secrets.decrypt(mailbox.refresh_token_enc) == "1//refresh"
    assert mailbox.token_expires_at is not None


def test_the_js_module_is_served(live_api: LiveApi) -> None:
    answer = httpx.get(f"{live_api.base_url}/static/imap-bridge-oauth.js")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/javascript")
    assert "export function connectMailbox" in answer.text


def test_problem_bodies_never_echo_tokens(live_api: LiveApi) -> None:
    answer = live_api.client.post(
        "/v1/oauth/gmail/check-connection",
        json={"access_token": "secret-token-value", "email_address": "not-an-address"},
    )
    assert answer.status_code == 422
    assert "secret-token-value" not in json.dumps(answer.json())
