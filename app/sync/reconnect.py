"""Reconnect an OAuth mailbox through a popup bound to it; no token passes through the CRM.

start:    password mailbox -> NotAnOAuthMailboxError
          -> a popup flow (app.oauth.service.start_flow) bound to the mailbox,
             login hint = its address
complete: the flow's state, spent only by this mailbox (another mailbox's, or a
          registration's, is refused) -> exchange the code -> the provider names
          another account -> AccountMismatchError (nothing saved)
          -> log in with the new token -> store the tokens (a refresh token the
             provider did not send again keeps the stored one) -> as any change of
             credentials: `auth_failed` cleared, `mailbox.credentials_restored`,
             due now (app.sync.mailboxes)
"""

from __future__ import annotations

from collections.abc import Collection

from pydantic import SecretStr
from sqlmodel import Session

from app.db.models import AuthType, Mailbox
from app.oauth.errors import AccountUnknownError
from app.oauth.registry import ProviderRegistry
from app.oauth.service import finish_flow, start_flow
from app.security import SecretBox
from app.sync.connection_check import Credential, LoginOptions
from app.sync.errors import AccountMismatchError, NotAnOAuthMailboxError
from app.sync.mailboxes import ChangedMailbox, MailboxChanges, change_mailbox


def start_reconnect(
    session: Session,
    secrets: SecretBox,
    registry: ProviderRegistry,
    mailbox: Mailbox,
    *,
    origin: str,
    allowed_origins: Collection[str],
    redirect_uri: str,
    ttl_seconds: int,
) -> tuple[str, str]:
    """Open a popup flow for the mailbox's own account; return its URL and state."""
    provider = _provider_of(mailbox)
    return start_flow(
        session,
        secrets,
        registry,
        provider,
        origin=origin,
        allowed_origins=allowed_origins,
        login_hint=mailbox.email_address,
        redirect_uri=redirect_uri,
        ttl_seconds=ttl_seconds,
        mailbox_id=mailbox.id,
    )


def complete_reconnect(
    session: Session,
    secrets: SecretBox,
    options: LoginOptions,
    registry: ProviderRegistry,
    mailbox: Mailbox,
    *,
    code: str,
    state: str,
    allow_private_hosts: bool,
) -> ChangedMailbox:
    """Exchange the popup's code, check the account, log in and store the new tokens."""
    provider = _provider_of(mailbox)
    tokens = finish_flow(
        session,
        secrets,
        registry,
        provider,
        code=code,
        state=state,
        allow_private_hosts=allow_private_hosts,
        mailbox_id=mailbox.id,
    )
    if tokens.email_address is None:
        raise AccountUnknownError(f"{provider} did not say which account signed in")
    if tokens.email_address.strip().lower() != mailbox.email_address:
        raise AccountMismatchError(
            f"the sign-in was for another account than {mailbox.email_address}; sign in as it"
        )
    refresh = tokens.refresh_token
    if refresh is None and mailbox.refresh_token_enc is not None:
        refresh = SecretStr(secrets.decrypt(mailbox.refresh_token_enc))
    credential = Credential(
        access_token=tokens.access_token,
        provider=provider,
        refresh_token=refresh,
        expires_in=tokens.expires_in,
    )
    return change_mailbox(session, secrets, options, mailbox, MailboxChanges(credential=credential))


def _provider_of(mailbox: Mailbox) -> str:
    if mailbox.auth_type is not AuthType.OAUTH or mailbox.provider is None:
        raise NotAnOAuthMailboxError(
            f"mailbox {mailbox.id} logs in with a password; give it the new one with PATCH"
        )
    return mailbox.provider
