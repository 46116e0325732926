"""Make up the demo mailbox: eighteen months of a small design studio's mail, and new arrivals.

    DemoMail(now).history   about 300 messages dated over the last 548 days:
                              conversations with clients (INBOX and Sent; every reply
                              carries In-Reply-To and References), some in German,
                              French, Spanish or Japanese; invoices with a PDF, photos,
                              a spreadsheet; the older conversations and invoices filed
                              in Archive; a weekly newsletter (text and HTML) in
                              Newsletters
    DemoMail.arrival(now)   the next message for INBOX: a new enquiry, or (every third)
                            a client's reply to one of the latest conversations

A seeded generator makes every run's mailbox the same, dated relative to now, so
the service's one-year sync window always cuts through it: the older half is
reached only by searching the server. The account is Dana Demo,
demo@example.com; every other address is under an example domain.
"""

from __future__ import annotations

import itertools
import random
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

ADDRESS = "demo@example.com"
FOLDERS = ("INBOX", "Sent", "Archive", "Newsletters")
HISTORY_DAYS = 548  # eighteen months
_ME = ("Dana Demo", ADDRESS)
_CONVERSATIONS = 70
_ARCHIVED_AFTER = timedelta(days=400)
_SEEN = "\\Seen"
_FLAGGED = "\\Flagged"
_ANSWERED = "\\Answered"

_CONTACTS = (
    ("Olivia Brown", "olivia.brown@example.com"),
    ("Noah Smith", "noah@example.org"),
    ("Jürgen Weiß", "juergen.weiss@example.de"),
    ("Émilie Durand", "emilie.durand@example.fr"),
    ("Sofía Ramírez", "sofia@example.es"),
    ("山田 太郎", "yamada@example.jp"),
    ("Priya Patel", "priya.patel@example.net"),
    ("Lars Nilsson", "lars@example.se"),
)


@dataclass(frozen=True)
class _Topic:
    """One kind of conversation: its subject, what the client writes, what Dana answers."""

    subject: str
    opening: str
    replies: tuple[str, ...]
    attachment: str | None = None  # "pdf", "csv" or "png"


_TOPICS = (
    _Topic(
        "Website relaunch: first drafts",
        "the first drafts of the new start page are ready for you to look at.",
        ("Thanks! The second layout works best for us.", "Could the header be a little calmer?"),
        "png",
    ),
    _Topic(
        "Angebot für die Überarbeitung der Website",
        "anbei unser Angebot für die Überarbeitung der Website, wie besprochen.",
        ("Vielen Dank, wir melden uns bis Freitag.", "Können wir über die Zahlungsziele reden?"),
        "pdf",
    ),
    _Topic(
        "Réunion de lancement – ordre du jour",
        "voici l'ordre du jour de notre réunion de lancement de jeudi.",
        ("Parfait, à jeudi !", "Pouvons-nous ajouter le calendrier des livrables ?"),
    ),
    _Topic(
        "見積書の送付について",
        "お世話になっております。見積書をお送りしますので、ご確認ください。",
        ("ご確認ありがとうございます。", "納期について相談させてください。"),
        "pdf",
    ),
    _Topic(
        "Presupuesto para la campaña de otoño",
        "te envío el presupuesto para la campaña de otoño.",
        ("¡Gracias! Lo revisamos esta semana.", "¿Podemos reducir el número de carteles?"),
    ),
    _Topic(
        "Quarterly figures for the board",
        "here are the quarterly figures for the board meeting.",
        ("Thanks, that is all we need.", "Could you add last year's column?"),
        "csv",
    ),
    _Topic(
        "Photos from the shoot 📸",
        "the photos from Tuesday's shoot, as promised.",
        ("They look great, thank you!", "Could we have number two in colour?"),
        "png",
    ),
    _Topic(
        "Contract renewal",
        "our contract runs out at the end of next month; shall we renew it?",
        ("Yes, same terms as last year please.", "Let's talk about the scope first."),
        "pdf",
    ),
    _Topic(
        "Logo feedback",
        "we showed the new logo around the office. Mostly good news!",
        ("Glad to hear it. What was the rest?", "I'll send a revised version tomorrow."),
    ),
    _Topic(
        "Lunch next week?",
        "are you free for lunch next week? Tuesday or Thursday would suit me.",
        ("Thursday works, the usual place?", "Tuesday, 12:30?"),
    ),
    _Topic(
        "Server migration schedule",
        "the hosting move is planned for the weekend of the 14th; any objections?",
        ("No objections, go ahead.", "Please avoid the last week of the month."),
    ),
)

