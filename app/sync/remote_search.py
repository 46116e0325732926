"""Search a folder on the IMAP server itself, beyond what the local copy holds.

    mailbox id --- unknown -------------------------> MailboxNotFoundError
    connect + log in
    EXAMINE folder --- no such folder ---------------> FolderNotFound
    UID SEARCH (the query builder: user terms are quoted or sent as literals,
                so they cannot add search keys or commands)
    keep the newest `limit` UIDs, FETCH their headers, flags, sizes, structure
    -> the messages newest first, and how many matched in all

Read-only (EXAMINE, BODY.PEEK): searching never marks mail \\Seen. Only what
the answer shows is fetched (`EmailManager.summaries`), never a body, so a
search costs a few kilobytes per hit whatever the size of the mail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy.engine import Engine

from app.config import Settings
from app.db import session_scope
from app.db.repositories.mailboxes import get_mailbox
from app.imap import EmailManager
from app.imap.message import ParsedMessage
from app.imap.search import SearchQuery, SearchQueryBuilder
from app.security import SecretBox
from app.sync.credentials import connect_mailbox, interactive_login_options
from app.sync.errors import MailboxNotFoundError


@dataclass(frozen=True, slots=True)
class RemoteSearchCriteria:
    """What to look for in one folder; every criterion given must match."""

    folder: str = "INBOX"
    sender: str | None = None
    to: str | None = None
    cc: str | None = None
    subject: str | None = None
    body: str | None = None
    text: str | None = None  # headers or body
    since: date | None = None  # internal date on or after this day
    before: date | None = None  # internal date before this day
    seen: bool | None = None
    flagged: bool | None = None
    uid_from: int | None = None
    uid_to: int | None = None
    limit: int = 50

    def query(self) -> SearchQuery:
        """Build the SEARCH criteria; a term the builder refuses raises ValueError."""
        builder = SearchQueryBuilder()
        terms = (
            (self.sender, SearchQueryBuilder.sender),
            (self.to, SearchQueryBuilder.to),
            (self.cc, SearchQueryBuilder.cc),
            (self.subject, SearchQueryBuilder.subject),
            (self.body, SearchQueryBuilder.body),
            (self.text, SearchQueryBuilder.text),
        )
        for term, add in terms:
            if term is not None:
                builder = add(builder, term)
        if self.since is not None:
            builder = builder.since(self.since)
        if self.before is not None:
            builder = builder.before(self.before)
        if self.seen is not None:
            builder = builder.seen(self.seen)
        if self.flagged is not None:
            builder = builder.flagged(self.flagged)
        if self.uid_from is not None or self.uid_to is not None:
            builder = builder.uid_range(self.uid_from or 1, self.uid_to)
        return builder.build()

    def in_uid_range(self, uid: int) -> bool:
        """Tell whether `uid` is really in the range: IMAP's `n:*` also matches the last UID."""
        return (self.uid_from is None or uid >= self.uid_from) and (
            self.uid_to is None or uid <= self.uid_to
        )


@dataclass(frozen=True, slots=True)
class RemoteSearchResult:
    """The newest matches, newest first, and the number of all matches."""

    messages: list[ParsedMessage]
    total: int


def search_remote_folder(
    engine: Engine,
    settings: Settings,
    secrets: SecretBox,
    mailbox_id: int,
    criteria: RemoteSearchCriteria,
) -> RemoteSearchResult:
    """Search the folder on the server and fetch the newest `criteria.limit` matches."""
    query = criteria.query()
    with session_scope(engine) as session:
        mailbox = get_mailbox(session, mailbox_id)
    if mailbox is None:
        raise MailboxNotFoundError(f"mailbox {mailbox_id} does not exist")
    options = interactive_login_options(settings)
    with connect_mailbox(engine, mailbox, settings, secrets, options) as connection:
        mail = EmailManager(connection)
        mail.select_folder(criteria.folder)
        uids = [uid for uid in mail.search(query) if criteria.in_uid_range(uid)]
        newest = uids[max(len(uids) - criteria.limit, 0) :][::-1]
        messages = list(mail.summaries(newest))
    return RemoteSearchResult(messages, len(uids))
