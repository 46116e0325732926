"""List a mailbox's folders and choose which of them are synced.

`PATCH` saves the flags in a transaction of their own before the folders-only
sync starts (`save_folder_settings`), so an IMAP failure during that sync
cannot undo them: the answer is 200 with the saved folders, and the
`Sync-Status` header says how the folder refresh went.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Response

from app.api.auth import full_key_router
from app.api.deps import DATABASE_ONLY, EngineDep, MailboxIdDep, SessionDep, SettingsDep
from app.api.folders.schemas import FolderRead, FolderSetting
from app.api.limits import RATE_LIMIT
from app.api.problems import (
    RATE_LIMITED,
    ApiError,
    FieldError,
    missing,
    problem_responses,
)
from app.db.repositories.folders import folders_with_email_counts
from app.sync import FolderSyncSetting, SyncResult, UnknownFoldersError, save_folder_settings

router = full_key_router("/v1", "folders")
_NO_SUCH_MAILBOX = problem_responses(missing("mailbox"))

_SYNC_HEADERS = {
    "Sync-Status": {
        "description": (
            "How the folder refresh went: `succeeded`, `failed` (the flags are saved all the"
            " same; see `Sync-Error-Code` and the run) or `skipped` (another sync holds the"
            " mailbox and will see the new flags next time)"
        ),
        "schema": {"type": "string", "enum": ["succeeded", "failed", "skipped"]},
    },
    "Sync-Run-Id": {
        "description": "The folders-only sync run (`GET /v1/sync-runs/{id}`); absent if skipped",
        "schema": {"type": "integer"},
    },
    "Sync-Error-Code": {
        "description": "Why the folder refresh failed (`unreachable`, `auth_failed`...)",
        "schema": {"type": "string"},
    },
}


@router.get(
    "/mailboxes/{mailbox_id}/folders",
    operation_id="list_folders",
    summary="The mailbox's folders: type, parent, sync flag, synced email count",
    response_model=list[FolderRead],
    responses=_NO_SUCH_MAILBOX,
    dependencies=[DATABASE_ONLY],
)
def list_folders(session: SessionDep, mailbox_id: MailboxIdDep) -> list[FolderRead]:
    rows = folders_with_email_counts(session, mailbox_id)
    return [FolderRead.of(folder, count) for folder, count in rows]


@router.patch(
    "/mailboxes/{mailbox_id}/folders",
    operation_id="update_folder_settings",
    summary="Turn the sync of several folders on or off; refreshes the folder list",
    description=(
        "Saves every flag or none (an id that is not a folder of this mailbox is a 422 naming"
        " it), then synchronizes the folder list with the server (no mail; mail of a newly"
        " enabled folder comes with the next sync). Answers with the folders as `GET` does."
    ),
    response_model=list[FolderRead],
    responses={
        200: {"headers": _SYNC_HEADERS},
        **problem_responses(missing("mailbox"), RATE_LIMITED),
    },
    dependencies=[RATE_LIMIT],
)
def update_folder_settings(
    *,
    engine: EngineDep,
    settings: SettingsDep,
    mailbox_id: MailboxIdDep,
    body: Annotated[list[FolderSetting], Body(min_length=1)],
    response: Response,
    session: SessionDep,
) -> list[FolderRead]:
    changes = [FolderSyncSetting(item.id, item.sync_enabled) for item in body]
    try:
        result = save_folder_settings(engine, settings, mailbox_id, changes)
    except UnknownFoldersError as exc:
        raise _unknown_folders(body, exc.folder_ids) from exc
    response.headers.update(_sync_headers(result))
    return list_folders(session, mailbox_id)


def _unknown_folders(body: list[FolderSetting], unknown_ids: list[int]) -> ApiError:
    """Name each body item whose id is not a folder of the mailbox, as `0.id` (its index)."""
    message = "not a folder of this mailbox"
    errors = [
        FieldError(field=f"{index}.id", message=message)
        for index, item in enumerate(body)
        if item.id in unknown_ids
    ]
    detail = "; ".join(f"{error.field}: {message}" for error in errors) + "; nothing was saved"
    return ApiError(422, "validation_error", "The request is invalid", detail, errors=errors)


def _sync_headers(result: SyncResult | None) -> dict[str, str]:
    if result is None:
        return {"Sync-Status": "skipped"}
    headers = {"Sync-Status": result.status.value, "Sync-Run-Id": str(result.run_id)}
    if result.error_code is not None:
        headers["Sync-Error-Code"] = result.error_code
    return headers
