"""Queries of the watcher: which mailboxes it may watch, and the leases that split them.

A watcher process holds a mailbox through `mailbox.watch_owner` /
`watch_expires_at`, taken with one conditional UPDATE (free, expired, or its
own), as the sync lease is; it renews all of its leases in one UPDATE per
heartbeat, so a crashed watcher's mailboxes are free once its leases run out, or
at once for a watcher on the same machine whose process is gone (app.sync.holder).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.db.models import AuthType, Folder, Mailbox, MailboxStatus
from app.imap import Security


def _watchable() -> list[sa.ColumnElement[bool]]:
    return [col(Mailbox.status) == MailboxStatus.ACTIVE, col(Mailbox.watch).is_(True)]


def renew_watch_leases(session: Session, owner: str, now: datetime, duration: timedelta) -> None:
    """Extend every watch lease `owner` holds on a mailbox that is still watchable."""
    session.execute(
        sa.update(Mailbox)
        .where(col(Mailbox.watch_owner) == owner, *_watchable())
        .values(watch_expires_at=now + duration)
        .execution_options(synchronize_session=False)
    )


def live_watch_holders(session: Session, now: datetime) -> set[str]:
    """Return the watchers holding a live lease on some mailbox."""
    statement = (
        select(Mailbox.watch_owner)
        .where(col(Mailbox.watch_owner).is_not(None), col(Mailbox.watch_expires_at) >= now)
        .distinct()
    )
    return {owner for owner in session.exec(statement).all() if owner is not None}


def claim_watch_leases(
    session: Session,
    owner: str,
    now: datetime,
    duration: timedelta,
    limit: int,
    *,
    dead_holders: Collection[str] = (),
) -> None:
    """Take up to `limit` watchable mailboxes that nobody watches (or whose watcher died).

    `dead_holders` names watchers known to be gone whose leases have not expired yet.
    """
    if limit <= 0:
        return
    free = sa.or_(
        col(Mailbox.watch_owner).is_(None),
        col(Mailbox.watch_expires_at) < now,
        col(Mailbox.watch_owner).in_(list(dead_holders)),
    )
    candidates = session.exec(
        select(Mailbox.id).where(*_watchable(), free).order_by(col(Mailbox.id)).limit(limit)
    ).all()
    for mailbox_id in candidates:
        session.execute(
            sa.update(Mailbox)
            .where(col(Mailbox.id) == mailbox_id, free)  # lost to a faster watcher: no row
            .values(watch_owner=owner, watch_expires_at=now + duration)
            .execution_options(synchronize_session=False)
        )


@dataclass(frozen=True, slots=True)
class HeldMailbox:
    """What a watch needs of a mailbox: where and how it logs in."""

    id: int
    host: str
    port: int
    security: Security
    username: str
    tls_verify: bool
    auth_type: AuthType
    password_enc: str | None
    refresh_token_enc: str | None
    token_expires_at: datetime | None


def held_watch_mailboxes(session: Session, owner: str, now: datetime) -> list[HeldMailbox]:
    """Return the watchable mailboxes whose live watch lease `owner` holds.

    Read as plain columns, not ORM objects: a watcher reads all of its mailboxes
    every few seconds, and loading 1,000 full rows cost it about 1 % of a core.
    """
    columns = [getattr(Mailbox, column.name) for column in fields(HeldMailbox)]
    rows = session.execute(
        sa.select(*columns)
        .where(
            col(Mailbox.watch_owner) == owner,
            col(Mailbox.watch_expires_at) >= now,
            *_watchable(),
        )
        .order_by(col(Mailbox.id))
    ).all()
    return [HeldMailbox(*row) for row in rows]


def enabled_folder_names(session: Session, mailbox_ids: Collection[int]) -> dict[int, list[str]]:
    """Return each mailbox's folders that syncs cover (enabled, still on the server)."""
    names: dict[int, list[str]] = {mailbox_id: [] for mailbox_id in mailbox_ids}
    if not names:
        return names
    rows = session.exec(
        select(Folder.mailbox_id, Folder.full_name)
        .where(
            col(Folder.mailbox_id).in_(list(names)),
            col(Folder.sync_enabled).is_(True),
            col(Folder.outdated_since).is_(None),
        )
        .order_by(col(Folder.full_name))
    ).all()
    for mailbox_id, full_name in rows:
        names[mailbox_id].append(full_name)
    return names


def release_watch_leases(session: Session, owner: str, now: datetime | None = None) -> None:
    """Give back `owner`'s watch leases; with `now`, only those `held_watch_mailboxes` leaves
    out (lapsed, or the mailbox no longer watchable)."""
    statement = sa.update(Mailbox).where(col(Mailbox.watch_owner) == owner)
    if now is not None:
        statement = statement.where(
            sa.or_(col(Mailbox.watch_expires_at) < now, sa.not_(sa.and_(*_watchable())))
        )
    session.execute(
        statement.values(watch_owner=None, watch_expires_at=None).execution_options(
            synchronize_session=False
        )
    )
