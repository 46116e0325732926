"""Failures of the notification layer; `code` is stable and safe to show."""

from __future__ import annotations


class NotifyError(Exception):
    """Base of the notification layer's errors."""

    code = "notify_error"
    # The request field the error is about, when the client can fix it there.
    field: str | None = None


class WebhookEndpointNotFoundError(NotifyError):
    code = "not_found"


class NotificationNotFoundError(NotifyError):
    code = "not_found"


class WebhookUrlRefusedError(NotifyError):
    """The URL is not one the service may post to (scheme, or a non-public address)."""

    code = "webhook_url_refused"
    field = "url"
