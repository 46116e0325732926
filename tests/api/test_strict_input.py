"""The API reads a request exactly as its OpenAPI document states: JSON types are not
coerced, a day is a `YYYY-MM-DD` string, unknown fields are refused, a method a path does
not serve is a 405 naming every one it does, and a body that cannot be decoded is the 400
the document lists."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.live_api import LiveApi


def refused_field(response: Any) -> str:
    """The one field a 422 problem names."""
    assert response.status_code == 422, f"accepted: {response.status_code} {response.text}"
    fields = [error["field"] for error in response.json()["errors"]]
    assert len(fields) == 1, fields
    return str(fields[0])


@pytest.mark.parametrize("sync_start", [0, 1714521600, 20240501, "2024-05-01T00:00:00", True])
def test_a_sync_start_that_is_not_a_written_day_is_refused(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory, sync_start: object
) -> None:
    """`0` was read as 1970-01-01: a sync window of the whole mailbox."""
    mailbox_id = add_mailbox(mail_user)
    patched = live_api.client.patch(f"/v1/mailboxes/{mailbox_id}", json={"sync_start": sync_start})
    assert refused_field(patched) == "sync_start"
    assert live_api.client.get(f"/v1/mailboxes/{mailbox_id}").json()["sync_start"] is None


def test_a_written_day_is_taken(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    patched = live_api.client.patch(
        f"/v1/mailboxes/{mailbox_id}", json={"sync_start": "2024-05-01"}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["sync_start"] == "2024-05-01"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/webhooks", {"url": "https://hooks.example.com/x", "enabled": "yes"}, "enabled"),
        ("/v1/webhooks", {"url": "https://hooks.example.com/x", "enabled": 1}, "enabled"),
        ("/v1/webhooks", {"url": "https://hooks.example.com/x", "secret": "mine"}, "secret"),
        ("/v1/connection/check", {"imap": {"port": "993"}}, "imap.port"),
        ("/v1/connection/check", {"imap": {"port": 993.5}}, "imap.port"),
        ("/v1/connection/check", {"imap": {"port": True}}, "imap.port"),
    ],
)
def test_json_types_are_not_coerced_and_unknown_fields_are_refused(
    live_api: LiveApi, path: str, body: dict[str, Any], field: str
) -> None:
    answer = live_api.client.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert field in [error["field"] for error in answer.json()["errors"]], answer.text


def test_a_misspelt_field_is_refused_not_ignored(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    patched = live_api.client.patch(
        f"/v1/mailboxes/{mailbox_id}", json={"sync_strat": "2024-05-01"}
    )
    assert refused_field(patched) == "sync_strat"


@pytest.mark.parametrize("since", ["0.5", "1714521600", "yesterday"])
def test_an_instant_is_an_iso_date_time_not_a_number(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory, since: str
) -> None:
    mailbox_id = add_mailbox(mail_user)
    listed = live_api.client.get(f"/v1/mailboxes/{mailbox_id}/emails", params={"since": since})
    assert refused_field(listed) == "since"


@pytest.mark.parametrize("cursor", ["", "not a cursor", "AAAA", "W10"])
def test_a_cursor_the_api_did_not_make_is_a_422_naming_cursor(
    live_api: LiveApi, cursor: str
) -> None:
    listed = live_api.client.get("/v1/mailboxes", params={"cursor": cursor})
    assert refused_field(listed) == "cursor"


def test_a_method_a_path_does_not_serve_is_a_405_allowing_every_served_one(
    live_api: LiveApi,
) -> None:
    """GET and POST of `/v1/mailboxes` are two routes; Starlette's Allow named only one."""
    for method, path, allowed in [
        ("OPTIONS", "/v1/mailboxes", "GET, POST"),
        ("PUT", "/v1/mailboxes/1", "DELETE, GET, PATCH"),
        ("OPTIONS", "/v1/webhooks", "GET, POST"),
    ]:
        answer = live_api.client.request(method, path)
        assert answer.status_code == 405, f"{method} {path}: {answer.status_code}"
        assert answer.headers["allow"] == allowed, f"{method} {path}"
        assert answer.json()["code"] == "method_not_allowed"


def test_a_body_that_cannot_be_decoded_is_a_400_problem(live_api: LiveApi) -> None:
    answer = live_api.client.post(
        "/v1/webhooks",
        content=b'{"url": "\xff\xfe"}',
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "malformed_body"


def test_a_body_that_is_not_json_is_a_422_naming_body(live_api: LiveApi) -> None:
    """FastAPI locates the error at a character offset, which named a field `1`."""
    answer = live_api.client.post(
        "/v1/webhooks", content=b'{"url": ', headers={"Content-Type": "application/json"}
    )
    assert refused_field(answer) == "body"


@pytest.mark.parametrize(
    ("path", "field"),
    [("/v1/mailboxes?owner=a%00b", "owner"), ("/v1/events?user_id=a%00b", "user_id")],
)
def test_a_user_id_with_a_nul_is_refused_not_a_database_error(
    live_api: LiveApi, path: str, field: str
) -> None:
    """PostgreSQL cannot compare text with a NUL in it: this was a 500 there."""
    assert refused_field(live_api.client.get(path)) == field
