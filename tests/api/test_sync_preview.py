"""The connection check's sync preview, over HTTP against real servers.

Dovecot offers LIST-STATUS and STATUS=SIZE, so one LIST counts every folder and
sizes it; Courier offers neither, so each folder is asked with STATUS and has
no size. Either way the window of the folders a new mailbox syncs is measured
with SEARCH SINCE and RFC822.SIZE.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.config import Settings
from tests.support.debian_servers import Courier
from tests.support.dovecot import MailUser
from tests.support.imap_account import ImapAccount
from tests.support.live_api import LiveApi
from tests.support.mailgen import make_message

WINDOW_DAYS = 30


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"sync_window_days": WINDOW_DAYS})


def check_body(user: ImapAccount, *, security: str) -> dict[str, Any]:
    host, port = user.address()
    if isinstance(user, MailUser):
        port = user.dovecot.tls_port
    imap = {"host": host, "port": port, "security": security, "username": user.name}
    return {"imap": imap, "auth": {"type": "password", "password": user.password}}


def fill(user: ImapAccount, inbox: str, sent: str, other: str) -> dict[str, list[bytes]]:
    """Store mail inside and outside the window; return what each folder got, by window."""
    old = datetime.now(UTC) - timedelta(days=WINDOW_DAYS + 30)
    recent = [make_message(subject=f"recent {n}", text="x" * 100 * n) for n in range(1, 3)]
    outside = make_message(subject="old", date=old)
    uid = user.append(inbox, recent[0])
    user.append(inbox, recent[1])
    user.append(inbox, outside, date=old)
    user.add_flags(inbox, [uid], [r"\Seen"])
    sent_mail = make_message(subject="sent")
    user.append(sent, sent_mail)
    user.append(other, make_message(subject="not synced"))
    return {"inbox_window": recent, "inbox_old": [outside], "sent": [sent_mail]}


def preview_of(live_api: LiveApi, body: dict[str, Any]) -> dict[str, Any]:
    response = live_api.client.post("/v1/connection/check", json=body)
    assert response.status_code == 200, response.text
    preview: dict[str, Any] = response.json()["preview"]
    assert preview is not None, "the check answered without a preview"
    return preview


def sizes(messages: list[bytes]) -> int:
    return sum(len(message) for message in messages)


def test_dovecot_counts_sizes_and_measures_the_first_sync_window(
    live_api: LiveApi, mail_user: MailUser
) -> None:
    mail_user.create_folder("Projects")
    stored = fill(mail_user, "INBOX", "Sent", "Projects")

    preview = preview_of(live_api, check_body(mail_user, security="ssl"))

    folders = {folder["full_name"]: folder for folder in preview["folders"]}
    inbox_bytes = sizes(stored["inbox_window"])
    assert folders["INBOX"] == {
        "full_name": "INBOX",
        "messages": 3,
        "unseen": 2,
        "size": inbox_bytes + sizes(stored["inbox_old"]),
        "synced": True,
        "window_messages": 2,
        "window_bytes": inbox_bytes,
    }
    assert (folders["Sent"]["window_messages"], folders["Sent"]["synced"]) == (1, True)
    projects = folders["Projects"]
    assert projects["messages"] == 1
    assert (projects["synced"], projects["window_messages"]) == (False, None)
    assert projects["size"] is not None, "Dovecot offers STATUS=SIZE"
    assert (preview["messages"], preview["bytes"]) == (3, inbox_bytes + sizes(stored["sent"]))
    window_start = datetime.now(UTC).date() - timedelta(days=WINDOW_DAYS)
    assert preview["window_start"] == window_start.isoformat()
    assert preview["estimated_first_sync_seconds"] >= 0


def test_a_server_without_list_status_is_counted_folder_by_folder_without_sizes(
    live_api: LiveApi, courier: Courier
) -> None:
    user = courier.add_user()
    user.create_folder("INBOX.Projects")
    stored = fill(user, "INBOX", "INBOX.Sent", "INBOX.Projects")

    preview = preview_of(live_api, check_body(user, security="none"))

    folders = {folder["full_name"]: folder for folder in preview["folders"]}
    inbox = folders["INBOX"]
    assert (inbox["messages"], inbox["unseen"], inbox["size"]) == (3, 2, None)
    assert (inbox["window_messages"], inbox["window_bytes"]) == (2, sizes(stored["inbox_window"]))
    assert folders["INBOX.Sent"]["window_messages"] == 1
    assert folders["INBOX.Projects"]["synced"] is False
    assert preview["messages"] == 3


def test_preview_false_only_logs_in_and_lists(live_api: LiveApi, mail_user: MailUser) -> None:
    mail_user.append("INBOX", make_message())
    body = check_body(mail_user, security="ssl")
    response = live_api.client.post("/v1/connection/check", params={"preview": "false"}, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["preview"] is None
    assert response.json()["folders"][0]["full_name"] == "INBOX"


def test_a_preview_flag_that_is_not_a_boolean_is_refused_naming_it(
    live_api: LiveApi, mail_user: MailUser
) -> None:
    body = check_body(mail_user, security="ssl")
    response = live_api.client.post("/v1/connection/check", params={"preview": "maybe"}, json=body)
    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["errors"]] == ["preview"]