_NEWSLETTER = ("Design Weekly", "news@designweekly.example")
_NEWSLETTER_TITLES = (
    "Colour trends for the coming season",
    "Typography on small screens",
    "Ten portfolios worth a look",
    "Accessible contrast, explained",
    "What makes a good style guide",
    "Grids beyond twelve columns",
)
_BILLING = ("Nimbus Hosting Billing", "billing@nimbushosting.example")


@dataclass(frozen=True)
class DemoMessage:
    """One message to APPEND: its folder, the RFC 5322 bytes, internal date and flags."""

    folder: str
    raw: bytes
    date: datetime
    flags: tuple[str, ...]
    subject: str
    sender: str


@dataclass
class _Conversation:
    topic: _Topic
    contact: tuple[str, str]
    message_ids: list[str] = field(default_factory=list)


class DemoMail:
    """The demo mailbox's history, and the messages that arrive while the demo runs."""

    def __init__(self, now: datetime, seed: int = 21) -> None:
        self._random = random.Random(seed)  # noqa: S311 - made-up mail, the same every run
        self._ids = itertools.count(1)
        self._conversations: list[_Conversation] = []
        self.history: list[DemoMessage] = sorted(
            [
                *self._conversation_history(now),
                *self._invoices(now),
                *self._newsletters(now),
            ],
            key=lambda message: message.date,
        )
        self._arrivals = itertools.count(1)

    def arrival(self, now: datetime) -> DemoMessage:
        """Return the next message to arrive in INBOX, dated `now`."""
        if next(self._arrivals) % 3 == 0:
            conversation = self._conversations[-1 - self._random.randrange(5)]
            text = self._random.choice(conversation.topic.replies)
        else:
            conversation = _Conversation(
                self._random.choice(_TOPICS), self._random.choice(_CONTACTS)
            )
            self._conversations.append(conversation)
            text = conversation.topic.opening
        return self._message(
            conversation, from_client=True, date=now, text=text, folder="INBOX", flags=()
        )

    def _conversation_history(self, now: datetime) -> list[DemoMessage]:
        """Conversations of one to five messages, alternating between the client and Dana."""
        messages: list[DemoMessage] = []
        starts = sorted(
            now - timedelta(days=self._random.uniform(1, HISTORY_DAYS))
            for _ in range(_CONVERSATIONS)
        )
        for start in starts:
            conversation = _Conversation(
                self._random.choice(_TOPICS), self._random.choice(_CONTACTS)
            )
            self._conversations.append(conversation)
            archived = now - start > _ARCHIVED_AFTER and self._random.random() < 0.6
            from_client = self._random.random() < 0.7
            length = self._random.randint(1, 5)
            date = start
            for position in range(length):
                last = position == length - 1
                text = (
                    conversation.topic.opening
                    if position == 0
                    else self._random.choice(conversation.topic.replies)
                )
                if from_client:
                    flags = [_SEEN] if now - date > timedelta(days=2) else []
                    if not last:
                        flags.append(_ANSWERED)
                    if self._random.random() < 0.08:
                        flags.append(_FLAGGED)
                    folder = "Archive" if archived else "INBOX"
                else:
                    flags, folder = [_SEEN], "Sent"
                message = self._message(
                    conversation,
                    from_client=from_client,
                    date=date,
                    text=text,
                    folder=folder,
                    flags=tuple(flags),
                )
                messages.append(message)
                from_client = not from_client
                date += timedelta(hours=self._random.uniform(1, 60))
                if date > now - timedelta(hours=1):
                    break
        return messages

    def _invoices(self, now: datetime) -> list[DemoMessage]:
        """A hosting invoice with a PDF on the 2nd of every month; older than 180 days: archived."""
        messages = []
        for months_ago in range(HISTORY_DAYS // 31, -1, -1):
            month = now.year * 12 + now.month - 1 - months_ago
            date = now.replace(year=month // 12, month=month % 12 + 1, day=2, hour=6, minute=0)
            if date > now:
                continue
            number = f"NH-{date:%Y-%m}"
            text = (
                f"Dear customer,\n\nplease find attached invoice {number} for your hosting"
                f" in {date:%B %Y}. The amount of 49.00 EUR will be debited in ten days.\n"
            )
            message = _compose(
                _BILLING,
                _ME,
                f"Your invoice {number}",
                date=date,
                text=text,
                message_id=self._message_id(),
                attachments=[(f"invoice-{number}.pdf", _pdf(f"Invoice {number}: 49.00 EUR"))],
            )
            folder = "Archive" if now - date > timedelta(days=180) else "INBOX"
            messages.append(
                DemoMessage(folder, message, date, (_SEEN,), f"Your invoice {number}", _BILLING[0])
            )
        return messages

    def _newsletters(self, now: datetime) -> list[DemoMessage]:
        """A weekly newsletter, text and HTML, read but for the latest few."""
        messages = []
        for issue in range(1, HISTORY_DAYS // 7 + 1):
            date = now - timedelta(days=HISTORY_DAYS - 7 * issue + 0.5)
            title = _NEWSLETTER_TITLES[issue % len(_NEWSLETTER_TITLES)]
            subject = f"{_NEWSLETTER[0]} #{issue}: {title}"
            text = (
                f"This week: {title.lower()}.\n\nRead on at https://designweekly.example/{issue}\n"
            )
            html = (
                f"<html><body><h1>{title}</h1><p>This week: {title.lower()}.</p>"
                f'<p><a href="https://designweekly.example/{issue}">Read on</a></p></body></html>'
            )
            flags = (_SEEN,) if now - date > timedelta(days=14) else ()
            raw = _compose(
                _NEWSLETTER,
                _ME,
                subject,
                date=date,
                text=text,
                message_id=self._message_id(),
                html=html,
            )
            messages.append(DemoMessage("Newsletters", raw, date, flags, subject, _NEWSLETTER[0]))
        return messages

    def _message(
        self,
        conversation: _Conversation,
        *,
        from_client: bool,
        date: datetime,
        text: str,
        folder: str,
        flags: tuple[str, ...],
    ) -> DemoMessage:
        """The next message of `conversation`, a reply to its last one if it has one."""
        sender, recipient = (
            (conversation.contact, _ME) if from_client else (_ME, conversation.contact)
        )
        topic = conversation.topic
        subject = topic.subject if not conversation.message_ids else f"Re: {topic.subject}"
        greeting = f"Hello {recipient[0].split()[0]},\n\n{text}\n\n{sender[0]}\n"
        attachments = []
        if topic.attachment and not conversation.message_ids:
            attachments.append(_attachment(topic.attachment, self._random))
        message_id = self._message_id()
        raw = _compose(
            sender,
            recipient,
            subject,
            date=date,
            text=greeting,
            message_id=message_id,
            in_reply_to=conversation.message_ids[-1] if conversation.message_ids else None,
            references=" ".join(conversation.message_ids) or None,
            attachments=attachments,
        )
        conversation.message_ids.append(message_id)
        return DemoMessage(folder, raw, date, flags, subject, sender[0])

    def _message_id(self) -> str:
        return f"<demo-{next(self._ids)}.{self._random.getrandbits(48):x}@example.com>"


def _compose(
    sender: tuple[str, str],
    recipient: tuple[str, str],
    subject: str,
    *,
    date: datetime,
    text: str,
    message_id: str,
    in_reply_to: str | None = None,
    references: str | None = None,
    html: str | None = None,
    attachments: Sequence[tuple[str, bytes]] = (),
) -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = formataddr(sender)
    message["To"] = formataddr(recipient)
    message["Subject"] = subject
    message["Date"] = format_datetime(date.astimezone(UTC))
    message["Message-ID"] = message_id
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
    if references:
        message["References"] = references
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    for filename, content in attachments:
        maintype, subtype = _CONTENT_TYPES[filename.rsplit(".", 1)[1]]
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes()


_CONTENT_TYPES = {"pdf": ("application", "pdf"), "csv": ("text", "csv"), "png": ("image", "png")}


def _attachment(kind: str, rng: random.Random) -> tuple[str, bytes]:
    if kind == "pdf":
        return "document.pdf", _pdf("Please see the attached proposal.")
    if kind == "csv":
        rows = "\n".join(
            f"Q{q},{rng.randint(80, 140)}000,{rng.randint(60, 120)}000" for q in range(1, 5)
        )
        return "figures.csv", f"quarter,revenue,costs\n{rows}\n".encode()
    colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    return f"photo-{rng.randrange(1000, 9999)}.png", _png(64, 48, colour)


def _pdf(line: str) -> bytes:
    """Return a one-page PDF showing `line` (ASCII, no parentheses): a real file a viewer opens."""
    content = f"BT /F1 14 Tf 72 760 Td ({line}) Tj ET".encode()
    bodies = (
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    )
    document = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(bodies, 1):
        offsets.append(len(document))
        document += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(document)
    document += b"xref\n0 %d\n0000000000 65535 f \n" % (len(bodies) + 1)
    document += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    document += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(bodies) + 1,
        xref,
    )
    return bytes(document)


def _png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    """Return a PNG of one colour (RFC 2083): a real image, a few hundred bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" + bytes(colour) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )
