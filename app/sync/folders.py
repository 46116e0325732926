"""Step 3 of a sync: make the local folder list match the server's.

remote only            -> created (inbox and sent enabled for sync, others not)
local only, same UIDVALIDITY as one new remote name
                       -> renamed: keeps its mail and settings (`folder.renamed`)
local only, its stored mail all in one new remote name of its last count
                       -> renamed too (a server that changes UIDVALIDITY on RENAME)
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

from app.db.models import Folder, Mailbox, persisted_id, utcnow
from app.db.repositories.events import record_event
from app.db.repositories.folders import (
    folder_ids_with_links,
    linked_identities,
    mailbox_folders,
)
from app.imap import EmailManager, FolderType
from app.imap.folder_manager import FolderListing, FolderStatus, RemoteFolder
from app.sync.identity import message_identity

ENABLED_BY_DEFAULT = frozenset({FolderType.INBOX, FolderType.SENT})
# The identities of a remote folder's messages, or None when it holds too many to read.
IdentitiesOf = Callable[[str], set[str] | None]
RENAME_EVIDENCE_MAX_MESSAGES = 5000
_FIRST_FOLDERS = (FolderType.INBOX, FolderType.SENT)


def remote_identities(mail: EmailManager, full_name: str) -> set[str] | None:
    """Read the identities of a folder's messages from their headers (EXAMINE, then FETCH)."""
    selected = mail.select_folder(full_name)
    if selected.exists > RENAME_EVIDENCE_MAX_MESSAGES:
        return None
    return {message_identity(message) for message in mail.identities(mail.uids(1))}


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


def folders_to_sync(folders: list[Folder], listing: FolderListing) -> list[Folder]:
    """Enabled folders that exist and can be selected; inbox, then sent, then by name."""
    selectable = {f.full_name for f in listing.folders if f.selectable}
    chosen = [
        f
        for f in folders
        if f.sync_enabled and f.outdated_since is None and f.full_name in selectable
    ]

    def order(folder: Folder) -> tuple[int, str]:
        rank = _FIRST_FOLDERS.index(folder.type) if folder.type in _FIRST_FOLDERS else 2
        return rank, folder.full_name.casefold()

    return sorted(chosen, key=order)


def reconcile_folders(
    session: Session,
    mailbox: Mailbox,
    listing: FolderListing,
    status_of: Callable[[str], FolderStatus],
    identities_of: IdentitiesOf | None = None,
) -> FolderChanges:
    """Apply the server's folder list to the mailbox's folders; events go to the outbox.

    With `identities_of`, a rename that changed UIDVALIDITY is recognised by content.
    """
    mailbox_id = persisted_id(mailbox)
    local = {folder.full_name: folder for folder in mailbox_folders(session, mailbox_id)}
    remote = {folder.full_name: folder for folder in listing.folders}
    gone = [folder for name, folder in local.items() if name not in remote]
    fresh = [folder for name, folder in remote.items() if name not in local]

    renames = _renames(gone, fresh, listing, status_of)
    if identities_of is not None:
        unpaired_gone = [folder for folder in gone if all(folder is not g for g, _ in renames)]
        unpaired_fresh = [remote for remote in fresh if all(remote is not r for _, r in renames)]
        renames += _renames_by_content(
            session,
            unpaired_gone,
            unpaired_fresh,
            listing=listing,
            status_of=status_of,
            identities_of=identities_of,
        )
    for folder, new_remote in renames:
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
        folder_type = remote_folder.type
        folder = Folder(
            mailbox_id=mailbox_id,
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
        "type": remote.type,
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


def _renames_by_content(
    session: Session,
    gone: list[Folder],
    fresh: list[RemoteFolder],
    *,
    listing: FolderListing,
    status_of: Callable[[str], FolderStatus],
    identities_of: IdentitiesOf,
) -> list[tuple[Folder, RemoteFolder]]:
    """Pair vanished folders with new names that hold exactly their mail.

    Courier gives a renamed folder (and each subfolder) a new UIDVALIDITY, so nothing
    in the protocol ties the new name to the old. A new name whose message count is
    the vanished folder's last count and whose messages carry the identity of every
    message stored from it is that folder renamed: it keeps its row and settings, and
    its sync sees the new UIDVALIDITY and relinks the mail by identity (`folder.reset`),
    downloading nothing again. A pairing either side could make twice is not made.
    """
    counts: dict[str, int] = {}
    for remote in fresh:
        if remote.selectable:
            status = listing.statuses.get(remote.full_name) or status_of(remote.full_name)
            counts[remote.full_name] = status.messages
    contents: dict[str, set[str] | None] = {}
    matches: list[tuple[Folder, RemoteFolder]] = []
    for folder in gone:
        if folder.uidvalidity is None or folder.id is None:
            continue
        stored = linked_identities(session, folder.id)
        if not stored:
            continue  # nothing to recognise it by
        for remote in fresh:
            if counts.get(remote.full_name) != folder.message_count:
                continue
            if remote.full_name not in contents:
                contents[remote.full_name] = identities_of(remote.full_name)
            held = contents[remote.full_name]
            if held is not None and stored <= held:
                matches.append((folder, remote))
    return [
        (folder, remote)
        for folder, remote in matches
        if sum(f is folder for f, _ in matches) == 1 and sum(r is remote for _, r in matches) == 1
    ]


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
