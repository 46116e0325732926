"""Routes of the OAuth providers, the popup flow, completion, get-token and check-connection.

`/v1/oauth/...` needs an API key like every `/v1` route. The callback page and
the JS module are public: a browser loads them, and neither holds a secret.
Completion is the default end of a flow (the mailbox is created, no token
leaves the service); get-token is for a CRM that keeps the tokens itself.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.api.auth import full_key_router
from app.api.connection.schemas import ConnectionCheckResult, PreviewFlag
from app.api.deps import (
    DATABASE_ONLY,
    IMAP_SESSION,
    RegistryDep,
    SecretsDep,
    SessionDep,
    SettingsDep,
)
from app.api.limits import RATE_LIMIT
from app.api.mailboxes.schemas import MailboxRead
from app.api.oauth.schemas import (
    AuthorizeRequest,
    AuthorizeResponse,
    CompletionRequest,
    OAuthConnectionCheck,
    ProviderImap,
    ProviderRead,
    ProviderSettingsUpdate,
    TokenDataRead,
    TokenRequest,
)
from app.api.problems import (
    DATABASE_UNAVAILABLE,
    INVALID_INPUT,
    LOGIN_PROBLEMS,
    RATE_LIMITED,
    ProblemDoc,
    missing,
    problem_responses,
)
from app.api.queue_connection import queue_sync_after_commit
from app.api.request_models import NO_NUL_PATTERN
from app.config import Settings
from app.oauth.popup import callback_page, js_module
from app.oauth.service import (
    callback_target,
    configure_provider,
    finish_flow,
    list_providers,
    start_flow,
)
from app.sync import (
    Credential,
    check_connection,
    complete_oauth_mailbox,
    interactive_login_options,
    new_mailbox_window_start,
)

router = full_key_router("/v1/oauth", "oauth")
public_router = APIRouter(tags=["oauth"])


_NO_PROVIDER = missing("provider")
_DISABLED = ProblemDoc(409, "`provider_disabled`: not configured or not enabled")
_PROVIDER_DOWN = ProblemDoc(502, "`provider_unavailable` or an unexpected answer")
_STATE_REFUSED = ProblemDoc(
    400, "`invalid_state`, `state_expired`, `state_used` or `invalid_grant`"
)
_CALLBACK_REFUSED = {
    "description": "A page telling the opener the sign-in failed: the `state` is not one"
    " this service issued, so the page posts to no origin",
    "content": {"text/html": {"schema": {"type": "string"}}},
}


def redirect_uri(settings: Settings, request: Request, provider: str) -> str:
    """The callback URL registered at the provider: the public base URL, else this request's."""
    base = settings.public_base_url or str(request.base_url)
    return f"{base.rstrip('/')}/oauth/{provider}/callback"


def allowed_origins(settings: Settings, request: Request) -> list[str]:
    """Opener origins a flow may be bound to: OAUTH_ALLOWED_ORIGINS, else this service's own.

    Unset fails closed: a CRM page on another origin needs the operator to list it.
    """
    if settings.oauth_allowed_origins:
        return settings.oauth_allowed_origins
    own = urlsplit(settings.public_base_url or str(request.base_url))
    return [f"{own.scheme}://{own.netloc.lower()}"]


@router.get(
    "/providers",
    operation_id="list_oauth_providers",
    summary="List the OAuth providers and their settings (never the client secret)",
    response_model=list[ProviderRead],
    dependencies=[DATABASE_ONLY],
)
def get_providers(
    session: SessionDep, settings: SettingsDep, registry: RegistryDep, request: Request
) -> list[ProviderRead]:
    return [
        ProviderRead.from_state(state, redirect_uri(settings, request, state.provider.name))
        for state in list_providers(session, registry)
    ]


@router.put(
    "/providers/{name}",
    operation_id="configure_oauth_provider",
    summary="Set a provider's client id, secret and tenant; enabling checks them first",
    response_model=ProviderRead,
    responses=problem_responses(
        _NO_PROVIDER,
        INVALID_INPUT,
        ProblemDoc(422, "`invalid_client`: the provider refused the client id or secret"),
        _PROVIDER_DOWN,
        RATE_LIMITED,
    ),
    dependencies=[RATE_LIMIT],
)
def put_provider(
    *,
    name: str,
    body: ProviderSettingsUpdate,
    session: SessionDep,
    settings: SettingsDep,
    secrets: SecretsDep,
    registry: RegistryDep,
    request: Request,
) -> ProviderRead:
    callback = redirect_uri(settings, request, name)
    state = configure_provider(
        session,
        secrets,
        registry,
        name,
        update=body.to_update(),
        redirect_uri=callback,
        allow_private_hosts=settings.oauth_allow_private_hosts,
    )
    return ProviderRead.from_state(state, callback)


@router.post(
    "/{provider}/authorize",
    operation_id="start_oauth_flow",
    summary="Start the popup flow: the authorization URL (PKCE, state bound to the origin)",
    response_model=AuthorizeResponse,
    responses=problem_responses(
        _NO_PROVIDER,
        _DISABLED,
        INVALID_INPUT,
        ProblemDoc(422, "`origin_not_allowed`: the origin is not in OAUTH_ALLOWED_ORIGINS"),
    ),
)
def authorize(
    *,
    provider: str,
    body: AuthorizeRequest,
    session: SessionDep,
    settings: SettingsDep,
    secrets: SecretsDep,
    registry: RegistryDep,
    request: Request,
) -> AuthorizeResponse:
    url, state = start_flow(
        session,
        secrets,
        registry,
        provider,
        origin=body.origin,
        allowed_origins=allowed_origins(settings, request),
        login_hint=body.login_hint,
        redirect_uri=redirect_uri(settings, request, provider),
        ttl_seconds=settings.oauth_state_ttl_seconds,
    )
    return AuthorizeResponse(authorization_url=url, state=state)


