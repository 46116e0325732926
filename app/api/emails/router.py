"""Local mail: filtered lists, one email with bodies, its source and attachments.

Lists and single emails come from the database. The source and attachments
are fetched from the server on each request (`app.sync.attachments`); those
routes open their own short transactions rather than the request's, so no
database transaction stays open while the IMAP server answers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import Path, Query
from fastapi.responses import Response, StreamingResponse
from sqlmodel import Session

from app.api.auth import full_key_router
from app.api.deps import (
    DATABASE_ONLY,
    IMAP_SESSION,
    MAX_ROW_ID,
    EmailIdPath,
    EngineDep,
    MailboxIdPath,
    SecretsDep,
    SessionDep,
    SettingsDep,
)
from app.api.emails.schemas import (
    EmailFlagsUpdate,
    EmailRead,
    EmailSummary,
    summary_page_json,
    text_filter,
)
from app.api.limits import RATE_LIMIT
from app.api.pagination import (
    CursorQuery,
    LimitQuery,
    Page,
    bad_cursor,
    decode_cursor,
    encode_cursor,
)
from app.api.problems import (
    DATABASE_UNAVAILABLE,
    IMAP_PROBLEMS,
    INVALID_INPUT,
    RATE_LIMITED,
    ApiError,
    ProblemDoc,
    missing,
    not_found,
    problem_responses,
)
from app.api.request_models import IsoDateTime
from app.api.streaming import chunks_in_threads
from app.db.repositories.emails import (
    EmailFilters,
    EmailPosition,
    email_detail,
    email_page,
    mailbox_exists,
)
from app.sync import fetch_attachment, fetch_message_source, write_flags

router = full_key_router("/v1", "emails")

# A MIME type as RFC 6838 spells one; anything else is served as opaque bytes.
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
# RFC 5987 attr-char besides letters and digits, which `quote` leaves as they are.
_ATTR_CHARS = "!#$&+-.^_`|~"
_FALLBACK_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\%]')

_NO_SUCH_EMAIL = missing("email")
# The source and attachments are fetched from the server with the mailbox's credentials.
_FETCH_PROBLEMS = problem_responses(
    _NO_SUCH_EMAIL,
    ProblemDoc(404, "`gone_from_server`: no folder on the server holds the message any more"),
    INVALID_INPUT,
    ProblemDoc(422, "`auth_failed`: the server refused the mailbox's credentials"),
    *IMAP_PROBLEMS,
    RATE_LIMITED,
    DATABASE_UNAVAILABLE,
)
_BINARY = {"type": "string", "format": "binary"}
_WRITE_PROBLEMS = problem_responses(
    _NO_SUCH_EMAIL,
    ProblemDoc(404, "`gone_from_server`: no folder on the server holds the message any more"),
    ProblemDoc(409, "`folder_read_only`: the server lets the mailbox only read a folder"),
    INVALID_INPUT,
    ProblemDoc(422, "`auth_failed`: the server refused the mailbox's credentials"),
    *IMAP_PROBLEMS,
    RATE_LIMITED,
    DATABASE_UNAVAILABLE,
)


@router.get(
    "/mailboxes/{mailbox_id}/emails",
    operation_id="list_emails",
    summary="The mailbox's local mail, newest first, filtered",
    description=(
        "Every filter given must match. Text filters are case-insensitive substring matches"
        " (a scan, not a full-text index; SQLite folds ASCII letters only). Pages are ordered"
        " by `(date desc, id desc)`, undated mail last, and stay stable while new mail arrives."
    ),
    response_model=Page[EmailSummary],
    responses=problem_responses(missing("mailbox")),
    dependencies=[DATABASE_ONLY],
)
def list_emails(
    session: SessionDep,
    mailbox_id: MailboxIdPath,
    *,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    folder_id: Annotated[
        int | None, Query(ge=1, le=MAX_ROW_ID, description="Only mail in this folder.")
    ] = None,
    sender: Annotated[str | None, text_filter("In the From address or name.", alias="from")] = None,
    to: Annotated[str | None, text_filter("In a To or Cc address or name.")] = None,
    subject: Annotated[str | None, text_filter("In the subject.")] = None,
    text: Annotated[str | None, text_filter("In the subject, the text body or the sender.")] = None,
    since: Annotated[
        IsoDateTime | None, Query(description="Dated at or after this instant (UTC if no zone).")
    ] = None,
    before: Annotated[
        IsoDateTime | None, Query(description="Dated before this instant (UTC if no zone).")
    ] = None,
    seen: bool | None = None,
    flagged: bool | None = None,
    thread: Annotated[str | None, text_filter("A `thread_key`: one conversation.")] = None,
) -> Response:
    # `response_model` documents the page, which is written straight to JSON: a returned
    # `Page` would be built from models and validated once more, in another trip to the
    # threadpool. Rows prove the mailbox exists, so only an empty page asks for it (and a
    # bad cursor, which must not hide a 404).
    try:
        after = _position_of_cursor(cursor) if cursor is not None else None
    except ApiError:
        _require_mailbox(session, mailbox_id)  # a missing mailbox is a 404 whatever the cursor
        raise
    filters = EmailFilters(
        folder_id=folder_id,
        sender=sender,
        recipient=to,
        subject=subject,
        text=text,
        since=_as_utc(since),
        before=_as_utc(before),
        seen=seen,
        flagged=flagged,
        thread_key=thread,
    )
    page = email_page(session, mailbox_id, filters, after=after, limit=limit)
    if not page.rows:
        _require_mailbox(session, mailbox_id)
    next_cursor = _cursor_of(page.next_position) if page.next_position else None
    return Response(summary_page_json(page, next_cursor), media_type="application/json")


@router.get(
    "/emails/{email_id}",
    operation_id="get_email",
    summary="One email with its bodies and attachment list",
    response_model=EmailRead,
    responses=problem_responses(_NO_SUCH_EMAIL),
    dependencies=[DATABASE_ONLY],
)
def read_email(session: SessionDep, email_id: EmailIdPath) -> EmailRead:
    detail = email_detail(session, email_id)
    if detail is None:
        raise not_found("email", email_id)
    return EmailRead.of_detail(detail.email, detail.links, detail.attachments)


@router.patch(
    "/emails/{email_id}",
    operation_id="update_email_flags",
    dependencies=[RATE_LIMIT, IMAP_SESSION],
    summary="Store seen/flagged on the server, in every folder holding it, then locally",
    description=(
        "The server first (UID STORE in each folder); a refusal leaves the local copy as it"
        " was. A change of the local flags is announced as `email.updated`."
    ),
    response_model=EmailRead,
    responses=_WRITE_PROBLEMS,
)
def update_email_flags(
    engine: EngineDep,
    settings: SettingsDep,
    secrets: SecretsDep,
    email_id: EmailIdPath,
    update: EmailFlagsUpdate,
) -> EmailRead:
    detail = write_flags(
        engine, settings, secrets, email_id, seen=update.seen, flagged=update.flagged
    )
    return EmailRead.of_detail(detail.email, detail.links, detail.attachments)


@router.get(
    "/emails/{email_id}/raw",
    operation_id="get_email_source",
    dependencies=[RATE_LIMIT, IMAP_SESSION],
    summary="The email's RFC 5322 source, fetched from the server now",
    response_class=Response,
    responses={
        200: {
            "content": {"message/rfc822": {"schema": _BINARY}},
            "description": "The message as the server has it",
        },
        **_FETCH_PROBLEMS,
    },
)
def read_email_source(
    engine: EngineDep, settings: SettingsDep, secrets: SecretsDep, email_id: EmailIdPath
) -> Response:
    source = fetch_message_source(engine, settings, secrets, email_id)
    return StreamingResponse(
        chunks_in_threads(source),
        media_type="message/rfc822",
        headers={"X-Content-Type-Options": "nosniff"},
    )


@router.get(
    "/emails/{email_id}/attachments/{n}",
    operation_id="get_email_attachment",
    dependencies=[RATE_LIMIT, IMAP_SESSION],
    summary="Attachment `n` of the email, decoded, fetched from the server now",
    response_class=Response,
    responses={
        200: {
            "content": {"application/octet-stream": {"schema": _BINARY}},
            "description": "The attachment with its own Content-Type and a download filename",
        },
        **_FETCH_PROBLEMS,
    },
)
def read_email_attachment(
    engine: EngineDep,
    settings: SettingsDep,
    secrets: SecretsDep,
    email_id: EmailIdPath,
    n: Annotated[
        int, Path(ge=0, le=MAX_ROW_ID, description="`n` of the attachment in the email's list.")
    ],
) -> Response:
    attachment = fetch_attachment(engine, settings, secrets, email_id, n)
    media_type = attachment.content_type.lower()
    if not _MIME_TYPE.fullmatch(media_type):
        media_type = "application/octet-stream"
    return StreamingResponse(
        chunks_in_threads(attachment.content),
        media_type=media_type,
        headers={
            "Content-Disposition": content_disposition(attachment.filename),
            "X-Content-Type-Options": "nosniff",
        },
    )


def content_disposition(filename: str | None) -> str:
    """Say "download this" with the filename in RFC 6266 form (RFC 5987 for non-ASCII)."""
    if not filename:
        return "attachment"
    fallback = _FALLBACK_UNSAFE.sub("_", filename)
    encoded = quote(filename, safe=_ATTR_CHARS, encoding="utf-8")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def _require_mailbox(session: Session, mailbox_id: int) -> None:
    if not mailbox_exists(session, mailbox_id):
        raise not_found("mailbox", mailbox_id)


def _as_utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _cursor_of(position: EmailPosition) -> str:
    moment = position.date.isoformat() if position.date is not None else None
    return encode_cursor([moment, position.email_id])


def _position_of_cursor(cursor: str) -> EmailPosition:
    moment, email_id = decode_cursor(cursor, 2)
    try:
        if not isinstance(email_id, int) or not 0 < email_id <= MAX_ROW_ID:
            raise ValueError("not a cursor of this list")
        if not isinstance(moment, str | None):
            raise ValueError("not a cursor of this list")
        date = datetime.fromisoformat(moment) if moment is not None else None
        if date is not None and date.tzinfo is None:
            raise ValueError("not a cursor of this list")
    except ValueError as exc:
        raise bad_cursor() from exc
    return EmailPosition(date, email_id)
