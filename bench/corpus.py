"""Generate the benchmark's mailbox, the same every time for a given seed and size, and load it.

    CorpusSpec(messages, seed, end) -> plan (one seeded random stream, oldest first)
                                    -> render (tests.support.mailgen, one process per core)
                                    -> MULTIAPPEND in batches over one connection
                                       (APPEND one by one where the server lacks it)

Every choice comes from one `random.Random(seed)`: body sizes log-normal around
8 KB, one message in ten with a 50-300 KB attachment, about a third replying to
a recent message (In-Reply-To/References), some subjects, names and file names
outside ASCII (RFC 2047/2231 on the wire), dates spread evenly over the two
years before `end`. Only `end` moves with the calendar (it defaults to the start
of the current UTC day), so a one-year window always takes about half.

The date of each message is also its INTERNALDATE, which IMAP SEARCH SINCE (the
sync window) compares with. MULTIAPPEND (RFC 3502) of 200 messages per command
stored 10,500 messages in 6.6 s here; `doveadm import` of the same mail from an
mbox took 8.9 s, plus writing the mbox. Rendering is the slow part (stdlib
`email` takes about 2.5 ms a message), hence the process pool.
"""

from __future__ import annotations

import multiprocessing
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from time import perf_counter

from imapclient import IMAPClient

from tests.support.dovecot import MailUser
from tests.support.imap_account import ImapAccount
from tests.support.mailgen import Attachment, make_message

DEFAULT_SEED = 20_240_917
SPAN = timedelta(days=730)
FOLDERS = ("INBOX", "Sent")
USER_ADDRESS = "Bench User <bench@example.com>"
APPEND_BATCH = 200
_MEDIAN_BODY = 8 * 1024
_BODY_SIGMA = 0.9
_BODY_LIMITS = (256, 256 * 1024)
_ATTACHMENT_SHARE = 0.10
_ATTACHMENT_LIMITS = (50 * 1024, 300 * 1024)
_REPLY_SHARE = 0.35
_HTML_SHARE = 0.40
_HTML_TEXT_SHARE = 0.4  # of a multipart/alternative body, the rest is HTML
_ENCODED_SUBJECT_SHARE = 0.15
_NON_ASCII_NAME_SHARE = 0.2
_NON_ASCII_LINE_SHARE = 0.05
_THREAD_LOOKBACK = 400  # replies answer one of the latest messages, as in a real inbox
_MAX_REFERENCES = 12
_POOL_LINES = 6_000
_CORRESPONDENTS = 300
_RENDER_CHUNK = 16
# Body text is drawn from this vocabulary, plus a word outside ASCII now and then.
_PROSE = (
    "please find the updated invoice for the project meeting and review the contract draft "
    "before the quarter ends thanks for the feedback on the release report the customer "
    "asked about the order payment and shipment schedule our team call agenda is below "
    "let me know if the server migration deadline still works regards"
)
_ASCII_WORDS = _PROSE.split()
_NON_ASCII_WORDS = ("Grüße", "Übersicht", "café", "naïve", "résumé", "größer", "Zürich", "déjà")
_SUBJECTS = (
    "Quarterly report",
    "Invoice {n}",
    "Meeting notes",
    "Project update",
    "Contract draft v{n}",
    "Order #{n} shipped",
    "Support ticket {n}",
    "Lunch on Friday?",
)
_NON_ASCII_SUBJECTS = (
    "Grüße aus Zürich ({n})",
    "Résumé de la réunion n°{n}",
    "Angebot für Übersetzung {n}",
    "見積書の送付 {n}",
    "Отчёт за квартал {n}",
    "Café ☕ on Monday {n}",
)
_FIRST_NAMES = ("Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi", "Oscar")
_NON_ASCII_FIRST_NAMES = ("Jürgen", "Zoë", "Ñuño", "Søren", "Łukasz", "Françoise", "Björn")
_LAST_NAMES = ("Smith", "Müller", "Dubois", "Rossi", "Novak", "García", "Tanaka", "Jensen")
_ATTACHMENT_TYPES = (
    ("application/pdf", "report-{n}.pdf"),
    ("image/jpeg", "photo-{n}.jpg"),
    ("application/zip", "archive-{n}.zip"),
    ("application/pdf", "Übersicht-{n}.pdf"),
)


def _start_of_today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class CorpusSpec:
    """What to generate: `messages` for INBOX and a twentieth of that for Sent."""

    messages: int = 10_000
    seed: int = DEFAULT_SEED
    end: datetime = field(default_factory=_start_of_today)

    @property
    def sent_messages(self) -> int:
        return self.messages // 20

    @property
    def total(self) -> int:
        return self.messages + self.sent_messages

    @property
    def start(self) -> datetime:
        """The date of the oldest possible message."""
        return self.end - SPAN


