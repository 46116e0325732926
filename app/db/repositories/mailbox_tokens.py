"""Store refreshed OAuth tokens of a mailbox without losing a concurrent refresh."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col

from app.db.models import Mailbox


def replace_tokens(
    session: Session,
    mailbox_id: int,
    *,
    old_refresh_token_enc: str | None,
    access_token_enc: str,
    refresh_token_enc: str | None,
    expires_at: datetime | None,
) -> bool:
    """Write new tokens only if the stored refresh token is still the one refreshed.

    False means another process refreshed first and stored a newer refresh
    token; the caller then reads that one instead of overwriting it.
    """
    result = session.execute(
        sa.update(Mailbox)
        .where(
            col(Mailbox.id) == mailbox_id,
            col(Mailbox.refresh_token_enc).is_(None)
            if old_refresh_token_enc is None
            else col(Mailbox.refresh_token_enc) == old_refresh_token_enc,
        )
        .values(
            access_token_enc=access_token_enc,
            refresh_token_enc=refresh_token_enc,
            token_expires_at=expires_at,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
