"""The one shape of an event on every channel: webhook body, SSE `data:`, API.

`EventEnvelope` is what channels send: the outbox row as it is, `data` a JSON
object. The contract that row keeps is `Event` below: one model per event type,
a discriminated union on `type`, each with its `data` spelled out field by
field. The OpenAPI document publishes it (components `Event` and its variants,
and the `webhooks` section), so generated clients narrow on `type` and get a
typed `data`. The data models refuse unknown fields: a field added to an event
is a change to this contract, made here, and the test that validates every
event the code records (tests/notify/test_event_contract.py) fails until it is.
Receivers should still ignore fields they do not know, as they may be added.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from app.db.models import Event as OutboxEvent
from app.db.models import column_values

# Sent to one endpoint by `POST /v1/webhooks/{id}/test`; no other channel sees it.
WEBHOOK_TEST_EVENT = "webhook.test"
CREDENTIALS_INVALID = "mailbox.credentials_invalid"
CREDENTIALS_RESTORED = "mailbox.credentials_restored"
CONNECTION_FAILING = "mailbox.connection_failing"
CONNECTION_RESTORED = "mailbox.connection_restored"

# Every type the outbox holds (docs/architecture.md, "The real-time path"); webhook filters
# and SSE `types` name these.
EventType = Literal[
    "email.received",
    "email.updated",
    "email.deleted",
    "mailbox.synced",
    "mailbox.sync_failed",
    "mailbox.credentials_invalid",
    "mailbox.credentials_restored",
    "mailbox.connection_failing",
    "mailbox.connection_restored",
    "folder.deleted",
    "folder.renamed",
    "folder.reset",
]


class EventEnvelope(BaseModel):
    """An event: what happened (`type`), to which mailbox and owner, and its facts."""

    id: int = Field(description="Increasing; SSE `id:` and the resume point of Last-Event-ID.")
    type: str = Field(description="e.g. `email.received`, `mailbox.credentials_invalid`.")
    created_at: datetime
    mailbox_id: int | None = Field(description="null once the mailbox is deleted.")
    owner: str | None = Field(description="The mailbox owner's CRM user id; null: a system one.")
    data: dict[str, Any]

    @classmethod
    def of(cls, event: OutboxEvent) -> EventEnvelope:
        """Read the row's columns by name; the owner is `owner_user_id` there."""
        return cls.model_validate({**column_values(event, cls), "owner": event.owner_user_id})


# -- the contract: each type's `data` ---------------------------------------------------------


class EventData(BaseModel):
    """The facts of one event type; exactly these fields."""

    model_config = ConfigDict(extra="forbid")


class EmailReceivedData(EventData):
    """New mail stored from one folder, in batches (one event per stored batch)."""

    folder_id: int
    folder: str = Field(description="The folder's full name on the server.")
    email_ids: list[int] = Field(description="The new emails; `GET /v1/emails/{id}` reads one.")


class FolderUid(EventData):
    """Where an email is on the server: a folder and its UID there."""

    folder_id: int
    uid: int


class EmailState(EventData):
    """An email's flags and folders after the change."""

    id: int
    seen: bool
    flagged: bool
    folders: list[FolderUid] = Field(description="Every folder holding the email now.")


class EmailUpdatedData(EventData):
    """Flags or folder membership changed, on the server or through `PATCH /v1/emails/{id}`."""

    emails: list[EmailState]


class EmailDeletedData(EventData):
    """Emails gone from every folder of the server, and so from the service."""

    email_ids: list[int]


class MailboxSyncedData(EventData):
    """A sync run succeeded; the counts are what this run changed."""

    run_id: int = Field(description="`GET /v1/mailboxes/{id}/sync-runs` lists the runs.")
    complete: bool = Field(description="false: more to fetch; the next run follows at once.")
    new: int
    flags_changed: int
    expunged: int
    folders_added: int
    folders_removed: int
    bytes: int = Field(description="Bytes fetched from the server.")


class MailboxSyncFailedData(EventData):
    """A sync run failed for a reason retrying will not cure (a network failure sends none)."""

    error_code: str


class CredentialsInvalidData(EventData):
    """The server refused the stored credentials; syncing waits until they change."""

    error_code: str
    message: str = Field(description="What the server or provider said, for a person to read.")
    reconnect_url: str | None = Field(
        default=None,
        description="The CRM page where the owner reconnects the mailbox (REAUTH_URL_TEMPLATE).",
    )


