"""The OAuth rules that need the database: provider settings and the popup flow.

    configure:  PUT settings -> validate (provider's own rules) -> a kept client secret
                whose token endpoint would move to another host -> refused (the stored
                secret goes only where it was given for) -> enabled? ask the
                token endpoint (`invalid_client` -> refused, nothing saved) -> store,
                client secret encrypted
    authorize:  origin not allowed -> OriginNotAllowedError
                provider enabled? -> new state (256 random bits) + PKCE verifier,
                bound to provider, opener origin and redirect URI, valid a few minutes
                -> authorization URL
    callback:   state -> the origin to post the result to (never an unbound origin)
    token:      a flow bound to a mailbox (a reconnect) finished elsewhere -> refused
                spend the state once (conditional UPDATE) -> exchange code + verifier
                -> learn the address -> TokenData

Provider adapters (`app.oauth.providers`, `app.oauth.client`) know nothing of
the database; this module joins them to the stored settings.
"""

from __future__ import annotations

import secrets as random
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from pydantic import SecretStr
from sqlmodel import Session

from app.db.models import OAuthFlow, OAuthProviderSettings, utcnow
from app.db.repositories.mailboxes import provider_has_mailboxes
from app.db.repositories.oauth_flows import add_flow, get_flow, spend_flow
from app.db.repositories.oauth_provider_settings import (
    all_provider_settings,
    get_or_add_provider_settings,
    get_provider_settings,
)
from app.oauth.client import (
    authorization_url,
    exchange_code,
    fetch_email_address,
    new_code_verifier,
    verify_client,
)
from app.oauth.errors import (
    FlowStateError,
    FlowStateExpiredError,
    FlowStateUsedError,
    InvalidProviderSettingsError,
    OriginNotAllowedError,
    ProviderDisabledError,
)
from app.oauth.providers import ClientSettings, OAuthProvider
from app.oauth.registry import ProviderRegistry
from app.security import SecretBox


@dataclass(frozen=True, slots=True)
class ProviderState:
    """A provider as the operator sees it: what it is, and how it is configured."""

    provider: OAuthProvider
    settings: OAuthProviderSettings | None

    @property
    def enabled(self) -> bool:
        return self.settings is not None and self.settings.enabled


@dataclass(frozen=True, slots=True)
class ProviderUpdate:
    """The settings a PUT gives; a None secret keeps the stored one."""

    client_id: str
    client_secret: SecretStr | None
    tenant: str | None
    enabled: bool


@dataclass(frozen=True, slots=True)
class TokenData:
    """What get-token answers: the tokens and the account they belong to."""

    access_token: SecretStr
    refresh_token: SecretStr | None
    expires_in: int | None
    email_address: str | None


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """Where the callback page may post, and the error to post instead of the code."""

    origin: str
    error: str | None  # an `OAuthError` code


def list_providers(session: Session, registry: ProviderRegistry) -> list[ProviderState]:
    """Every installed provider with its stored settings, by name."""
    stored = all_provider_settings(session)
    return [ProviderState(provider, stored.get(provider.name)) for provider in registry]


def configure_provider(
    session: Session,
    secrets: SecretBox,
    registry: ProviderRegistry,
    name: str,
    *,
    update: ProviderUpdate,
    redirect_uri: str,
    allow_private_hosts: bool,
) -> ProviderState:
    """Store the provider's client settings; enabling first proves them to the provider."""
    provider = registry.get(name)
    tenant = update.tenant if provider.uses_tenant else None
    provider.validate_settings(update.client_id, tenant)
    row = get_or_add_provider_settings(session, name)
    _refuse_moving_stored_secrets(session, provider, row, tenant, update.client_secret)
    secret = update.client_secret
    if secret is None and row.client_secret_enc is not None:
        secret = SecretStr(secrets.decrypt(row.client_secret_enc))
    if update.enabled:
        if secret is None:
            raise InvalidProviderSettingsError(
                "client_secret", "a client secret is needed to enable the provider"
            )
        client = ClientSettings(update.client_id, secret, tenant)
        verify_client(provider, client, redirect_uri, allow_private_hosts=allow_private_hosts)
    row.client_id = update.client_id
    row.tenant = tenant
    row.enabled = update.enabled
    if update.client_secret is not None:
        row.client_secret_enc = secrets.encrypt(update.client_secret.get_secret_value())
    session.flush()
    return ProviderState(provider, row)


def _refuse_moving_stored_secrets(
    session: Session,
    provider: OAuthProvider,
    row: OAuthProviderSettings,
    tenant: str | None,
    client_secret: SecretStr | None,
) -> None:
    """Refuse a tenant that moves the token endpoint to another host while secrets depend on it.

    The stored client secret, and the refresh tokens of the provider's mailboxes, are sent
    to the token endpoint; a plug-in may put the tenant in its host name. Settings never
    stored with a secret have sent nothing anywhere yet.
    """
    if row.client_secret_enc is None:
        return
    if _token_host(provider, row.tenant) == _token_host(provider, tenant):
        return
    if provider_has_mailboxes(session, provider.name):
        raise InvalidProviderSettingsError(
            "tenant",
            "this tenant moves the token endpoint to another host, and mailboxes hold refresh"
            " tokens of the current one; delete them first",
        )
    if client_secret is None:
        raise InvalidProviderSettingsError(
            "client_secret",
            "this tenant moves the token endpoint to another host; give the client secret"
            " again (the stored one is only sent where it was given for)",
        )


