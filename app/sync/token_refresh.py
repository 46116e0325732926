"""Refresh a mailbox's OAuth access token before an IMAP login needs it.

    not oauth, no expiry known, or valid for 5 more minutes -> as stored
    no refresh token ---------------------------------------> as stored (the login decides)
    refresh at the provider
      -- invalid_grant, and no one stored a newer token ----> InvalidGrantError (the
                                                              sync marks it auth_failed)
      -- ok -> UPDATE ... WHERE refresh_token_enc = <the one refreshed>
                  1 row: the new tokens are stored (a rotated refresh token included)
                  0 rows: another worker refreshed first; its newer tokens win

The conditional UPDATE is what keeps two workers refreshing at once from
overwriting a rotated refresh token with an older one.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from pydantic import SecretStr
from sqlalchemy.engine import Engine

from app.db import session_scope
from app.db.models import AuthType, Mailbox, persisted_id, utcnow
from app.db.repositories.mailboxes import get_mailbox, replace_tokens
from app.oauth.client import refresh_access_token
from app.oauth.errors import InvalidGrantError
from app.oauth.registry import installed_providers
from app.oauth.service import client_settings
from app.security import SecretBox
from app.sync.errors import MailboxNotFoundError

log = logging.getLogger(__name__)

REFRESH_MARGIN = timedelta(minutes=5)


def needs_refresh(mailbox: Mailbox, now: datetime) -> bool:
    """Say whether the access token expires within the margin and can be renewed."""
    return (
        mailbox.auth_type is AuthType.OAUTH
        and mailbox.refresh_token_enc is not None
        and mailbox.token_expires_at is not None
        and mailbox.token_expires_at <= now + REFRESH_MARGIN
    )


def refresh_if_expiring(
    engine: Engine, mailbox: Mailbox, secrets: SecretBox, *, allow_private_hosts: bool
) -> Mailbox:
    """Return the mailbox with an access token good for the next minutes."""
    now = utcnow()
    if not needs_refresh(mailbox, now):
        return mailbox
    assert mailbox.refresh_token_enc is not None
    mailbox_id = persisted_id(mailbox)
    provider = installed_providers().get(mailbox.provider or "")
    with session_scope(engine) as session:
        client = client_settings(session, secrets, provider, enabled_only=False)
    old_refresh_enc = mailbox.refresh_token_enc
    try:
        grant = refresh_access_token(
            provider,
            client,
            SecretStr(secrets.decrypt(old_refresh_enc)),
            allow_private_hosts=allow_private_hosts,
        )
    except InvalidGrantError:
        current = _reread(engine, mailbox_id)
        if current.refresh_token_enc != old_refresh_enc:
            return current  # refused because another worker already rotated it
        raise
    expires_at = now + timedelta(seconds=grant.expires_in) if grant.expires_in is not None else None
    new_refresh = grant.refresh_token
    with session_scope(engine) as session:
        stored = replace_tokens(
            session,
            mailbox_id,
            old_refresh_token_enc=old_refresh_enc,
            access_token_enc=secrets.encrypt(grant.access_token.get_secret_value()),
            # A provider that does not rotate keeps the old refresh token valid.
            refresh_token_enc=(
                secrets.encrypt(new_refresh.get_secret_value()) if new_refresh else old_refresh_enc
            ),
            expires_at=expires_at,
        )
    log.info(
        "oauth.token_refreshed",
        extra={"mailbox_id": mailbox_id, "stored": stored, "rotated": new_refresh is not None},
    )
    return _reread(engine, mailbox_id)


def _reread(engine: Engine, mailbox_id: int) -> Mailbox:
    with session_scope(engine) as session:
        mailbox = get_mailbox(session, mailbox_id)
    if mailbox is None:
        raise MailboxNotFoundError(f"mailbox {mailbox_id} does not exist")
    return mailbox