@dataclass(frozen=True, slots=True)
class MessagePlan:
    """Every random choice for one message; `render` turns it into bytes."""

    n: int
    folder: str
    date: datetime
    message_id: str
    subject: str
    sender: str
    to: str
    text: str
    html: str | None
    attachment: Attachment | None
    in_reply_to: str | None
    references: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CorpusMessage:
    """One rendered message: its folder, its INTERNALDATE and its RFC 5322 bytes."""

    folder: str
    date: datetime
    raw: bytes


@dataclass(slots=True)
class LoadedCorpus:
    """What is on the server now, per folder."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FOLDERS, 0))
    sizes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FOLDERS, 0))
    seconds: float = 0.0

    @property
    def messages(self) -> int:
        return sum(self.counts.values())

    @property
    def megabytes(self) -> float:
        return sum(self.sizes.values()) / 1e6


@dataclass(frozen=True, slots=True)
class _ThreadHead:
    """What a reply takes from the message it answers."""

    message_id: str
    subject: str
    references: tuple[str, ...]


class _Planner:
    """Draws every choice from one seeded random stream, oldest message first."""

    def __init__(self, spec: CorpusSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.lines = self._text_lines()
        self.people = [self._person() for _ in range(_CORRESPONDENTS)]
        self.recent: list[_ThreadHead] = []

    def plans(self) -> Iterator[MessagePlan]:
        spec = self.spec
        seconds = int(SPAN.total_seconds())
        ages = sorted((self.rng.randrange(1, seconds) for _ in range(spec.total)), reverse=True)
        sent = set(self.rng.sample(range(spec.total), spec.sent_messages))
        for n, age in enumerate(ages):
            folder = "Sent" if n in sent else "INBOX"
            yield self._plan(n, folder, spec.end - timedelta(seconds=age))

    def _plan(self, n: int, folder: str, date: datetime) -> MessagePlan:
        rng = self.rng
        message_id = f"<bench-{self.spec.seed}-{n}@example.com>"
        parent = (
            rng.choice(self.recent[-_THREAD_LOOKBACK:])
            if self.recent and rng.random() < _REPLY_SHARE
            else None
        )
        references: tuple[str, ...] = ()
        if parent is None:
            subject, in_reply_to = self._subject(n), None
        else:
            subject = (
                parent.subject if parent.subject.startswith("Re: ") else f"Re: {parent.subject}"
            )
            in_reply_to = parent.message_id
            references = (*parent.references, parent.message_id)[-_MAX_REFERENCES:]
        self.recent.append(_ThreadHead(message_id, subject, references))
        correspondent = rng.choice(self.people)
        size = min(
            max(int(rng.lognormvariate(0, _BODY_SIGMA) * _MEDIAN_BODY), _BODY_LIMITS[0]),
            _BODY_LIMITS[1],
        )
        with_html = rng.random() < _HTML_SHARE
        text = self._text(int(size * _HTML_TEXT_SHARE) if with_html else size)
        return MessagePlan(
            n=n,
            folder=folder,
            date=date,
            message_id=message_id,
            subject=subject,
            sender=USER_ADDRESS if folder == "Sent" else correspondent,
            to=correspondent if folder == "Sent" else USER_ADDRESS,
            text=text,
            html=self._html(size - len(text)) if with_html else None,
            attachment=self._attachment(n) if rng.random() < _ATTACHMENT_SHARE else None,
            in_reply_to=in_reply_to,
            references=references,
        )

    def _subject(self, n: int) -> str:
        non_ascii = self.rng.random() < _ENCODED_SUBJECT_SHARE
        return self.rng.choice(_NON_ASCII_SUBJECTS if non_ascii else _SUBJECTS).format(n=n)

    def _person(self) -> str:
        non_ascii = self.rng.random() < _NON_ASCII_NAME_SHARE
        first = self.rng.choice(_NON_ASCII_FIRST_NAMES if non_ascii else _FIRST_NAMES)
        last = self.rng.choice(_LAST_NAMES)
        local = f"{first}.{last}".encode("ascii", "ignore").decode().lower()
        return f"{first} {last} <{local}{self.rng.randrange(100)}@example.org>"

    def _text_lines(self) -> list[str]:
        """Sentences of about 70 characters; one in twenty has a word outside ASCII."""
        lines = []
        for _ in range(_POOL_LINES):
            words = self.rng.choices(_ASCII_WORDS, k=11)
            if self.rng.random() < _NON_ASCII_LINE_SHARE:
                words[self.rng.randrange(len(words))] = self.rng.choice(_NON_ASCII_WORDS)
            lines.append(" ".join(words).capitalize() + ".")
        return lines

    def _text(self, size: int) -> str:
        """Consecutive lines of the pool from a random start, about `size` characters."""
        start = self.rng.randrange(len(self.lines))
        taken: list[str] = []
        length = 0
        while length < size:
            line = self.lines[(start + len(taken)) % len(self.lines)]
            taken.append(line)
            length += len(line) + 1
        return "\n".join(taken) + "\n"

    def _html(self, size: int) -> str:
        paragraphs = self._text(max(size // 2, 64)).splitlines()
        body = "".join(f"<p>{escape(p)}</p>\n" for p in paragraphs)
        return f"<html><body>\n{body}</body></html>\n"

    def _attachment(self, n: int) -> Attachment:
        content_type, filename = self.rng.choice(_ATTACHMENT_TYPES)
        content = self.rng.randbytes(self.rng.randint(*_ATTACHMENT_LIMITS))
        return Attachment(filename.format(n=n), content, content_type)


def plan(spec: CorpusSpec) -> Iterator[MessagePlan]:
    """Yield the plan of every message in date order, INBOX and Sent interleaved."""
    return _Planner(spec).plans()


def render(message: MessagePlan) -> CorpusMessage:
    """Build the RFC 5322 bytes of one planned message.

    The stdlib draws MIME boundaries from the global `random`; seeding it with the
    message's id makes them repeatable too, whichever pool process renders it.
    """
    random.seed(message.message_id)
    raw = make_message(
        subject=message.subject,
        sender=message.sender,
        to=message.to,
        date=message.date,
        text=message.text,
        html=message.html,
        attachments=(message.attachment,) if message.attachment else (),
        message_id=message.message_id,
        in_reply_to=message.in_reply_to,
        references=" ".join(message.references) or None,
    )
    return CorpusMessage(message.folder, message.date, raw)


def generate(spec: CorpusSpec, *, processes: int | None = None) -> Iterator[CorpusMessage]:
    """Yield the rendered corpus in date order, rendering on every core."""
    # spawn, not fork: the parent may hold sockets and threads of its own.
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes or os.cpu_count() or 1) as pool:
        yield from pool.imap(render, plan(spec), chunksize=_RENDER_CHUNK)


def load(
    spec: CorpusSpec,
    user: ImapAccount,
    *,
    sent: str = "Sent",
    rendered: Iterable[CorpusMessage] | None = None,
) -> LoadedCorpus:
    """Generate the corpus and APPEND it into the user's INBOX and Sent, in date order.

    `sent` is the server's name for Sent (Courier's is `INBOX.Sent`). A server without
    MULTIAPPEND (Courier) gets one APPEND per message. `rendered` is the corpus
    already generated, to store the same mail on several servers.
    """
    started = perf_counter()
    loaded = LoadedCorpus()
    pending: dict[str, list[CorpusMessage]] = {folder: [] for folder in FOLDERS}
    names = {"INBOX": "INBOX", "Sent": sent}
    client = user.client()
    try:
        batch_size = APPEND_BATCH if client.has_capability("MULTIAPPEND") else 1
        for message in generate(spec) if rendered is None else rendered:
            batch = pending[message.folder]
            batch.append(message)
            if len(batch) == batch_size:
                _append(client, names, batch, loaded)
        for batch in pending.values():
            _append(client, names, batch, loaded)
    finally:
        client.logout()
    loaded.seconds = perf_counter() - started
    return loaded


def _append(
    client: IMAPClient, names: dict[str, str], batch: list[CorpusMessage], loaded: LoadedCorpus
) -> None:
    """Store `batch` (messages of one folder) with one APPEND or MULTIAPPEND and empty it."""
    if not batch:
        return
    folder = batch[0].folder
    if len(batch) == 1:
        client.append(names[folder], batch[0].raw, msg_time=batch[0].date)
    else:
        client.multiappend(names[folder], [{"msg": m.raw, "date": m.date} for m in batch])
    loaded.counts[folder] += len(batch)
    loaded.sizes[folder] += sum(len(m.raw) for m in batch)
    batch.clear()


@dataclass(frozen=True, slots=True)
class Changes:
    """What another mail client did between two syncs: new mail in INBOX, flags toggled."""

    new_messages: int = 100
    flag_changes: int = 1_000


def apply_changes(user: MailUser, changes: Changes, *, seed: int = DEFAULT_SEED) -> None:
    """Append new INBOX mail (one MULTIAPPEND) and toggle \\Flagged on the oldest INBOX messages.

    Toggling rather than setting makes every call `flag_changes` real changes,
    however often it runs on the same mailbox.
    """
    now = datetime.now(UTC).replace(microsecond=0)
    new = [
        {
            "msg": make_message(
                subject=f"New since the last sync {n}",
                date=now,
                text=f"Message {n} of a change round.\n" * 40,
                message_id=f"<bench-change-{seed}-{now:%Y%m%d%H%M%S}-{n}@example.com>",
            ),
            "date": now,
        }
        for n in range(changes.new_messages)
    ]
    client = user.client()
    try:
        client.select_folder("INBOX")
        uids = sorted(client.search("ALL"))[: changes.flag_changes]
        flagged = {uid for uid, flags in client.get_flags(uids).items() if b"\\Flagged" in flags}
        unflagged = [uid for uid in uids if uid not in flagged]
        if flagged:
            client.remove_flags(sorted(flagged), [b"\\Flagged"], silent=True)
        if unflagged:
            client.add_flags(unflagged, [b"\\Flagged"], silent=True)
        if new:
            client.multiappend("INBOX", new)
    finally:
        client.logout()
