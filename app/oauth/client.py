"""Talk to a provider's endpoints: authorization URL, code exchange, refresh, client check.

authlib builds the protocol pieces (PKCE S256 challenge, RFC 6749 grant URI,
random tokens); the token requests themselves are plain httpx POSTs, which
keeps one HTTP stack in the service (and one that respx can fake in tests).

Every provider answer leaves as one `OAuthError` subclass (RFC 6749 section 5.2
error codes): `invalid_client` / `unauthorized_client` -> `InvalidClientError`,
`invalid_grant` -> `InvalidGrantError`, a transport failure, a 5xx or a non-JSON
answer -> `ProviderUnavailableError`. Tokens never appear in messages or logs.
"""

from __future__ import annotations

from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from pydantic import SecretStr

from app.oauth.errors import (
    InvalidClientError,
    InvalidGrantError,
    OAuthError,
    ProviderUnavailableError,
)
from app.oauth.providers import ClientSettings, OAuthProvider, TokenGrant, id_token_claims

TIMEOUT_SECONDS = 15.0
_BAD_CLIENT = {"invalid_client", "unauthorized_client"}
# A code no provider ever issued: exchanging it tells good client credentials
# (`invalid_grant`) from bad ones (`invalid_client`) without a user.
_PROBE_CODE = "imap-bridge-credentials-probe"


def new_code_verifier() -> str:
    """Return a PKCE code verifier (RFC 7636 section 4.1): 64 unreserved characters."""
    return str(generate_token(64))


def authorization_url(
    provider: OAuthProvider,
    client: ClientSettings,
    *,
    redirect_uri: str,
    state: str,
    code_verifier: str,
    login_hint: str | None = None,
) -> str:
    """Build the URL the popup opens: code flow, PKCE S256, the provider's own extras."""
    extras: dict[str, str] = dict(provider.authorize_params)
    if login_hint:
        extras["login_hint"] = login_hint
    return str(
        prepare_grant_uri(
            provider.authorization_endpoint(client),
            client_id=client.client_id,
            response_type="code",
            redirect_uri=redirect_uri,
            scope=" ".join(provider.scopes),
            state=state,
            code_challenge=create_s256_code_challenge(code_verifier),
            code_challenge_method="S256",
            **extras,
        )
    )


def exchange_code(
    provider: OAuthProvider,
    client: ClientSettings,
    *,
    code: str,
    code_verifier: str,
    redirect_uri: str,
) -> TokenGrant:
    """Trade an authorization code for tokens (RFC 6749 section 4.1.3, RFC 7636)."""
    return _token_request(
        provider,
        client,
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": code_verifier,
            "redirect_uri": redirect_uri,
        },
    )


def refresh_access_token(
    provider: OAuthProvider, client: ClientSettings, refresh_token: SecretStr
) -> TokenGrant:
    """Get a new access token (RFC 6749 section 6); the answer may rotate the refresh token."""
    return _token_request(
        provider,
        client,
        {"grant_type": "refresh_token", "refresh_token": refresh_token.get_secret_value()},
    )


def verify_client(provider: OAuthProvider, client: ClientSettings, redirect_uri: str) -> None:
    """Raise `InvalidClientError` when the provider does not accept the client credentials."""
    try:
        exchange_code(
            provider,
            client,
            code=_PROBE_CODE,
            code_verifier=new_code_verifier(),
            redirect_uri=redirect_uri,
        )
    except (InvalidClientError, ProviderUnavailableError):
        raise
    except OAuthError:
        return  # the provider judged the code, not the client: the credentials passed


def fetch_email_address(provider: OAuthProvider, grant: TokenGrant) -> str | None:
    """Ask the provider whose account the grant is for."""
    with httpx.Client(timeout=TIMEOUT_SECONDS) as http:
        return provider.email_address(grant, http)


def _token_request(
    provider: OAuthProvider, client: ClientSettings, form: dict[str, str]
) -> TokenGrant:
    """POST to the token endpoint with the client's credentials in the body (client_secret_post)."""
    body = {
        **form,
        "client_id": client.client_id,
        "client_secret": client.client_secret.get_secret_value(),
    }
    name = provider.display_name
    try:
        response = httpx.post(
            provider.token_endpoint(client),
            data=body,
            headers={"Accept": "application/json"},
            timeout=TIMEOUT_SECONDS,
        )
        answer = response.json() if response.status_code < 500 else None
    except (httpx.HTTPError, ValueError) as exc:
        raise ProviderUnavailableError(
            f"{name}'s token endpoint failed: {exc.__class__.__name__}"
        ) from exc
    if not isinstance(answer, dict):
        raise ProviderUnavailableError(
            f"{name}'s token endpoint answered HTTP {response.status_code} without a token"
        )
    error = answer.get("error")
    if error in _BAD_CLIENT:
        raise InvalidClientError(f"{name} answered {error}: the client id or secret is wrong")
    if error == "invalid_grant":
        raise InvalidGrantError(f"{name} answered invalid_grant: expired, used or revoked")
    if error is not None or not answer.get("access_token"):
        raise OAuthError(f"{name} answered {str(error or 'without an access token')[:100]}")
    return _grant(answer)


def _grant(answer: dict[str, Any]) -> TokenGrant:
    refresh = answer.get("refresh_token")
    expires_in = answer.get("expires_in")
    return TokenGrant(
        access_token=SecretStr(str(answer["access_token"])),
        refresh_token=SecretStr(str(refresh)) if refresh else None,
        expires_in=int(expires_in) if expires_in is not None else None,
        id_token_claims=id_token_claims(answer.get("id_token")),
    )
