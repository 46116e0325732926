"""OAuth providers, the popup flow, completion and get-token as the API takes and returns them.

Client secrets go in and never come out. Completion registers the mailbox and
returns it without its tokens; get-token is the one answer that carries
tokens: the CRM backend asked for them with its API key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from app.api.connection.schemas import ImapSettings
from app.api.mailboxes.schemas import EMAIL_ADDRESS, OwnerRef
from app.api.request_models import NO_NUL_PATTERN, IsoDate, RequestModel
from app.config import web_origin
from app.imap import Security
from app.oauth.service import ProviderState, ProviderUpdate, TokenData
from app.sync import ServerSettings


class ProviderImap(BaseModel):
    """The provider's IMAP server, used when a request names no other."""

    host: str
    port: int
    security: Literal["ssl"] = "ssl"


class ProviderRead(BaseModel):
    """A provider this service can connect mailboxes through, and its settings."""

    name: str
    display_name: str
    enabled: bool
    client_id: str | None
    has_client_secret: bool = Field(description="A secret is stored; it is never returned.")
    tenant: str | None
    uses_tenant: bool = Field(description="The provider takes a tenant (Microsoft Entra ID).")
    scopes: list[str]
    imap: ProviderImap
    redirect_uri: str = Field(description="Register this redirect URI with the provider.")

    @classmethod
    def from_state(cls, state: ProviderState, redirect_uri: str) -> ProviderRead:
        provider, row = state.provider, state.settings
        return cls(
            name=provider.name,
            display_name=provider.display_name,
            enabled=state.enabled,
            client_id=row.client_id if row else None,
            has_client_secret=bool(row and row.client_secret_enc),
            tenant=row.tenant if row else None,
            uses_tenant=provider.uses_tenant,
            scopes=list(provider.scopes),
            imap=ProviderImap(host=provider.imap_host, port=provider.imap_port),
            redirect_uri=redirect_uri,
        )


class ProviderSettingsUpdate(RequestModel):
    """Client settings registered at the provider; enabling checks them with it first."""

    client_id: str = Field(min_length=1, max_length=255)
    client_secret: SecretStr | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Write-only; omit to keep the stored secret.",
    )
    tenant: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Microsoft only: tenant id or domain; default `common`.",
    )
    enabled: bool = False

    def to_update(self) -> ProviderUpdate:
        return ProviderUpdate(
            client_id=self.client_id.strip(),
            client_secret=self.client_secret,
            tenant=self.tenant,
            enabled=self.enabled,
        )


class ReauthorizeRequest(RequestModel):
    """Start a popup flow for the page at `origin`."""

    origin: str = Field(
        max_length=255,
        pattern=r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$",
        examples=["https://crm.example.com"],
        description="The opener page's origin; the result is posted to it and no other.",
    )

    @field_validator("origin")
    @classmethod
    def _is_an_origin(cls, value: str) -> str:
        return web_origin(value)


class AuthorizeRequest(ReauthorizeRequest):
    """Start a popup flow for the page at `origin`, hinting at the account to sign in."""

    login_hint: str | None = Field(default=None, max_length=320, pattern=EMAIL_ADDRESS)


class AuthorizeResponse(BaseModel):
    """Open `authorization_url` in the popup; `state` comes back with the result."""

    authorization_url: str
    state: str


class TokenRequest(RequestModel):
    """What the callback page handed to the opener."""

    code: str = Field(min_length=1, max_length=4096)
    state: str = Field(min_length=1, max_length=64, pattern=NO_NUL_PATTERN)


class CompletionRequest(RequestModel):
    """The callback page's code and state, and whose mailbox the account becomes."""

    code: str = Field(min_length=1, max_length=4096)
    state: str = Field(min_length=1, max_length=64, pattern=NO_NUL_PATTERN)
    owner: OwnerRef | None = Field(description="null registers a system mailbox.")
    sync_start: IsoDate | None = Field(
        default=None, description="First day of mail to sync; null keeps the window setting."
    )


class TokenDataRead(BaseModel):
    """Tokens for a mailbox's `auth: {type: "oauth", ...}`, and whose account they open."""

    access_token: str
    refresh_token: str | None
    expires_in: int | None = Field(description="Seconds until the access token expires.")
    email_address: str | None

    @classmethod
    def from_data(cls, data: TokenData) -> TokenDataRead:
        return cls(
            access_token=data.access_token.get_secret_value(),
            refresh_token=data.refresh_token.get_secret_value() if data.refresh_token else None,
            expires_in=data.expires_in,
            email_address=data.email_address,
        )


class OAuthConnectionCheck(RequestModel):
    """An access token to try; `imap` defaults to the provider's server as `email_address`."""

    access_token: SecretStr = Field(min_length=1, max_length=8192)
    email_address: str | None = Field(default=None, max_length=320, pattern=EMAIL_ADDRESS)
    imap: ImapSettings | None = None

    @model_validator(mode="after")
    def _someone_to_log_in_as(self) -> OAuthConnectionCheck:
        if self.imap is None and self.email_address is None:
            raise ValueError("give email_address (or imap with its username)")
        return self

    def to_server(self, default: ProviderImap) -> ServerSettings:
        if self.imap is not None:
            return self.imap.to_server()
        assert self.email_address is not None  # the validator guarantees one of them
        return ServerSettings(
            host=default.host,
            port=default.port,
            security=Security(default.security),
            username=self.email_address,
            tls_verify=True,
        )