class CredentialsRestoredData(EventData):
    """A login worked again after `mailbox.credentials_invalid`; no facts."""


class ConnectionFailingData(EventData):
    """Syncs kept failing for another reason than the credentials, for FAILING_NOTICE_AFTER_SECONDS.

    Sent once per episode of failures; `mailbox.connection_restored` ends it.
    """

    error_code: str = Field(description="The last failure: `tls_error`, `unreachable`...")
    message: str = Field(description="What the last failure said, for a person to read.")
    failing_since: datetime = Field(description="The first failed run of the episode.")
    reconnect_url: str | None = Field(
        default=None, description="The CRM page to fix the mailbox (REAUTH_URL_TEMPLATE)."
    )


class ConnectionRestoredData(EventData):
    """A run worked again after `mailbox.connection_failing`."""

    failing_since: datetime = Field(description="When the episode of failures began.")


class FolderDeletedData(EventData):
    """A folder vanished from the server."""

    folder_id: int
    full_name: str
    kept: bool = Field(description="true: kept, marked outdated, as mail was synced from it.")


class FolderRenamedData(EventData):
    """A folder was renamed on the server; its mail stays linked."""

    folder_id: int
    old_name: str
    new_name: str


class FolderResetData(EventData):
    """The server renumbered a folder (UIDVALIDITY changed, RFC 3501); its mail is relinked."""

    folder_id: int
    full_name: str
    old_uidvalidity: int
    new_uidvalidity: int


class WebhookTestData(EventData):
    """Sent to one endpoint by `POST /v1/webhooks/{id}/test`."""

    endpoint_id: int
    url: str


class _Envelope(BaseModel):
    id: int = Field(description="Increasing; SSE `id:` and the resume point of Last-Event-ID.")
    created_at: datetime
    mailbox_id: int | None = Field(description="null once the mailbox is deleted.")
    owner: str | None = Field(description="The mailbox owner's CRM user id; null: a system one.")


class EmailReceivedEvent(_Envelope):
    type: Literal["email.received"]
    data: EmailReceivedData


class EmailUpdatedEvent(_Envelope):
    type: Literal["email.updated"]
    data: EmailUpdatedData


class EmailDeletedEvent(_Envelope):
    type: Literal["email.deleted"]
    data: EmailDeletedData


class MailboxSyncedEvent(_Envelope):
    type: Literal["mailbox.synced"]
    data: MailboxSyncedData


class MailboxSyncFailedEvent(_Envelope):
    type: Literal["mailbox.sync_failed"]
    data: MailboxSyncFailedData


class CredentialsInvalidEvent(_Envelope):
    type: Literal["mailbox.credentials_invalid"]
    data: CredentialsInvalidData


class CredentialsRestoredEvent(_Envelope):
    type: Literal["mailbox.credentials_restored"]
    data: CredentialsRestoredData


class ConnectionFailingEvent(_Envelope):
    type: Literal["mailbox.connection_failing"]
    data: ConnectionFailingData


class ConnectionRestoredEvent(_Envelope):
    type: Literal["mailbox.connection_restored"]
    data: ConnectionRestoredData


class FolderDeletedEvent(_Envelope):
    type: Literal["folder.deleted"]
    data: FolderDeletedData


class FolderRenamedEvent(_Envelope):
    type: Literal["folder.renamed"]
    data: FolderRenamedData


class FolderResetEvent(_Envelope):
    type: Literal["folder.reset"]
    data: FolderResetData


class WebhookTestEvent(_Envelope):
    type: Literal["webhook.test"]
    data: WebhookTestData


class Event(
    RootModel[
        Annotated[
            EmailReceivedEvent
            | EmailUpdatedEvent
            | EmailDeletedEvent
            | MailboxSyncedEvent
            | MailboxSyncFailedEvent
            | CredentialsInvalidEvent
            | CredentialsRestoredEvent
            | ConnectionFailingEvent
            | ConnectionRestoredEvent
            | FolderDeletedEvent
            | FolderRenamedEvent
            | FolderResetEvent
            | WebhookTestEvent,
            Field(discriminator="type"),
        ]
    ]
):
    """Any event, told apart by `type`: the body of every webhook and each SSE `data:`."""
