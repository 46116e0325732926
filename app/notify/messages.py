"""What a person is told when a mailbox stops working (login message and mail).

Two notices: the credentials were refused (`mailbox.credentials_invalid`), or the
mailbox kept failing for another reason (`mailbox.connection_failing`). Each says
which mailbox, why, what fixes it, and links the CRM page to fix it when the event
carries a `reconnect_url`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from app.db.models import AuthType, Event, Mailbox
from app.notify.envelope import CONNECTION_FAILING


@dataclass(frozen=True, slots=True)
class NoticeMessage:
    """Subject/title, plain text and HTML of one notice."""

    title: str
    text: str
    html: str


def notice_message(event: Event, mailbox: Mailbox) -> NoticeMessage:
    """Build the notice of a credential or connection failure event."""
    if event.type == CONNECTION_FAILING:
        return _connection_failing_message(event, mailbox)
    return _credentials_invalid_message(event, mailbox)


def reconnect_url_of(event: Event) -> str | None:
    url = event.data.get("reconnect_url")
    return url if isinstance(url, str) else None


def _credentials_invalid_message(event: Event, mailbox: Mailbox) -> NoticeMessage:
    reason = str(event.data.get("message") or event.data.get("error_code") or "login refused")
    if mailbox.auth_type is AuthType.OAUTH:
        fix = (
            "Reconnect the account in the CRM's mailbox settings"
            f" (sign in with {mailbox.provider or 'the provider'} again)."
        )
    else:
        fix = "Enter the mailbox's current password in the CRM's mailbox settings."
    return _message(
        event,
        f"Mailbox {mailbox.email_address} can no longer sign in",
        [
            f"The mail server {mailbox.host} refused the credentials of the mailbox"
            f" {mailbox.email_address}, so its mail is no longer synchronized.",
            f"Reason given by the server: {reason}",
            f"What to do: {fix} Synchronization resumes as soon as the sign-in works.",
        ],
    )


def _connection_failing_message(event: Event, mailbox: Mailbox) -> NoticeMessage:
    reason = str(event.data.get("message") or event.data.get("error_code") or "unknown")
    since = str(event.data.get("failing_since") or "some time")
    return _message(
        event,
        f"Mailbox {mailbox.email_address} cannot reach its mail server",
        [
            f"The service has not been able to synchronize the mailbox {mailbox.email_address}"
            f" from {mailbox.host} since {since}.",
            f"The last error: {reason}",
            "What to do: check the server settings (host, port, security) in the CRM's mailbox"
            " settings, or ask the mail provider whether the server is available. The service"
            " keeps retrying and tells you once it works again.",
        ],
    )


def _message(event: Event, title: str, paragraphs: list[str]) -> NoticeMessage:
    url = reconnect_url_of(event)
    text = "\n\n".join([*paragraphs, *([f"Fix it here: {url}"] if url else [])]) + "\n"
    body = "".join(f"<p>{html.escape(paragraph)}</p>" for paragraph in paragraphs)
    if url:
        link = html.escape(url, quote=True)
        body += f'<p><a href="{link}">Fix it here</a></p>'
    return NoticeMessage(title, text, f"<html><body>{body}</body></html>")
