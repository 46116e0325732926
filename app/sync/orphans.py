"""Which emails left in no folder a run may delete (`email.deleted`), and when it must wait.

An email whose last link a run removed may have moved into a folder the run
had already passed: deleting it would announce `email.deleted` for mail that
still exists. A run deletes such orphans only when no folder got new UIDs
since it looked at it (STATUS, one per folder); otherwise the next run
relinks them or deletes them.
"""

from __future__ import annotations

from app.db.models import Folder
from app.imap import EmailManager, FolderManager, ImapConnection
from app.imap.errors import ImapError
from app.sync.folder_sync import FolderSyncer


def orphans_after_complete_run(
    syncer: FolderSyncer, connection: ImapConnection, *, orphans_before: set[int], marked: bool
) -> set[int] | None:
    """Choose the orphans a complete run deletes (None: every one, clearing the mark).

    A run that removed no link has at most the orphans it began with (fewer if it
    relinked some): none when the mailbox was not marked `orphans_possible`
    (`marked`), and then deleting them costs no query. When a message this run saw
    leave a folder may have moved into one it had already passed (a folder grew
    since), only those orphaned before the run go, the mark stays, and the next run
    relinks the rest or deletes them.
    """
    if syncer.unlinked and _any_folder_grew(connection, syncer.mail, syncer.seen_uidnext):
        return orphans_before
    if syncer.unlinked or marked:
        return None
    return set()


def orphans_after_folders_run(
    syncer: FolderSyncer, connection: ImapConnection, enabled: list[Folder]
) -> set[int] | None:
    """Choose the orphans a run of some folders deletes: all, or none (the watcher's runs).

    Mail it saw leave a folder is gone from the server when no enabled folder got a
    new UID since it was synced (this run's SELECT, else the folder's checkpoint):
    it cannot have moved. Then `email.deleted` goes out in seconds rather than at the
    next complete run; otherwise that run decides.
    """
    if not syncer.unlinked:
        return set()
    expected = {
        folder.full_name: syncer.seen_uidnext.get(folder.full_name, folder.uidnext)
        for folder in enabled
    }
    return set() if _any_folder_grew(connection, syncer.mail, expected) else None


def _any_folder_grew(
    connection: ImapConnection, mail: EmailManager, seen_uidnext: dict[str, int | None]
) -> bool:
    """Say whether a folder got new UIDs since the run looked at it (STATUS; one per folder).

    The folder the run left selected is left first: STATUS of it may be stale.
    """
    try:
        mail.unselect_folder()
    except ImapError:  # it may still be selected: its STATUS proves nothing
        return True
    folders = FolderManager(connection)
    for full_name, seen in seen_uidnext.items():
        try:
            now = folders.status(full_name).uidnext
        except ImapError:  # renamed or deleted meanwhile: it may hold anything
            return True
        if seen is None or now != seen:
            return True
    return False
