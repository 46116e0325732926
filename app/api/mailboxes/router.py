"""Routes of `/v1/mailboxes`: parse, call one service or repository function, answer.

Registering a mailbox or giving it new credentials queues its sync after the
transaction commits (`app.api.queue_connection.queue_sync_after_commit`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import BackgroundTasks, Depends, Query, Request, Response

from app.api.auth import full_key_router
from app.api.deps import (
    DATABASE_ONLY,
    IMAP_SESSION,
    MailboxIdPath,
    RegistryDep,
    SecretsDep,
    SessionDep,
    SettingsDep,
)
from app.api.limits import RATE_LIMIT
from app.api.mailboxes.schemas import MailboxCreate, MailboxRead, MailboxUpdate
from app.api.oauth.router import allowed_origins, redirect_uri
from app.api.oauth.schemas import AuthorizeResponse, ReauthorizeRequest, TokenRequest
from app.api.pagination import CursorQuery, LimitQuery, Page, decode_id_cursor, id_page
from app.api.problems import (
    DATABASE_UNAVAILABLE,
    INVALID_INPUT,
    LOGIN_PROBLEMS,
    RATE_LIMITED,
    ProblemDoc,
    missing,
    not_found,
    problem_responses,
)
from app.api.queue_connection import queue_sync_after_commit
from app.api.request_models import USER_ID_PATTERN
from app.db.models import Mailbox, MailboxStatus
from app.db.repositories.mailboxes import get_mailbox, list_mailboxes
from app.sync import (
    change_mailbox,
    complete_reconnect,
    interactive_login_options,
    register_mailbox,
    remove_mailbox,
    start_reconnect,
)

router = full_key_router("/v1/mailboxes", "mailboxes")

_NO_SUCH_MAILBOX = missing("mailbox")
_ADDRESS_TAKEN = ProblemDoc(409, "`mailbox_exists`: the owner has a mailbox of this address")
_SERVER_MOVED = ProblemDoc(
    422,
    "`credentials_required`: a new host, port, security, username or tls_verify came without"
    " `auth`; `provider_host_required`: an OAuth mailbox left its provider's IMAP host",
)
# Saving IMAP settings or credentials logs in with them first.
_LOGIN = (INVALID_INPUT, *LOGIN_PROBLEMS, DATABASE_UNAVAILABLE)


def mailbox_of_path(session: SessionDep, mailbox_id: MailboxIdPath) -> Mailbox:
    """Resolve `{mailbox_id}` to the mailbox, else 404."""
    mailbox = get_mailbox(session, mailbox_id)
    if mailbox is None:
        raise not_found("mailbox", mailbox_id)
    return mailbox


MailboxDep = Annotated[Mailbox, Depends(mailbox_of_path)]


@router.post(
    "",
    operation_id="create_mailbox",
    dependencies=[RATE_LIMIT, IMAP_SESSION],
    summary="Register a mailbox: verify the login, discover its folders, queue its first sync",
    status_code=201,
    response_model=MailboxRead,
    responses=problem_responses(*_LOGIN, _ADDRESS_TAKEN, RATE_LIMITED),
)
def create_mailbox(
    *,
    body: MailboxCreate,
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
    secrets: SecretsDep,
) -> MailboxRead:
    mailbox = register_mailbox(
        session, secrets, interactive_login_options(settings), body.to_registration()
    )
    queue_sync_after_commit(request, background, mailbox)
    return MailboxRead.from_mailbox(mailbox)


@router.get(
    "",
    operation_id="list_mailboxes",
    summary="List mailboxes, optionally of one owner or in one status",
    response_model=Page[MailboxRead],
    dependencies=[DATABASE_ONLY],
)
def list_mailbox_page(
    session: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    owner: Annotated[
        str | None,
        Query(min_length=1, max_length=255, pattern=USER_ID_PATTERN, description="A CRM user id."),
    ] = None,
    status: MailboxStatus | None = None,
) -> Page[MailboxRead]:
    mailboxes = list_mailboxes(
        session,
        after_id=decode_id_cursor(cursor),
        limit=limit + 1,
        owner_user_id=owner,
        status=status,
    )
    return id_page(mailboxes, limit, MailboxRead.from_mailbox)


@router.get(
    "/{mailbox_id}",
    operation_id="get_mailbox",
    summary="Read one mailbox and where its synchronization stands",
    response_model=MailboxRead,
    responses=problem_responses(_NO_SUCH_MAILBOX),
    dependencies=[DATABASE_ONLY],
)
def read_mailbox(mailbox: MailboxDep) -> MailboxRead:
    return MailboxRead.from_mailbox(mailbox)


@router.patch(
    "/{mailbox_id}",
    operation_id="update_mailbox",
    dependencies=[RATE_LIMIT, IMAP_SESSION],
    summary="Change settings, credentials, owner, sync start or status",
    description=(
        "New IMAP settings or credentials must log in before they are saved; they then clear"
        " `auth_failed` and make the mailbox due for a sync at once. Changing the host, port,"
        " security, username or tls_verify needs `auth` in the same request: the stored"
        " credentials never follow the mailbox to another server."
    ),
    response_model=MailboxRead,
    responses=problem_responses(
        *_LOGIN, _SERVER_MOVED, _NO_SUCH_MAILBOX, _ADDRESS_TAKEN, RATE_LIMITED
    ),
)
def update_mailbox(
    *,
    mailbox: MailboxDep,
    body: MailboxUpdate,
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
    secrets: SecretsDep,
) -> MailboxRead:
    changed = change_mailbox(
        session, secrets, interactive_login_options(settings), mailbox, body.to_changes()
    )
    if changed.due_now:
        queue_sync_after_commit(request, background, changed.mailbox)
    return MailboxRead.from_mailbox(changed.mailbox)


@router.delete(
    "/{mailbox_id}",
    operation_id="delete_mailbox",
    summary="Delete a mailbox with its folders and local mail",
    status_code=204,
    response_class=Response,
    responses=problem_responses(_NO_SUCH_MAILBOX),
    dependencies=[DATABASE_ONLY],
)
def delete_mailbox(mailbox: MailboxDep, session: SessionDep) -> None:
    remove_mailbox(session, mailbox)


@router.post(
    "/{mailbox_id}/reauthorize",
    operation_id="start_mailbox_reauthorization",
    summary="Start a popup flow that reconnects this OAuth mailbox (login hint: its address)",
    description=(
        "Open `authorization_url` in a popup from the page at `origin`; the callback page"
        " posts the code and state back to it. `POST /v1/mailboxes/{id}/reauthorize/complete`"
        " finishes the flow: the new tokens stay inside the service."
    ),
    response_model=AuthorizeResponse,
    responses=problem_responses(
        INVALID_INPUT,
        _NO_SUCH_MAILBOX,
        ProblemDoc(409, "`not_oauth_mailbox`, or `provider_disabled`"),
        ProblemDoc(422, "`origin_not_allowed`: the origin is not in OAUTH_ALLOWED_ORIGINS"),
    ),
)
def start_reauthorization(
    *,
    mailbox: MailboxDep,
    body: ReauthorizeRequest,
    session: SessionDep,
    settings: SettingsDep,
    secrets: SecretsDep,
    registry: RegistryDep,
    request: Request,
) -> AuthorizeResponse:
    provider = mailbox.provider or ""
    url, state = start_reconnect(
        session,
        secrets,
        registry,
        mailbox,
        origin=body.origin,
        allowed_origins=allowed_origins(settings, request),
        redirect_uri=redirect_uri(settings, request, provider),
        ttl_seconds=settings.oauth_state_ttl_seconds,
    )
    return AuthorizeResponse(authorization_url=url, state=state)


@router.post(
    "/{mailbox_id}/reauthorize/complete",
    operation_id="complete_mailbox_reauthorization",
    dependencies=[RATE_LIMIT, IMAP_SESSION],
    summary="Finish the reconnect popup: new tokens stored, `auth_failed` cleared, no token out",
    description=(
        "The service exchanges the code, checks the provider signed in the mailbox's own"
        " account, logs in with the new token and stores it. A mailbox that was `auth_failed`"
        " becomes `active` (`mailbox.credentials_restored`) and is synced at once."
    ),
    response_model=MailboxRead,
    responses=problem_responses(
        ProblemDoc(400, "`invalid_state`, `state_expired`, `state_used` or `invalid_grant`"),
        _NO_SUCH_MAILBOX,
        ProblemDoc(409, "`account_mismatch`: another account signed in; `not_oauth_mailbox`"),
        *_LOGIN,
        RATE_LIMITED,
        ProblemDoc(502, "`provider_unavailable` or an unexpected answer"),
    ),
)
def complete_reauthorization(
    *,
    mailbox: MailboxDep,
    body: TokenRequest,
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
    secrets: SecretsDep,
    registry: RegistryDep,
) -> MailboxRead:
    changed = complete_reconnect(
        session,
        secrets,
        interactive_login_options(settings),
        registry,
        mailbox,
        code=body.code,
        state=body.state,
        allow_private_hosts=settings.oauth_allow_private_hosts,
    )
    if changed.due_now:
        queue_sync_after_commit(request, background, changed.mailbox)
    return MailboxRead.from_mailbox(changed.mailbox)