@router.post(
    "/{provider}/complete",
    operation_id="complete_oauth_flow",
    dependencies=[RATE_LIMIT, IMAP_SESSION],
    summary="Finish the popup flow: exchange the code and register the account as a mailbox",
    description=(
        "The service exchanges the code, logs in to the provider's IMAP server as the address"
        " the provider names, and registers the mailbox as `POST /v1/mailboxes` does. No token"
        " is returned. An address the owner already has is a 409: completion never updates an"
        " existing mailbox."
    ),
    status_code=201,
    response_model=MailboxRead,
    responses=problem_responses(
        _STATE_REFUSED,
        _NO_PROVIDER,
        _DISABLED,
        ProblemDoc(409, "`mailbox_exists`: the owner has a mailbox of this address"),
        INVALID_INPUT,
        *LOGIN_PROBLEMS,
        RATE_LIMITED,
        _PROVIDER_DOWN,
        DATABASE_UNAVAILABLE,
    ),
)
def complete_flow(
    *,
    provider: str,
    body: CompletionRequest,
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
    secrets: SecretsDep,
    registry: RegistryDep,
) -> MailboxRead:
    mailbox = complete_oauth_mailbox(
        session,
        secrets,
        interactive_login_options(settings),
        registry,
        provider,
        code=body.code,
        state=body.state,
        owner=body.owner.to_owner() if body.owner else None,
        sync_start=body.sync_start,
        allow_private_hosts=settings.oauth_allow_private_hosts,
    )
    queue_sync_after_commit(request, background, mailbox)
    return MailboxRead.from_mailbox(mailbox)


@router.post(
    "/{provider}/token",
    operation_id="get_oauth_token",
    summary="Exchange the popup's code and state for tokens and the account's address",
    description=(
        "For a CRM that stores the tokens itself: the one answer of this API that carries"
        " secrets. `POST /v1/oauth/{provider}/complete` registers the mailbox without any"
        " token leaving the service."
    ),
    response_model=TokenDataRead,
    responses=problem_responses(
        _STATE_REFUSED, _NO_PROVIDER, _DISABLED, _PROVIDER_DOWN, RATE_LIMITED
    ),
    dependencies=[RATE_LIMIT],
)
def get_token(
    *,
    provider: str,
    body: TokenRequest,
    session: SessionDep,
    settings: SettingsDep,
    secrets: SecretsDep,
    registry: RegistryDep,
) -> TokenDataRead:
    data = finish_flow(
        session,
        secrets,
        registry,
        provider,
        code=body.code,
        state=body.state,
        allow_private_hosts=settings.oauth_allow_private_hosts,
    )
    return TokenDataRead.from_data(data)


@router.post(
    "/{provider}/check-connection",
    operation_id="check_oauth_connection",
    dependencies=[RATE_LIMIT, IMAP_SESSION],
    summary="Log in over XOAUTH2 with an access token; the folders and a sync's cost",
    response_model=ConnectionCheckResult,
    responses=problem_responses(
        _NO_PROVIDER, INVALID_INPUT, *LOGIN_PROBLEMS, RATE_LIMITED, DATABASE_UNAVAILABLE
    ),
)
def check_oauth_connection(
    provider: str,
    body: OAuthConnectionCheck,
    settings: SettingsDep,
    registry: RegistryDep,
    preview: PreviewFlag = True,
) -> ConnectionCheckResult:
    known = registry.get(provider)
    server = body.to_server(ProviderImap(host=known.imap_host, port=known.imap_port))
    credential = Credential(access_token=body.access_token, provider=provider)
    report = check_connection(
        server,
        credential,
        interactive_login_options(settings),
        preview_since=new_mailbox_window_start(settings) if preview else None,
    )
    return ConnectionCheckResult.from_report(report)


@public_router.get(
    "/oauth/{provider}/callback",
    operation_id="oauth_callback_page",
    summary="Popup redirect target: posts the code (or the error) to the opener and closes",
    response_class=HTMLResponse,
    responses={400: _CALLBACK_REFUSED, **problem_responses(DATABASE_UNAVAILABLE)},
)
def oauth_callback(
    *,
    provider: str,
    session: SessionDep,
    state: Annotated[str, Query(max_length=64, pattern=NO_NUL_PATTERN)] = "",
    code: Annotated[str | None, Query(max_length=4096)] = None,
    error: Annotated[str | None, Query(max_length=100)] = None,
    error_description: Annotated[str | None, Query(max_length=500)] = None,
) -> HTMLResponse:
    target = callback_target(session, provider, state)
    message = {"provider": provider, "state": state}
    if target is not None and target.error is not None:
        message |= {"error": target.error, "error_description": "start the sign-in again"}
    elif error is not None or code is None:
        message |= {
            "error": error or "invalid_request",
            "error_description": error_description or "the provider sent no code",
        }
    else:
        message["code"] = code
    page = callback_page(target.origin if target else None, message)
    return HTMLResponse(
        page.html,
        status_code=200 if target is not None else 400,
        headers={
            "Content-Security-Policy": page.content_security_policy,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


@public_router.get(
    "/static/imap-bridge-oauth.js",
    operation_id="oauth_js_module",
    summary="The ES module a CRM page imports to run the OAuth popup flow",
    response_class=Response,
)
def oauth_js() -> Response:
    return Response(
        js_module(),
        media_type="text/javascript",
        headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "public, max-age=300"},
    )
