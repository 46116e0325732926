"""What OAuth tests share: a Dovecot that checks JWTs itself, providers' real answers,
and a plug-in provider for a local authorization server.

The test Dovecot validates HS256 JWTs with `JWT_KEY` (its oauth2 passdb in
`introspection_mode = local`), so a token signed here logs in for real and an
expired one is refused by the server, not by us. Google's and Microsoft's
endpoints are faked with respx only, in the shapes they really answer with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from app.db import session_scope
from app.db.models import OAuthProviderSettings
from app.oauth.registry import ENTRY_POINT_GROUP, installed_providers
from app.security import SecretBox
from tests.support.dovecot import Dovecot, DovecotInstances
from tests.support.secret_watch import SecretKind, register_secret

JWT_KEY = secrets.token_bytes(32)
register_secret(SecretKind.JWT_SIGNING_KEY, base64.b64encode(JWT_KEY).decode(), "test Dovecot's")
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GOOGLE_CLIENT_ID = "1234567890-abcdefghijklmnop.apps.googleusercontent.com"
MICROSOFT_CLIENT_ID = "00000000-1111-2222-3333-444444444444"


def configure_gmail(engine: Engine, secrets: SecretBox) -> None:
    """Enable Gmail with a client, as an operator does through the API."""
    with session_scope(engine) as session:
        session.add(
            OAuthProviderSettings(
                name="gmail",
                client_id=GOOGLE_CLIENT_ID,
                client_secret_enc=secrets.encrypt(
                    register_secret(SecretKind.OAUTH_CLIENT_SECRET, "client-secret", "Gmail")
                ),
                enabled=True,
            )
        )


def oauth_dovecot(instances: DovecotInstances) -> Dovecot:
    """Return the session's Dovecot that logs XOAUTH2 users in with JWTs signed by JWT_KEY."""
    return instances.get(oauth_jwt_key=JWT_KEY)


PROVIDER_SOURCE = """
from app.oauth.providers import OAuthProvider


class LocalProvider(OAuthProvider):
    name = "{name}"
    display_name = "Local test IdP"
    authorize_url = "{server}/authorize"
    token_url = "{server}/token"
    scopes = ("openid", "email", "mail")
    imap_host = "127.0.0.1"
    imap_port = {imap_port}
    uses_tenant = {uses_tenant}
"""


@contextmanager
def provider_plugin(
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    server_url: str,
    imap_port: int,
    *,
    uses_tenant: bool = False,
) -> Iterator[str]:
    """Install a distribution whose entry point adds a provider for the server at `server_url`
    (which may hold `{tenant}`), whose IMAP server listens with TLS on 127.0.0.1:`imap_port`."""
    module = f"local_idp_{uuid.uuid4().hex[:8]}"
    name = module.replace("_", "-")
    (directory / f"{module}.py").write_text(
        PROVIDER_SOURCE.format(
            name=name, server=server_url, imap_port=imap_port, uses_tenant=uses_tenant
        )
    )
    dist_info = directory / f"{module}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n{name} = {module}:LocalProvider\n"
    )
    monkeypatch.syspath_prepend(str(directory))
    installed_providers.cache_clear()  # the registry is read once per process
    try:
        yield name
    finally:
        installed_providers.cache_clear()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(subject: str, *, expires_in: int = 3600, key: bytes = JWT_KEY) -> str:
    """Return an HS256 JWT for `subject` (Dovecot wants `typ` exactly `JWT`)."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64url(json.dumps({"sub": subject, "exp": int(time.time()) + expires_in}).encode())
    signature = hmac.new(key, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    token = f"{header}.{claims}.{_b64url(signature)}"
    return register_secret(SecretKind.ACCESS_TOKEN, token, f"JWT of {subject}")


def id_token(claims: dict[str, Any]) -> str:
    """An ID token as the provider's token endpoint returns it (RS256; the client reads it)."""
    header = _b64url(json.dumps({"alg": "RS256", "kid": "test", "typ": "JWT"}).encode())
    body = _b64url(json.dumps({"iat": int(time.time()), **claims}).encode())
    return register_secret(
        SecretKind.ID_TOKEN, f"{header}.{body}.{_b64url(secrets.token_bytes(64))}"
    )


def google_tokens(
    access_token: str, *, refresh_token: str | None = None, email: str | None = None
) -> dict[str, Any]:
    """Google's token endpoint answer (refresh answers carry no new refresh token)."""
    register_secret(SecretKind.ACCESS_TOKEN, access_token, "from Google")
    answer: dict[str, Any] = {
        "access_token": access_token,
        "expires_in": 3599,
        "scope": "openid https://mail.google.com/ https://www.googleapis.com/auth/userinfo.email",
        "token_type": "Bearer",
    }
    if refresh_token is not None:
        answer["refresh_token"] = register_secret(
            SecretKind.REFRESH_TOKEN, refresh_token, "from Google"
        )
    if email is not None:
        answer["id_token"] = id_token(
            {"iss": "https://accounts.google.com", "sub": "1098", "email": email}
        )
    return answer


def microsoft_tokens(access_token: str, refresh_token: str, username: str) -> dict[str, Any]:
    """Microsoft identity platform v2.0 token answer; it rotates the refresh token every time."""
    register_secret(SecretKind.ACCESS_TOKEN, access_token, "from Microsoft")
    register_secret(SecretKind.REFRESH_TOKEN, refresh_token, "from Microsoft")
    return {
        "token_type": "Bearer",
        "scope": "https://outlook.office.com/IMAP.AccessAsUser.All openid email",
        "expires_in": 3599,
        "ext_expires_in": 3599,
        "access_token": access_token,
        "refresh_token": refresh_token,
        "id_token": id_token({"preferred_username": username, "tid": "t", "ver": "2.0"}),
    }


GOOGLE_INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "Token has been expired or revoked.",
}
GOOGLE_INVALID_CLIENT = {"error": "invalid_client", "error_description": "Unauthorized"}
MICROSOFT_INVALID_CLIENT = {
    "error": "invalid_client",
    "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret"
    " being sent in the request is the client secret value, not the client secret ID.",
    "error_codes": [7000215],
    "timestamp": "2026-11-25 10:00:00Z",
    "trace_id": "0b6a1c1e-0000-0000-0000-000000000000",
    "correlation_id": "5e0f0e5a-0000-0000-0000-000000000000",
    "error_uri": "https://login.microsoftonline.com/error?code=7000215",
}
MICROSOFT_INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "AADSTS70000: The provided value for the 'code' parameter is not valid.",
    "error_codes": [70000],
    "error_uri": "https://login.microsoftonline.com/error?code=70000",
}
