"""Talk to a provider's endpoints: authorization URL, code exchange, refresh, client check.

authlib builds the protocol pieces (PKCE S256 challenge, RFC 6749 grant URI,
random tokens); the token requests themselves are plain httpx POSTs, which
keeps one HTTP stack in the service (and one that respx can fake in tests).

Every request to a provider (token, userinfo, whatever a plug-in provider asks
with the client it is handed) goes through `oauth_http_client`: the SSRF
guard's transport vets the address each connection is made to, so an endpoint
on a loopback, private or link-local address is refused unless
`OAUTH_ALLOW_PRIVATE_HOSTS`, whatever its name resolves to later; redirects are
not followed and no proxy is used.

Every provider answer leaves as one `OAuthError` subclass (RFC 6749 section 5.2
error codes): `invalid_client` / `unauthorized_client` -> `InvalidClientError`,
`invalid_grant` -> `InvalidGrantError`, a transport failure, a 5xx or a non-JSON
answer -> `ProviderUnavailableError`, a blocked endpoint host ->
`ProviderHostBlockedError`. Tokens never appear in messages or logs. A grant's
`expires_in` is read within [0, MAX_TOKEN_LIFETIME_SECONDS]; a value that is
not a number counts as absent (a huge one would overflow the expiry date).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from pydantic import SecretStr

from app.netguard import AddressBlocked
from app.netguard_http import GuardedTransport
from app.oauth.errors import (
    InvalidClientError,
    InvalidGrantError,
    OAuthError,
    ProviderHostBlockedError,
    ProviderUnavailableError,
)
from app.oauth.providers import ClientSettings, OAuthProvider, TokenGrant, id_token_claims

TIMEOUT_SECONDS = 15.0
# A token said to live longer is refreshed after a day anyway, which costs one request.
MAX_TOKEN_LIFETIME_SECONDS = 86_400
_SECONDS = re.compile(r"[0-9]+")  # some providers send `expires_in` as a string
_BAD_CLIENT = {"invalid_client", "unauthorized_client"}
# A code no provider ever issued: exchanging it tells good client credentials
# (`invalid_grant`) from bad ones (`invalid_client`) without a user.
_PROBE_CODE = "imap-bridge-credentials-probe"


def oauth_http_client(*, allow_private_hosts: bool) -> httpx.Client:
    """Return an HTTP client for provider endpoints: SSRF-guarded, no redirects, no proxy."""
    return httpx.Client(
        transport=GuardedTransport(allow_private=allow_private_hosts),
        timeout=TIMEOUT_SECONDS,
        follow_redirects=False,
        trust_env=False,
    )


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
    allow_private_hosts: bool,
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
        allow_private_hosts=allow_private_hosts,
    )


def refresh_access_token(
    provider: OAuthProvider,
    client: ClientSettings,
    refresh_token: SecretStr,
    *,
    allow_private_hosts: bool,
) -> TokenGrant:
    """Get a new access token (RFC 6749 section 6); the answer may rotate the refresh token."""
    return _token_request(
        provider,
        client,
        {"grant_type": "refresh_token", "refresh_token": refresh_token.get_secret_value()},
        allow_private_hosts=allow_private_hosts,
    )


def verify_client(
    provider: OAuthProvider,
    client: ClientSettings,
    redirect_uri: str,
    *,
    allow_private_hosts: bool,
) -> None:
    """Raise `InvalidClientError` when the provider does not accept the client credentials."""
    try:
        exchange_code(
            provider,
            client,
            code=_PROBE_CODE,
            code_verifier=new_code_verifier(),
            redirect_uri=redirect_uri,
            allow_private_hosts=allow_private_hosts,
        )
    except (InvalidClientError, ProviderUnavailableError):
        raise
    except OAuthError:
        return  # the provider judged the code, not the client: the credentials passed


def fetch_email_address(
    provider: OAuthProvider, grant: TokenGrant, *, allow_private_hosts: bool
) -> str | None:
    """Ask the provider whose account the grant is for."""
    with _provider_http(provider, "userinfo endpoint", allow_private_hosts) as http:
        return provider.email_address(grant, http)


@contextmanager
def _provider_http(
    provider: OAuthProvider, endpoint: str, allow_private_hosts: bool
) -> Iterator[httpx.Client]:
    """Lend a guarded client; a blocked host becomes `ProviderHostBlockedError`."""
    try:
        with oauth_http_client(allow_private_hosts=allow_private_hosts) as http:
            yield http
    except AddressBlocked as exc:
        raise ProviderHostBlockedError(
            f"{provider.display_name}'s {endpoint} resolves to a loopback, private or"
            " link-local address; OAUTH_ALLOW_PRIVATE_HOSTS=true allows it"
        ) from exc


def _token_request(
    provider: OAuthProvider,
    client: ClientSettings,
    form: dict[str, str],
    *,
    allow_private_hosts: bool,
) -> TokenGrant:
    """POST to the token endpoint with the client's credentials in the body (client_secret_post)."""
    body = {
        **form,
        "client_id": client.client_id,
        "client_secret": client.client_secret.get_secret_value(),
    }
    name = provider.display_name
    try:
        with _provider_http(provider, "token endpoint", allow_private_hosts) as http:
            response = http.post(
                provider.token_endpoint(client),
                data=body,
                headers={"Accept": "application/json"},
            )
        if response.is_redirect:
            raise ProviderUnavailableError(
                f"{name}'s token endpoint answered HTTP {response.status_code}:"
                " redirects are not followed"
            )
        answer = response.json() if response.status_code < 500 else None
    except (httpx.HTTPError, ValueError, RecursionError) as exc:  # JSON nested too deep
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
        expires_in=_lifetime_seconds(expires_in),
        id_token_claims=id_token_claims(answer.get("id_token")),
    )


def _lifetime_seconds(expires_in: object) -> int | None:
    """Read `expires_in` (RFC 6749, 5.1) as whole seconds within [0, a day]; None if no number."""
    seconds: float
    if isinstance(expires_in, str) and _SECONDS.fullmatch(expires_in.strip()):
        digits = expires_in.strip()
        seconds = int(digits) if len(digits) <= 12 else MAX_TOKEN_LIFETIME_SECONDS
    elif isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        seconds = expires_in
    else:
        return None
    if math.isnan(seconds):
        return None
    return int(min(max(seconds, 0), MAX_TOKEN_LIFETIME_SECONDS))
