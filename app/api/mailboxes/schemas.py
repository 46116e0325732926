"""Mailboxes as the API takes and returns them; credentials go in and never come out."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.api.connection.schemas import Auth, ImapSettings
from app.api.request_models import USER_ID_PATTERN, IsoDate, RequestModel
from app.db.models import AuthType, Mailbox, MailboxStatus, persisted_id
from app.sync import KEEP, MailboxChanges, Owner, Registration

# No whitespace or control characters: the address may become an IMAP username or an SMTP
# recipient. Rust's linear regex runs it (no lookaround), so any input costs linear time.
EMAIL_ADDRESS = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$"
WATCH_DESCRIPTION = (
    "Hold a connection that syncs new mail within seconds (IDLE/NOTIFY);"
    " false leaves the mailbox to the scheduled sync."
)


class OwnerRef(RequestModel):
    """The CRM user a mailbox belongs to, and where notifications about it go."""

    user_id: str = Field(min_length=1, max_length=255, pattern=USER_ID_PATTERN)
    email: str | None = Field(default=None, max_length=320, pattern=EMAIL_ADDRESS)

    def to_owner(self) -> Owner:
        return Owner(user_id=self.user_id, email=self.email)


class MailboxCreate(RequestModel):
    """A mailbox to register; the connection is verified before anything is saved."""

    email_address: str = Field(max_length=320, pattern=EMAIL_ADDRESS)
    owner: OwnerRef | None = Field(description="null registers a system mailbox.")
    imap: ImapSettings
    auth: Auth
    sync_start: IsoDate | None = Field(
        default=None, description="First day of mail to sync; null keeps the window setting."
    )
    watch: bool = Field(default=True, description=WATCH_DESCRIPTION)

    def to_registration(self) -> Registration:
        return Registration(
            email_address=self.email_address,
            owner=self.owner.to_owner() if self.owner else None,
            server=self.imap.to_server(),
            credential=self.auth.to_credential(),
            sync_start=self.sync_start,
            watch=self.watch,
        )


class MailboxUpdate(RequestModel):
    """Fields to change; omitted ones stay as they are.

    `imap` and `auth` replace the whole object. New settings or credentials
    must log in before they are saved, and then clear `auth_failed`.
    """

    owner: OwnerRef | None = None
    imap: ImapSettings | None = None
    auth: Auth | None = None
    sync_start: IsoDate | None = None
    status: Literal["active", "disabled"] | None = Field(
        default=None, description="`disabled` stops syncing; `active` resumes it."
    )
    watch: bool | None = Field(default=None, description=WATCH_DESCRIPTION)

    def to_changes(self) -> MailboxChanges:
        given = self.model_fields_set
        return MailboxChanges(
            server=self.imap.to_server() if self.imap else None,
            credential=self.auth.to_credential() if self.auth else None,
            owner=(self.owner.to_owner() if self.owner else None) if "owner" in given else KEEP,
            sync_start=self.sync_start if "sync_start" in given else KEEP,
            status=MailboxStatus(self.status) if self.status else None,
            watch=self.watch,
        )


class AuthRead(BaseModel):
    """How the service logs in; the secret itself is never returned."""

    type: AuthType
    provider: str | None


class MailboxRead(BaseModel):
    """A registered mailbox and where its synchronization stands."""

    id: int
    email_address: str
    owner: OwnerRef | None
    imap: ImapSettings
    auth: AuthRead
    status: MailboxStatus
    last_error: str | None = Field(description="Why the last sync failed; null after a success.")
    last_synced_at: datetime | None
    next_sync_at: datetime | None = Field(description="null: due now.")
    sync_start: date | None
    watch: bool = Field(description=WATCH_DESCRIPTION)
    created_at: datetime

    @classmethod
    def from_mailbox(cls, mailbox: Mailbox) -> MailboxRead:
        owner = (
            OwnerRef(user_id=mailbox.owner_user_id, email=mailbox.owner_email)
            if mailbox.owner_user_id is not None
            else None
        )
        return cls(
            id=persisted_id(mailbox),
            email_address=mailbox.email_address,
            owner=owner,
            imap=ImapSettings(
                host=mailbox.host,
                port=mailbox.port,
                security=mailbox.security,
                username=mailbox.username,
                tls_verify=mailbox.tls_verify,
            ),
            auth=AuthRead(type=mailbox.auth_type, provider=mailbox.provider),
            status=mailbox.status,
            last_error=mailbox.last_error,
            last_synced_at=mailbox.last_synced_at,
            next_sync_at=mailbox.next_sync_at,
            sync_start=mailbox.sync_start,
            watch=mailbox.watch,
            created_at=mailbox.created_at,
        )
