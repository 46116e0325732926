"""Step 3 of a sync: make the local folder list match the server's.

remote only            -> created (inbox and sent enabled for sync, others not)
local only, same UIDVALIDITY as one new remote name
                       -> renamed: keeps its mail and settings (`folder.renamed`)
local only, no mail    -> deleted (`folder.deleted`)
local only, with mail  -> kept, marked outdated (`folder.deleted`, kept=true)
both                   -> name, delimiter and type refreshed; outdated mark cleared

A listing that matches the stored folders (`is_reconciled`) changes nothing, so a
sync compares first and opens a write transaction only when something differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from app.db.models import Folder, FolderType, Mailbox, utcnow
from app.db.repositories.events import record_event
from app.db.repositories.folders import folder_ids_with_links, mailbox_folders
from app.imap.folder_manager import FolderListing, FolderStatus, RemoteFolder

ENABLED_BY_DEFAULT = frozenset({FolderType.INBOX, FolderType.SENT})


@dataclass(frozen=True, slots=True)
class FolderChanges:
    """How many folders the server added and removed since the last sync, and those it lists."""

    added: int
    removed: int
    listed: list[Folder]  # the stored folders of the listing's names, after reconciliation


def is_reconciled(folders: list[Folder], listing: FolderListing) -> bool:
    """Say whether `reconcile_folders` would leave `folders` (all of a mailbox's) as they are."""
    local = {folder.full_name: folder for folder in folders}
    if local.keys() != {remote.full_name for remote in listing.folders}:
        return False
    for remote in listing.folders:
        folder = local[remote.full_name]
        parent = local.get(remote.parent) if remote.parent else None
        if folder.parent_id != (parent.id if parent else None):
            return False
        if any(getattr(folder, name) != value for name, value in _listed_values(remote).items()):
            return False
    return True


def reconcile_folders(
    session: Session,
    mailbox: Mailbox,
    listing: FolderListing,
    status_of: Callable[[str], FolderStatus],
) -> FolderChanges:
    """Apply the server's folder list to the mailbox's folders; events go to the outbox."""
    assert mailbox.id is not None
    local = {folder.full_name: folder for folder in mailbox_folders(session, mailbox.id)}
    remote = {folder.full_name: folder for folder in listing.folders}
    gone = [folder for name, folder in local.items() if name not in remote]
    fresh = [folder for name, folder in remote.items() if name not in local]

    for folder, new_remote in _renames(gone, fresh, listing, status_of):
        record_event(
            session,
            "folder.renamed",
            mailbox,
            {
                "folder_id": folder.id,
                "old_name": folder.full_name,
                "new_name": new_remote.full_name,
            },
        )
        _refresh(folder, new_remote)
        gone.remove(folder)
        fresh.remove(new_remote)
        local[new_remote.full_name] = folder

    removed = _remove_gone(session, mailbox, gone)
    for remote_folder in fresh:
        folder_type = FolderType(remote_folder.type)
        folder = Folder(
            mailbox_id=mailbox.id,
            full_name=remote_folder.full_name,
            name=remote_folder.name,
            type=folder_type,
            sync_enabled=remote_folder.selectable and folder_type in ENABLED_BY_DEFAULT,
        )
        session.add(folder)
        local[remote_folder.full_name] = folder
    for name, remote_folder in remote.items():
        _refresh(local[name], remote_folder)
    session.flush()
    for name, remote_folder in remote.items():
        parent = local.get(remote_folder.parent) if remote_folder.parent else None
        local[name].parent_id = parent.id if parent else None
    listed = [local[name] for name in remote]
    return FolderChanges(added=len(fresh), removed=removed, listed=listed)


def _listed_values(remote: RemoteFolder) -> dict[str, Any]:
    """The columns a folder takes from its LIST entry (the parent aside)."""
    return {
        "full_name": remote.full_name,
        "name": remote.name,
        "delimiter": remote.delimiter,
        "type": FolderType(remote.type),
        "outdated_since": None,
    }


def _refresh(folder: Folder, remote: RemoteFolder) -> None:
    for name, value in _listed_values(remote).items():
        setattr(folder, name, value)


def _renames(
    gone: list[Folder],
    fresh: list[RemoteFolder],
    listing: FolderListing,
    status_of: Callable[[str], FolderStatus],
) -> list[tuple[Folder, RemoteFolder]]:
    """Pair vanished folders with new names that carry the same UIDVALIDITY (RFC 3501 2.3.1.1).

    UIDVALIDITY need not differ between folders: Cyrus derives it from the clock, so a
    folder and its subfolder created in the same second share one, and renaming the
    parent moves both. Where several new names carry a vanished folder's UIDVALIDITY,
    or several vanished folders carry one UIDVALIDITY, only equal leaf names pair; a
    folder paired takes its new name out of the running, which may settle its
    parent's pairing in the next round. What stays ambiguous is not paired (kept as
    vanished, never guessed): pairing the wrong folder would give its UIDs to mail
    they do not name.
    """
    unpaired = [folder for folder in gone if folder.uidvalidity is not None]
    if not unpaired:
        return []
    by_validity: dict[int, list[RemoteFolder]] = {}
    for remote in fresh:
        if remote.selectable:
            status = listing.statuses.get(remote.full_name) or status_of(remote.full_name)
            by_validity.setdefault(status.uidvalidity, []).append(remote)
    pairs: list[tuple[Folder, RemoteFolder]] = []
    paired = True
    while paired:
        paired = False
        for folder in list(unpaired):
            matches = by_validity.get(folder.uidvalidity or 0, [])
            rivals = [other for other in unpaired if other.uidvalidity == folder.uidvalidity]
            if len(matches) > 1 or len(rivals) > 1:
                matches = [remote for remote in matches if remote.name == folder.name]
                rivals = [other for other in rivals if other.name == folder.name]
            if len(matches) == 1 and len(rivals) == 1:
                pairs.append((folder, matches[0]))
                by_validity[folder.uidvalidity or 0].remove(matches[0])
                unpaired.remove(folder)
                paired = True
    return pairs


def _remove_gone(session: Session, mailbox: Mailbox, gone: list[Folder]) -> int:
    """Delete vanished folders without mail; keep the others, marked outdated."""
    with_mail = folder_ids_with_links(session, [f.id for f in gone if f.id is not None])
    removed = 0
    for folder in gone:
        kept = folder.id in with_mail
        if kept and folder.outdated_since is not None:
            continue  # already reported when it vanished
        removed += 1
        record_event(
            session,
            "folder.deleted",
            mailbox,
            {"folder_id": folder.id, "full_name": folder.full_name, "kept": kept},
        )
        if kept:
            folder.outdated_since = utcnow()
        else:
            session.delete(folder)
    return removed
