"""Folder shapes of the API (FolderRead, FolderSettings), as openapi/openapi.json publishes them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.api.request_models import RequestModel, WholeNumber
from app.db.models import Folder, column_values
from app.imap import FolderType


class FolderRead(BaseModel):
    """A folder of a mailbox; `parent_id` links the tree together."""

    id: int
    full_name: str = Field(description="The name on the server, every hierarchy level included.")
    name: str = Field(description="The last hierarchy level, for display.")
    parent_id: int | None = Field(description="The folder one level up; null at the top.")
    delimiter: str | None = Field(description="Hierarchy delimiter of the server, e.g. `/`.")
    type: FolderType = Field(description="Role from SPECIAL-USE flags (RFC 6154) or the name.")
    sync_enabled: bool = Field(description="Whether the sync copies this folder's mail.")
    outdated: bool = Field(
        description="Gone from the server; kept because it still holds synced mail."
    )
    message_count: int = Field(
        description=(
            "Emails of the local copy linked to this folder: what the sync stored from it, "
            "not the server's count (a folder never synced counts 0)."
        )
    )
    synced_at: datetime | None = Field(description="End of this folder's last complete sync.")

    @classmethod
    def of(cls, folder: Folder, message_count: int) -> FolderRead:
        """Read the row's columns by name, and add what is computed from them."""
        computed = {"outdated": folder.outdated_since is not None, "message_count": message_count}
        return cls.model_validate({**column_values(folder, cls), **computed})


class FolderSetting(RequestModel):
    """One item of the PATCH body: turn the sync of folder `id` on or off."""

    id: WholeNumber = Field(description="A folder id of this mailbox, from the folder list.")
    sync_enabled: bool
