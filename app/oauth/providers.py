"""OAuth2 providers: where to send the user, where to get tokens, and which IMAP server.

A provider is a small class; the service ships `gmail` and `microsoft`, and any
installed distribution can add more through the entry-point group
`imap_bridge.oauth_providers` (see `app.oauth.registry`). A provider knows
nothing of the database or HTTP routes: it turns client settings into
endpoints, and a token answer into the mailbox's address.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from app.netguard import AddressBlocked
from app.oauth.errors import InvalidProviderSettingsError, ProviderUnavailableError

# Used with fullmatch: `$` would also accept a trailing newline, which then lands in a URL.
_GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_DOMAIN = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_MICROSOFT_AUDIENCES = {"common", "organizations", "consumers"}


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """The OAuth client registered at the provider, as the operator configured it."""

    client_id: str
    client_secret: SecretStr
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a token endpoint answered (RFC 6749 section 5.1), with the ID token's claims."""

    access_token: SecretStr
    refresh_token: SecretStr | None
    expires_in: int | None
    id_token_claims: dict[str, Any] = field(default_factory=dict)


class OAuthProvider:
    """Subclass and set the class attributes; override methods where a provider differs."""

    name: ClassVar[str]
    display_name: ClassVar[str]
    authorize_url: ClassVar[str]
    token_url: ClassVar[str]
    scopes: ClassVar[tuple[str, ...]]
    imap_host: ClassVar[str]
    imap_port: ClassVar[int] = 993
    uses_tenant: ClassVar[bool] = False
    # Extra query parameters of the authorization request (e.g. to get a refresh token).
    authorize_params: ClassVar[dict[str, str]] = {}
    # OpenID Connect userinfo, asked when the ID token does not carry the address.
    userinfo_url: ClassVar[str | None] = None
    # Claims of the ID token (or userinfo answer) that hold the address, best first.
    email_claims: ClassVar[tuple[str, ...]] = ("email",)

    def authorization_endpoint(self, client: ClientSettings) -> str:
        return self.authorize_url.format(tenant=client.tenant)

    def token_endpoint(self, client: ClientSettings) -> str:
        return self.token_url.format(tenant=client.tenant)

    def validate_settings(self, client_id: str, tenant: str | None) -> None:
        """Raise `InvalidProviderSettingsError` naming the field that cannot be right."""
        if not client_id.strip():
            raise InvalidProviderSettingsError("client_id", "must not be empty")

    def email_address(self, grant: TokenGrant, http: httpx.Client) -> str | None:
        """Learn the account's address: the ID token's claims, else the userinfo endpoint.

        Ask the provider only through `http`: its connections pass the SSRF guard.
        """
        found = _first_claim(grant.id_token_claims, self.email_claims)
        if found is not None or self.userinfo_url is None:
            return found
        try:
            answer = http.get(
                self.userinfo_url,
                headers={"Authorization": f"Bearer {grant.access_token.get_secret_value()}"},
            )
            answer.raise_for_status()
            claims = answer.json()
        except AddressBlocked:
            raise  # the caller says which endpoint was refused, and why
        except (httpx.HTTPError, ValueError, RecursionError) as exc:
            raise ProviderUnavailableError(f"{self.display_name} userinfo failed") from exc
        return _first_claim(claims if isinstance(claims, dict) else {}, self.email_claims)


class GmailProvider(OAuthProvider):
    """Google accounts and Workspace: IMAP needs the `https://mail.google.com/` scope."""

    name = "gmail"
    display_name = "Gmail"
    authorize_url = "https://accounts.google.com/o/oauth2/v2/auth"
    token_url = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
    scopes = ("openid", "email", "https://mail.google.com/")
    imap_host = "imap.gmail.com"
    # Google returns a refresh token only for offline access, and again only on consent.
    authorize_params: ClassVar[dict[str, str]] = {"access_type": "offline", "prompt": "consent"}
    userinfo_url = "https://openidconnect.googleapis.com/v1/userinfo"

    def validate_settings(self, client_id: str, tenant: str | None) -> None:
        super().validate_settings(client_id, tenant)
        if not client_id.endswith(".apps.googleusercontent.com"):
            raise InvalidProviderSettingsError(
                "client_id", "a Google client id ends with .apps.googleusercontent.com"
            )


class MicrosoftProvider(OAuthProvider):
    """Microsoft 365 and Outlook.com through the identity platform v2.0 of one tenant."""

    name = "microsoft"
    display_name = "Microsoft 365"
    authorize_url = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize"
    token_url = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"  # noqa: S105
    scopes = (
        "openid",
        "email",
        "offline_access",
        "https://outlook.office.com/IMAP.AccessAsUser.All",
    )
    imap_host = "outlook.office365.com"
    uses_tenant = True
    # Work accounts often carry no `email` claim; `preferred_username` is the sign-in address.
    email_claims = ("email", "preferred_username")

    def authorization_endpoint(self, client: ClientSettings) -> str:
        return self.authorize_url.format(tenant=client.tenant or "common")

    def token_endpoint(self, client: ClientSettings) -> str:
        return self.token_url.format(tenant=client.tenant or "common")

    def validate_settings(self, client_id: str, tenant: str | None) -> None:
        if not _GUID.fullmatch(client_id):
            raise InvalidProviderSettingsError(
                "client_id", "a Microsoft application (client) id is a GUID"
            )
        if tenant is not None and not (
            tenant in _MICROSOFT_AUDIENCES or _GUID.fullmatch(tenant) or _DOMAIN.fullmatch(tenant)
        ):
            raise InvalidProviderSettingsError(
                "tenant", "give a tenant id (GUID), a domain, or common/organizations/consumers"
            )


def id_token_claims(id_token: object) -> dict[str, Any]:
    """Read the claims of an ID token received straight from the token endpoint.

    The token came over TLS from the provider itself, so OpenID Connect Core
    3.1.3.7 lets the client rely on TLS instead of the signature; the claims
    only name the account, they grant nothing.
    """
    if not isinstance(id_token, str) or not id_token:
        return {}  # absent, or not a JWT at all (the answer is a peer's JSON)
    try:
        payload = id_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, RecursionError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _first_claim(claims: dict[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and "@" in value:
            return value.strip().lower()
    return None
