"""What a person is told when a mailbox's credentials stop working (login message and mail)."""

from __future__ import annotations

import html
from dataclasses import dataclass

from app.db.models import AuthType, Event, Mailbox


@dataclass(frozen=True, slots=True)
class CredentialsMessage:
    """Subject/title, plain text and HTML of one credential-failure notice."""

    title: str
    text: str
    html: str


def credentials_invalid_message(event: Event, mailbox: Mailbox) -> CredentialsMessage:
    """Say which mailbox failed, why, and what fixes it."""
    reason = str(event.data.get("message") or event.data.get("error_code") or "login refused")
    if mailbox.auth_type is AuthType.OAUTH:
        fix = (
            "Reconnect the account in the CRM's mailbox settings"
            f" (sign in with {mailbox.provider or 'the provider'} again)."
        )
    else:
        fix = "Enter the mailbox's current password in the CRM's mailbox settings."
    title = f"Mailbox {mailbox.email_address} can no longer sign in"
    text = (
        f"The mail server {mailbox.host} refused the credentials of the mailbox"
        f" {mailbox.email_address}, so its mail is no longer synchronized.\n\n"
        f"Reason given by the server: {reason}\n\n"
        f"What to do: {fix} Synchronization resumes as soon as the sign-in works.\n"
    )
    body = "".join(f"<p>{html.escape(paragraph)}</p>" for paragraph in text.strip().split("\n\n"))
    return CredentialsMessage(title, text, f"<html><body>{body}</body></html>")