def _token_host(provider: OAuthProvider, tenant: str | None) -> str:
    """The host (and port) of the token endpoint the client secret is sent to."""
    endpoint = provider.token_endpoint(ClientSettings("", SecretStr(""), tenant))
    return urlsplit(endpoint).netloc.lower()


def client_settings(
    session: Session, secrets: SecretBox, provider: OAuthProvider, *, enabled_only: bool = True
) -> ClientSettings:
    """Decrypt the provider's client settings; refuse a provider not set up (or disabled)."""
    row = get_provider_settings(session, provider.name)
    if row is None or row.client_id is None or row.client_secret_enc is None:
        raise ProviderDisabledError(f"oauth provider {provider.name} is not configured")
    if enabled_only and not row.enabled:
        raise ProviderDisabledError(f"oauth provider {provider.name} is disabled")
    return ClientSettings(
        row.client_id, SecretStr(secrets.decrypt(row.client_secret_enc)), row.tenant
    )


def start_flow(
    session: Session,
    secrets: SecretBox,
    registry: ProviderRegistry,
    name: str,
    *,
    origin: str,
    allowed_origins: Collection[str],
    login_hint: str | None,
    redirect_uri: str,
    ttl_seconds: int,
    mailbox_id: int | None = None,
) -> tuple[str, str]:
    """Open a flow bound to `origin` (and to `mailbox_id`, a reconnect); return its URL and state.

    Only an allowed origin may receive the code: a page elsewhere that got a CRM
    backend to start a flow for it would otherwise read the victim's code.
    """
    if origin not in allowed_origins:
        raise OriginNotAllowedError(
            f"{origin} is not an allowed opener origin (OAUTH_ALLOWED_ORIGINS)"
        )
    provider = registry.get(name)
    client = client_settings(session, secrets, provider)
    now = utcnow()
    state = random.token_urlsafe(32)
    verifier = new_code_verifier()
    add_flow(
        session,
        OAuthFlow(
            state=state,
            provider=name,
            origin=origin,
            redirect_uri=redirect_uri,
            code_verifier_enc=secrets.encrypt(verifier),
            expires_at=now + timedelta(seconds=ttl_seconds),
            mailbox_id=mailbox_id,
        ),
        now,
    )
    url = authorization_url(
        provider,
        client,
        redirect_uri=redirect_uri,
        state=state,
        code_verifier=verifier,
        login_hint=login_hint,
    )
    return url, state


def callback_target(session: Session, name: str, state: str) -> CallbackTarget | None:
    """Find the origin the callback page may post to; None for a state never issued."""
    flow = get_flow(session, state)
    if flow is None or flow.provider != name:
        return None
    try:
        _refuse_unusable(flow, utcnow())
    except FlowStateError as exc:
        return CallbackTarget(flow.origin, exc.code)
    return CallbackTarget(flow.origin, None)


def finish_flow(
    session: Session,
    secrets: SecretBox,
    registry: ProviderRegistry,
    name: str,
    *,
    code: str,
    state: str,
    allow_private_hosts: bool,
    mailbox_id: int | None = None,
) -> TokenData:
    """Spend the state, exchange the code for tokens and learn the account's address.

    A reconnect flow is finished only by its mailbox (`mailbox_id`), and a flow
    that registers a mailbox only without one: the tokens of a reconnect never
    reach get-token, so they never leave the service.
    """
    provider = registry.get(name)
    client = client_settings(session, secrets, provider)
    now = utcnow()
    flow = get_flow(session, state)
    if flow is None or flow.provider != name:
        raise FlowStateError("the state was not issued for this provider")
    if flow.mailbox_id != mailbox_id:
        raise FlowStateError(
            "the state was issued to reconnect a mailbox; finish it there"
            if flow.mailbox_id is not None
            else "the state was not issued to reconnect this mailbox"
        )
    if not spend_flow(session, state, name, now):
        session.refresh(flow)
        _refuse_unusable(flow, now)
        raise FlowStateUsedError("the state was already used")
    grant = exchange_code(
        provider,
        client,
        code=code,
        code_verifier=secrets.decrypt(flow.code_verifier_enc),
        redirect_uri=flow.redirect_uri,
        allow_private_hosts=allow_private_hosts,
    )
    return TokenData(
        access_token=grant.access_token,
        refresh_token=grant.refresh_token,
        expires_in=grant.expires_in,
        email_address=fetch_email_address(provider, grant, allow_private_hosts=allow_private_hosts),
    )


def _refuse_unusable(flow: OAuthFlow, now: datetime) -> None:
    if flow.used_at is not None:
        raise FlowStateUsedError("the state was already used")
    if flow.expires_at <= now:
        raise FlowStateExpiredError("the state expired; start again")
