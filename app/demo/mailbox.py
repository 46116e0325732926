"""Register the demo mailbox through the API, as a CRM would, and wait for its first sync.

POST /v1/mailboxes .................. the service logs in to the demo server (TLS,
                                      checked against IMAP_CA_FILE), lists its folders,
                                      turns on INBOX and Sent, queues the first sync
GET /v1/mailboxes/{id} .............. until `last_synced_at` is set (the worker did it)
GET /v1/mailboxes/{id}/folders ...... how much of each folder the sync stored
GET /v1/mailboxes/{id}/emails ....... an unflagged message, for the curl that flags one
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from app.demo.dovecot import ACCOUNT, HOST, DemoDovecot
from app.demo.mail import ADDRESS
from app.demo.service import DemoServiceError

_SYNC_SECONDS = 120.0


@dataclass(frozen=True)
class SyncedMailbox:
    """The registered mailbox: its id, the synced count per folder, a message to flag."""

    mailbox_id: int
    synced: dict[str, int]
    email_id: int


def register_demo_mailbox(api: httpx.Client, server: DemoDovecot) -> SyncedMailbox:
    """Register the demo account and return once its first sync is over."""
    created = api.post(
        "/v1/mailboxes",
        json={
            "email_address": ADDRESS,
            "owner": {"user_id": "crm-user-1", "email": ADDRESS},
            "imap": {"host": HOST, "port": server.port, "security": "ssl", "username": ACCOUNT},
            "auth": {"type": "password", "password": server.password},
        },
    )
    if created.status_code != 201:
        raise DemoServiceError(f"POST /v1/mailboxes answered {created.status_code}: {created.text}")
    mailbox_id: int = created.json()["id"]
    deadline = time.monotonic() + _SYNC_SECONDS
    while (mailbox := _answer(api.get(f"/v1/mailboxes/{mailbox_id}")))["last_synced_at"] is None:
        if time.monotonic() > deadline:
            raise DemoServiceError(
                f"the first sync did not finish within {_SYNC_SECONDS:.0f} s: {mailbox}"
            )
        time.sleep(0.5)
    folders = _answer(api.get(f"/v1/mailboxes/{mailbox_id}/folders"))
    synced = {
        folder["full_name"]: folder["message_count"] for folder in folders if folder["sync_enabled"]
    }
    inbox = next(folder["id"] for folder in folders if folder["full_name"] == "INBOX")
    unflagged = {"folder_id": inbox, "flagged": "false", "limit": 1}
    page = _answer(api.get(f"/v1/mailboxes/{mailbox_id}/emails", params=unflagged))
    return SyncedMailbox(mailbox_id=mailbox_id, synced=synced, email_id=page["items"][0]["id"])


def _answer(response: httpx.Response) -> Any:
    if response.status_code != 200:
        raise DemoServiceError(
            f"{response.request.method} {response.request.url.path} answered"
            f" {response.status_code}: {response.text}"
        )
    return response.json()
