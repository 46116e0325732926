"""Search a folder on the IMAP server: mail the local copy does not hold, or not yet."""

from __future__ import annotations

from app.api.auth import full_key_router
from app.api.deps import IMAP_SESSION, EngineDep, MailboxIdPath, SecretsDep, SettingsDep
from app.api.limits import RATE_LIMIT
from app.api.problems import (
    DATABASE_UNAVAILABLE,
    IMAP_PROBLEMS,
    INVALID_INPUT,
    RATE_LIMITED,
    ProblemDoc,
    missing,
    problem_responses,
)
from app.api.search.schemas import RemoteSearchPage, RemoteSearchRequest
from app.sync import search_remote_folder

router = full_key_router("/v1", "search")


@router.post(
    "/mailboxes/{mailbox_id}/search",
    operation_id="search_remote_folder",
    dependencies=[RATE_LIMIT, IMAP_SESSION],
    summary="Search a folder on the server and return the newest matches",
    description=(
        "Runs UID SEARCH on the server with every criterion given, then fetches the newest"
        " `limit` matches (read-only: nothing is marked seen). `total` counts all matches."
    ),
    response_model=RemoteSearchPage,
    responses=problem_responses(
        missing("mailbox"),
        ProblemDoc(404, "`folder_not_found`: the server has no such folder"),
        INVALID_INPUT,
        ProblemDoc(422, "`auth_failed`: the server refused the mailbox's credentials"),
        RATE_LIMITED,
        *IMAP_PROBLEMS,
        DATABASE_UNAVAILABLE,
    ),
)
def search_remote(
    engine: EngineDep,
    settings: SettingsDep,
    secrets: SecretsDep,
    mailbox_id: MailboxIdPath,
    search: RemoteSearchRequest,
) -> RemoteSearchPage:
    result = search_remote_folder(engine, settings, secrets, mailbox_id, search.criteria())
    return RemoteSearchPage.of(result)
