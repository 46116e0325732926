"""An IMAP account the service keeps a local copy of.

Uniqueness of the address per owner: `UNIQUE (owner_user_id, email_address)`
covers owned mailboxes, but SQL treats NULLs as distinct, so two system
mailboxes (owner NULL) would slip through it. A partial unique index on
`email_address WHERE owner_user_id IS NULL` closes that gap on both SQLite
and PostgreSQL, without a shadow "owner key" column to keep in step.
Addresses are compared as stored: the service lower-cases them on the way in.

Secrets (`*_enc`) hold `app.security.SecretBox` tokens, never plaintext.
`lease_owner`/`lease_expires_at` let exactly one worker sync the mailbox;
`next_sync_at` and `consecutive_failures` drive the schedule and its backoff.
`failing_since` is the first failed run of the current episode of failures other
than credentials, `failing_noticed_at` when `mailbox.connection_failing` told of it
(once per episode; `app.sync.notices`).
`orphans_possible` says an email of the mailbox may be in no folder: every
removal of a folder link sets it in its transaction, and a complete sync that
deletes all such emails clears it, so a sync looks for them only when it is set.
`watch` lets the watcher hold a connection to it (real time); `watch_owner` /
`watch_expires_at` are the watcher lease: one watcher process at a time holds
the connection, and a crashed one's mailboxes move when its lease runs out.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field

from app.db.models.base import Model, enum_type, utcnow
from app.imap import Security


class AuthType(StrEnum):
    """How the service logs in: LOGIN with a password, or XOAUTH2 with a token."""

    PASSWORD = "password"  # noqa: S105 - the name of a login method, not a secret
    OAUTH = "oauth"


class MailboxStatus(StrEnum):
    """Whether the scheduler syncs the mailbox; `auth_failed` waits for new credentials."""

    ACTIVE = "active"
    AUTH_FAILED = "auth_failed"
    DISABLED = "disabled"


class MailboxBase(Model):
    owner_user_id: str | None = Field(default=None, max_length=255)
    owner_email: str | None = Field(default=None, max_length=320)
    email_address: str = Field(max_length=320)
    host: str = Field(max_length=253)
    port: int = Field(default=993, ge=1, le=65535)
    security: Security = Field(default=Security.SSL, sa_type=enum_type(Security))
    username: str = Field(max_length=320)
    tls_verify: bool = True
    auth_type: AuthType = Field(default=AuthType.PASSWORD, sa_type=enum_type(AuthType))
    provider: str | None = Field(default=None, max_length=64)
    sync_start: date | None = None


class Mailbox(MailboxBase, table=True):
    __table_args__ = (
        sa.UniqueConstraint("owner_user_id", "email_address"),
        sa.Index(
            "uq_mailbox_system_email_address",
            "email_address",
            unique=True,
            sqlite_where=sa.text("owner_user_id IS NULL"),
            postgresql_where=sa.text("owner_user_id IS NULL"),
        ),
        sa.Index("ix_mailbox_status_next_sync_at", "status", "next_sync_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    password_enc: str | None = Field(default=None, sa_type=sa.Text)
    access_token_enc: str | None = Field(default=None, sa_type=sa.Text)
    refresh_token_enc: str | None = Field(default=None, sa_type=sa.Text)
    token_expires_at: datetime | None = None
    status: MailboxStatus = Field(default=MailboxStatus.ACTIVE, sa_type=enum_type(MailboxStatus))
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    last_synced_at: datetime | None = None
    next_sync_at: datetime | None = None
    consecutive_failures: int = 0
    failing_since: datetime | None = None
    failing_noticed_at: datetime | None = None
    orphans_possible: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    lease_owner: str | None = Field(default=None, max_length=255)
    lease_expires_at: datetime | None = None
    watch: bool = Field(default=True, sa_column_kwargs={"server_default": sa.true()})
    watch_owner: str | None = Field(default=None, max_length=255)
    watch_expires_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, sa_column_kwargs={"onupdate": utcnow})
