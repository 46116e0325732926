"""One started OAuth popup flow, keyed by its `state` (RFC 6749 section 10.12).

The `state` is 256 random bits, so it cannot be guessed or forged; the row
binds it to the provider, the opener's origin and the PKCE code verifier
(encrypted). It expires after a few minutes and is spent by the first code
exchange: `used_at` is set by a conditional UPDATE, so a replay loses.
A reconnect flow (`POST /v1/mailboxes/{id}/reauthorize`) is bound to its
mailbox by `mailbox_id`, and only that mailbox's completion may spend it.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from app.db.models.base import Model, utcnow


class OAuthFlow(Model, table=True):
    __tablename__ = "oauth_flow"

    state: str = Field(max_length=64, primary_key=True)
    provider: str = Field(max_length=64)
    origin: str = Field(max_length=255)
    redirect_uri: str = Field(max_length=2048)
    code_verifier_enc: str = Field(sa_type=sa.Text)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)
    used_at: datetime | None = None
    mailbox_id: int | None = Field(default=None, foreign_key="mailbox.id", ondelete="CASCADE")
