"""The sync scenarios that matter, on every server of the rig: Dovecot (with CONDSTORE,
QRESYNC, SPECIAL-USE), the legacy Dovecot (none of them, no UNSELECT), Cyrus 3.6 and
Courier-IMAP 5.0. After every step the database equals the server message by message:
the same (folder, UID) places, the same Message-IDs, the same system flags.

What differs between them, and is exercised here: the separator (`/` on Dovecot and
Cyrus, `.` on Courier), the `INBOX.` namespace prefix (Courier), Sent found by its
SPECIAL-USE flag (Dovecot), by a lower-case `\\sent` (Cyrus) or by its name alone
(Courier's `INBOX.Sent`), capabilities that change at login (Cyrus), MOVE that is a COPY
and an EXPUNGE (Courier), and UIDNEXT missing from SELECT (Courier).

Cyrus, Courier and the legacy Dovecot run on SQLite only, to keep the matrix short.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.sync.service import sync_mailbox
from tests.support.factories import MailboxFactory
from tests.support.server_matrix import (
    NOW,
    OLD,
    RECENT,
    MatrixServer,
    Mirror,
    append,
    enable_sync,
    matrix_server,
)
from tests.support.snapshot import events_of, folder_row

MATRIX = pytest.mark.parametrize(
    ("server_name", "databases"),
    [
        ("dovecot", "sqlite"),
        ("dovecot", "postgresql"),
        ("legacy_dovecot", "sqlite"),
        ("cyrus", "sqlite"),
        ("courier", "sqlite"),
    ],
    indirect=["databases"],
)


@pytest.fixture
def server(server_name: str, request: pytest.FixtureRequest) -> MatrixServer:
    return matrix_server(server_name, request)


@MATRIX
def test_every_step_leaves_the_database_equal_to_the_server(
    engine: Engine, settings: Settings, server: MatrixServer, add_mailbox: MailboxFactory
) -> None:
    user = server.add_user()
    projects, subfolder = server.folder("Projects"), server.folder("Projects", "2026")
    user.create_folder(projects)
    user.create_folder(subfolder)
    # Old and new mail interleaved by UID, the old mail holding the highest UIDs.
    new_a, _ = append(user, "INBOX", "new a", RECENT, ("\\Seen",))
    _, old_1 = append(user, "INBOX", "old 1", OLD)
    new_b, _ = append(user, "INBOX", "new b", RECENT + timedelta(days=1), ("\\Seen",))
    _, old_2 = append(user, "INBOX", "old 2", OLD - timedelta(days=3))
    append(user, server.sent, "sent", RECENT)
    plan, _ = append(user, projects, "plan", RECENT)
    append(user, subfolder, "draft plan", RECENT, ("\\Draft",))
    mailbox_id = add_mailbox(user, **server.connection)
    sync_mailbox(engine, mailbox_id, settings, folders_only=True)
    enable_sync(engine, mailbox_id, [projects, subfolder])
    mirror = Mirror(engine, settings, mailbox_id, user, ["INBOX", server.sent, projects, subfolder])
    mirror.outside_window = {old_1, old_2}

    first = mirror.sync("the first sync")
    assert first.counts.new == 5, "the in-window mail of INBOX, Sent and Projects"
    assert mirror.announced() == [], "a first sync announces nothing"
    inbox = folder_row(engine, mailbox_id, "INBOX")
    sent = folder_row(engine, mailbox_id, server.sent)
    assert inbox is not None and sent is not None
    assert sent.sync_enabled, f"{server.sent} is the Sent folder of {server.name}"
    assert (inbox.highestmodseq is not None) == server.condstore, (
        "CONDSTORE is used exactly where the server offers it after login"
    )

    # New mail, whatever its date, is stored and announced; the old mail never is.
    _, arrived = append(user, "INBOX", "arrived", NOW)
    _, arrived_old = append(user, "INBOX", "imported", OLD)
    result = mirror.sync("new mail")
    assert result.counts.new == 2
    assert mirror.announced() == [arrived, arrived_old]

    user.add_flags("INBOX", [new_a], ["\\Flagged"])
    user.remove_flags("INBOX", [new_b], ["\\Seen"])
    user.add_flags(projects, [plan], ["\\Answered", "\\Seen"])
    assert mirror.sync("flag changes").counts.flags_changed == 3

    user.expunge("INBOX", [new_b])
    assert mirror.sync("an expunge").counts.expunged == 1

    [moved] = user.move("INBOX", [new_a], server.sent)
    result = mirror.sync("a move to Sent")
    assert result.counts.new == 0, "a moved message is linked, not downloaded again"
    assert moved in user.uids(server.sent)

    user.expunge(server.sent, user.uids(server.sent))
    assert mirror.sync("Sent emptied").counts.expunged == 2
    _, replied = append(user, server.sent, "reply", NOW)
    assert mirror.sync("mail in the emptied Sent").counts.new == 1
    assert mirror.announced()[-1] == replied

    unchanged = mirror.sync("a sync with nothing changed")
    assert (unchanged.counts.new, unchanged.counts.flags_changed, unchanged.counts.expunged) == (
        0,
        0,
        0,
    )

    clients, clients_sub = server.folder("Clients"), server.folder("Clients", "2026")
    user.rename_folder(projects, clients)
    mirror.folders = ["INBOX", server.sent, clients, clients_sub]
    mirror.sync("a folder rename")
    renamed = events_of(engine, mailbox_id, "folder.renamed")
    assert {(e["old_name"], e["new_name"]) for e in renamed} == {
        (projects, clients),
        (subfolder, clients_sub),
    }, "each folder keeps its row, its mail and its sync setting under the new name"

    user.delete_folder(clients_sub)
    mirror.folders = ["INBOX", server.sent, clients]
    mirror.sync("a folder delete")
    gone = folder_row(engine, mailbox_id, clients_sub)
    assert gone is not None and gone.outdated_since is not None, "kept with its mail, outdated"
