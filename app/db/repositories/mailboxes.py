"""Queries on `mailbox`: the lease, the schedule, status transitions, and refreshed
OAuth tokens stored without losing a concurrent refresh.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.db.models import Mailbox, MailboxStatus
from app.db.repositories.results import rows_changed


def get_mailbox(session: Session, mailbox_id: int) -> Mailbox | None:
    return session.get(Mailbox, mailbox_id)


def acquire_lease(
    session: Session, mailbox_id: int, owner: str, now: datetime, duration: timedelta
) -> bool:
    """Take the mailbox for `owner` unless another live holder has it (one conditional UPDATE).

    The row is claimed only when it is free, its lease expired (a crashed
    holder) or `owner` already holds it, so two workers racing for the same
    mailbox cannot both win, on SQLite or PostgreSQL alike.
    """
    result = session.execute(_claim(mailbox_id, owner, now, duration))
    return rows_changed(result) == 1


def lease_mailbox(
    session: Session,
    mailbox_id: int,
    owner: str,
    now: datetime,
    duration: timedelta,
    *,
    dead_holder: str | None = None,
) -> Mailbox | None:
    """Take the lease as `acquire_lease` does and return the row it took, or None.

    The UPDATE returns the row, so a sync reads the mailbox it leased without a SELECT.
    `dead_holder` names a holder known to be gone: its live lease is taken as well,
    but only while that holder still has it.
    """
    statement = _claim(mailbox_id, owner, now, duration, dead_holder).returning(Mailbox)
    return session.execute(statement).scalars().first()


def lease_holder(session: Session, mailbox_id: int) -> str | None:
    """Return who holds the mailbox's lease (None: nobody, or no such mailbox)."""
    statement = select(Mailbox.lease_owner).where(col(Mailbox.id) == mailbox_id)
    return session.exec(statement).first()


def _claim(
    mailbox_id: int,
    owner: str,
    now: datetime,
    duration: timedelta,
    dead_holder: str | None = None,
) -> sa.Update:
    claimable = [
        col(Mailbox.lease_owner).is_(None),
        col(Mailbox.lease_expires_at) < now,
        col(Mailbox.lease_owner) == owner,
    ]
    if dead_holder is not None:
        claimable.append(col(Mailbox.lease_owner) == dead_holder)
    return (
        sa.update(Mailbox)
        .where(col(Mailbox.id) == mailbox_id, sa.or_(*claimable))
        .values(lease_owner=owner, lease_expires_at=now + duration)
        .execution_options(synchronize_session=False)
    )


def renew_lease(
    session: Session, mailbox_id: int, owner: str, now: datetime, duration: timedelta
) -> bool:
    """Extend `owner`'s lease; False when another worker has taken the mailbox meanwhile.

    A sync calls this first in every transaction it commits: the row lock it takes
    (PostgreSQL) or the write lock (SQLite) holds a competing `acquire_lease` off until
    the commit, so a worker that lost its lease never writes after the new holder began.
    """
    result = session.execute(
        sa.update(Mailbox)
        .where(col(Mailbox.id) == mailbox_id, col(Mailbox.lease_owner) == owner)
        .values(lease_expires_at=now + duration)
        .execution_options(synchronize_session=False)
    )
    return rows_changed(result) == 1


def release_lease(session: Session, mailbox_id: int, owner: str) -> Mailbox | None:
    """Give the mailbox back, only if `owner` still holds it; return the row, or None if not.

    Like `renew_lease`, it locks the row until the commit: a sync's last transaction
    releases first, which proves the lease and reads the mailbox in one statement.
    """
    statement = (
        sa.update(Mailbox)
        .where(col(Mailbox.id) == mailbox_id, col(Mailbox.lease_owner) == owner)
        .values(lease_owner=None, lease_expires_at=None)
        .returning(Mailbox)
        .execution_options(synchronize_session=False)
    )
    return session.execute(statement).scalars().first()


def due_mailbox_ids(session: Session, now: datetime) -> list[int]:
    """Return the mailboxes the scheduler should sync now, the longest-waiting first."""
    statement = (
        select(Mailbox.id)
        .where(
            col(Mailbox.status).in_([MailboxStatus.ACTIVE, MailboxStatus.AUTH_FAILED]),
            sa.or_(col(Mailbox.next_sync_at).is_(None), col(Mailbox.next_sync_at) <= now),
        )
        .order_by(col(Mailbox.next_sync_at).asc().nulls_first(), col(Mailbox.id))
    )
    return [mailbox_id for mailbox_id in session.exec(statement) if mailbox_id is not None]


def find_mailbox(session: Session, owner_user_id: str | None, email_address: str) -> Mailbox | None:
    """Return the owner's mailbox for the address; owner None looks among system mailboxes."""
    owner_matches = (
        col(Mailbox.owner_user_id).is_(None)
        if owner_user_id is None
        else col(Mailbox.owner_user_id) == owner_user_id
    )
    statement = select(Mailbox).where(owner_matches, col(Mailbox.email_address) == email_address)
    return session.exec(statement).first()


def provider_has_mailboxes(session: Session, provider: str) -> bool:
    """Whether any mailbox logs in through the OAuth provider (its tokens came from it)."""
    statement = select(Mailbox.id).where(col(Mailbox.provider) == provider).limit(1)
    return session.exec(statement).first() is not None


def list_mailboxes(
    session: Session,
    *,
    after_id: int | None,
    limit: int,
    owner_user_id: str | None = None,
    status: MailboxStatus | None = None,
) -> list[Mailbox]:
    """Return up to `limit` mailboxes in id order, after `after_id` (a cursor page)."""
    statement = select(Mailbox).order_by(col(Mailbox.id)).limit(limit)
    if after_id is not None:
        statement = statement.where(col(Mailbox.id) > after_id)
    if owner_user_id is not None:
        statement = statement.where(col(Mailbox.owner_user_id) == owner_user_id)
    if status is not None:
        statement = statement.where(col(Mailbox.status) == status)
    return list(session.exec(statement))


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
    return rows_changed(result) == 1
