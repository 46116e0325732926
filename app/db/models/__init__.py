"""Every table of the service, imported here so `metadata` holds them all for Alembic.

No ORM relationships on purpose: deletes cascade in the database
(`ON DELETE CASCADE` / `SET NULL`), so removing a mailbox with a million
emails is one statement, and the sync engine never lazy-loads by accident.
"""

from __future__ import annotations

from app.db.models.api_key import ApiKey, ApiKeyBase, ApiKeyScope
from app.db.models.attachment import Attachment, AttachmentBase
from app.db.models.base import Model, Stored, column_values, persisted_id, utcnow
from app.db.models.email import Email, EmailBase, MailAddress
from app.db.models.email_folder import EmailFolder, EmailFolderBase
from app.db.models.event import Event, EventBase
from app.db.models.event_delivery import DeliveryState, EventDelivery
from app.db.models.folder import Folder, FolderBase
from app.db.models.mailbox import AuthType, Mailbox, MailboxBase, MailboxStatus
from app.db.models.notification import Notification, NotificationBase
from app.db.models.notification_recipient import NotificationRecipient, NotificationRecipientBase
from app.db.models.oauth_flow import OAuthFlow
from app.db.models.oauth_provider_settings import OAuthProviderSettings, OAuthProviderSettingsBase
from app.db.models.sync_run import SyncRun, SyncRunBase, SyncRunStatus, SyncTrigger
from app.db.models.webhook_delivery import WebhookDelivery, WebhookDeliveryBase
from app.db.models.webhook_endpoint import WebhookEndpoint, WebhookEndpointBase

metadata = Model.metadata

__all__ = [
    "ApiKey",
    "ApiKeyBase",
    "ApiKeyScope",
    "Attachment",
    "AttachmentBase",
    "AuthType",
    "DeliveryState",
    "Email",
    "EmailBase",
    "EmailFolder",
    "EmailFolderBase",
    "Event",
    "EventBase",
    "EventDelivery",
    "Folder",
    "FolderBase",
    "MailAddress",
    "Mailbox",
    "MailboxBase",
    "MailboxStatus",
    "Model",
    "Notification",
    "NotificationBase",
    "NotificationRecipient",
    "NotificationRecipientBase",
    "OAuthFlow",
    "OAuthProviderSettings",
    "OAuthProviderSettingsBase",
    "Stored",
    "SyncRun",
    "SyncRunBase",
    "SyncRunStatus",
    "SyncTrigger",
    "WebhookDelivery",
    "WebhookDeliveryBase",
    "WebhookEndpoint",
    "WebhookEndpointBase",
    "column_values",
    "metadata",
    "persisted_id",
    "utcnow",
]
