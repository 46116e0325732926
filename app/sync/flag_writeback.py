"""Write seen/flagged back to the server, then to the local copy (`PATCH /v1/emails/{id}`).

The server first, in every folder holding the message, on one session that
the API request waits on (IMAP_OPERATION_TIMEOUT bounds it)::

    email id --- unknown ------------------------------> EmailNotFoundError
    connect + log in (once)
    each link: SELECT folder read-write -- gone ------> next link
                 [READ-ONLY] ------------------------> FolderReadOnly, nothing stored locally
                 UIDVALIDITY differs ----------------> next link (the UID names another
                                                       message, RFC 3501 2.3.1.1)
               UID STORE +/-FLAGS.SILENT -- UID gone -> next link
    no link stored ----------------------------------> MessageGoneError
    one transaction: the email's flags, and `email.updated` if they changed

A refusal leaves the local copy as it was; folders stored before it keep the
new flags on the server, and the next sync brings them in. The next sync also
sees our own STORE as a change (its MODSEQ is above the folder's
HIGHESTMODSEQ, RFC 7162) and finds the local flags already equal: it
announces nothing more.
"""

from __future__ import annotations

from contextlib import closing

from sqlalchemy.engine import Engine

from app.config import Settings
from app.db import session_scope
from app.db.repositories.emails import EmailDetail, email_detail, set_flags
from app.db.repositories.events import record_email_updates
from app.security import SecretBox
from app.sync.attachments import locate_copies, selected_copies
from app.sync.errors import EmailNotFoundError, MessageGoneError


def write_flags(
    engine: Engine,
    settings: Settings,
    secrets: SecretBox,
    email_id: int,
    *,
    seen: bool | None,
    flagged: bool | None,
) -> EmailDetail:
    """Store the flags given (None: unchanged) on the server, then locally; return the email."""
    with session_scope(engine) as session:
        mailbox, copies = locate_copies(session, email_id)
    add = [flag for flag, value in (("\\Seen", seen), ("\\Flagged", flagged)) if value is True]
    remove = [flag for flag, value in (("\\Seen", seen), ("\\Flagged", flagged)) if value is False]
    stored = 0
    found = selected_copies(engine, mailbox, copies, settings, secrets, readonly=False)
    with closing(found):
        for mail, place in found:
            stored += mail.store_flags(place.uid, add=add, remove=remove)
    if not stored:
        raise MessageGoneError("no folder on the server holds this message any more")
    with session_scope(engine) as session:
        if set_flags(session, email_id, seen=seen, flagged=flagged):
            record_email_updates(session, mailbox, [email_id], settings.sync_batch_size)
        detail = email_detail(session, email_id)
        if detail is None:  # a sync deleted it meanwhile
            raise EmailNotFoundError(f"email {email_id} does not exist")
        return detail
