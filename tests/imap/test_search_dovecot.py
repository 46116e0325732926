"""Search queries run on the real Dovecot find exactly the messages they describe."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from typing import Any

import pytest
from imapclient import IMAPClient

from app.imap.search import SearchQueryBuilder
from tests.support.dovecot import Dovecot, MailUser
from tests.support.mailgen import make_message

Q = SearchQueryBuilder()


def _stored(
    day: date, flags: tuple[str, ...] = (), **fields: Any
) -> tuple[bytes, tuple[str, ...], datetime]:
    """Return a message written at noon UTC on `day`, its flags and its internal date."""
    when = datetime.combine(day, time(12), tzinfo=UTC)
    return make_message(date=when, **fields), flags, when


MESSAGES = {
    "invoice": _stored(
        date(2024, 3, 1),
        ("\\Seen",),
        subject="Invoice 2024-03",
        sender="alice@example.com",
        text="Please pay.\n",
        headers={"X-Priority": "1"},
    ),
    "report": _stored(
        date(2024, 3, 5),
        ("\\Flagged",),
        subject="Weekly report",
        sender="carol@example.org",
        cc="dave@example.net",
        text="Numbers inside.\n",
    ),
    "unicode": _stored(
        date(2024, 3, 10),
        subject="Grüße aus Köln",
        sender="Jürgen <juergen@example.de>",
        to="anna@example.de",
        text="Schöne Grüße\n",
    ),
    "quiet": _stored(
        date(2024, 3, 10),
        ("\\Seen", "\\Answered"),
        subject="Quiet note",
        sender="alice@example.com",
        bcc="secret@example.com",
        text="Between us.\n",
    ),
    "tricky": _stored(
        date(2024, 3, 15),
        subject='Re: (urgent) "quoted" {5}',
        sender="carol@example.org",
        text="path back\\slash at 50%\n",
    ),
    "html": _stored(
        date(2024, 3, 20),
        subject="Shipment",
        sender="shop@example.com",
        text=None,
        html="<p>Tracking number XYZ123</p>",
    ),
    "large": _stored(
        date(2024, 4, 1),
        subject="Big one",
        sender="carol@example.org",
        text="lorem ipsum dolor sit amet\n" * 600,
    ),
    "newsletter": _stored(
        date(2024, 4, 2),
        ("\\Seen",),
        subject="Newsletter",
        sender="news@example.com",
        to="list@example.com",
        headers={"List-Id": "<news.example.com>"},
    ),
}
ALL = set(MESSAGES)


@pytest.fixture(scope="module")
def mailbox_user(dovecot: Dovecot) -> MailUser:
    """Return one user for the module: the searches only read, so they share its mailbox."""
    return dovecot.add_user()


@pytest.fixture(scope="module")
def inbox(mailbox_user: MailUser) -> dict[str, int]:
    """Append the messages to INBOX and return their UIDs by name."""
    return {
        name: mailbox_user.append("INBOX", message, flags=flags, date=when)
        for name, (message, flags, when) in MESSAGES.items()
    }


@pytest.fixture
def client(mailbox_user: MailUser, inbox: dict[str, int]) -> Iterator[IMAPClient]:
    """Return a fresh session on INBOX (a broken command must not spoil the next test)."""
    client = mailbox_user.client()
    client.select_folder("INBOX", readonly=True)
    yield client
    client.shutdown()


CASES: list[tuple[str, SearchQueryBuilder, set[str]]] = [
    ("all", Q, ALL),
    ("sender", Q.sender("alice@example.com"), {"invoice", "quiet"}),
    ("sender non-ascii name", Q.sender("Jürgen"), {"unicode"}),
    ("to", Q.to("bob@example.com"), ALL - {"unicode", "newsletter"}),
    ("cc", Q.cc("dave@example.net"), {"report"}),
    ("bcc", Q.bcc("secret@example.com"), {"quiet"}),
    ("subject", Q.subject("weekly"), {"report"}),
    ("subject non-ascii", Q.subject("Grüße"), {"unicode"}),
    ("subject with imap syntax", Q.subject('(urgent) "quoted" {5}'), {"tricky"}),
    ("body", Q.body("back\\slash at 50%"), {"tricky"}),
    ("subject like a literal", Q.subject("{5}"), {"tricky"}),
    ("body with a wildcard", Q.body("50%"), {"tricky"}),
    ("body html", Q.body("XYZ123"), {"html"}),
    ("body ignores headers", Q.body("Weekly"), set()),
    ("text includes headers", Q.text("Weekly"), {"report"}),
    ("header value", Q.header("X-Priority", "1"), {"invoice"}),
    ("header present", Q.header("List-Id", ""), {"newsletter"}),
    ("since", Q.since(date(2024, 3, 10)), ALL - {"invoice", "report"}),
    ("before", Q.before(date(2024, 3, 5)), {"invoice"}),
    ("on", Q.on(datetime(2024, 3, 10, 23, 0, tzinfo=UTC)), {"unicode", "quiet"}),
    ("seen", Q.seen(), {"invoice", "quiet", "newsletter"}),
    ("unseen", Q.seen(False), ALL - {"invoice", "quiet", "newsletter"}),
    ("flagged", Q.flagged(), {"report"}),
    ("unflagged", Q.flagged(False), ALL - {"report"}),
    ("answered", Q.answered(), {"quiet"}),
    ("unanswered", Q.answered(False), ALL - {"quiet"}),
    ("larger", Q.larger(10_000), {"large"}),
    ("smaller", Q.smaller(10_000), ALL - {"large"}),
    (
        "chained",
        Q.since(date(2024, 3, 10)).seen(False).smaller(10_000),
        {"unicode", "tricky", "html"},
    ),
    (
        "or of three",
        Q.any_of(Q.cc("dave@example.net"), Q.subject("Grüße"), Q.bcc("secret")),
        {"report", "unicode", "quiet"},
    ),
    (
        "or of groups",
        Q.any_of(Q.seen().sender("alice"), Q.flagged().subject("weekly")),
        {"invoice", "quiet", "report"},
    ),
    ("not", Q.not_(Q.seen()), ALL - {"invoice", "quiet", "newsletter"}),
    (
        "not of a group ending in non-ascii",
        Q.not_(Q.seen(False).subject("Köln")),
        ALL - {"unicode"},
    ),
    (
        "not of or",
        Q.to("bob").not_(Q.any_of(Q.seen(), Q.flagged(), Q.larger(10_000))),
        {"tricky", "html"},
    ),
]


@pytest.mark.parametrize(
    ("builder", "expected"),
    [pytest.param(builder, expected, id=name) for name, builder, expected in CASES],
)
def test_search_finds_exactly_the_described_messages(
    client: IMAPClient, inbox: dict[str, int], builder: SearchQueryBuilder, expected: set[str]
) -> None:
    query = builder.build()
    found = set(client.search(query.criteria, query.charset))
    assert found == {inbox[name] for name in expected}


def test_uid_range_selects_uids_between_its_ends(client: IMAPClient, inbox: dict[str, int]) -> None:
    query = Q.uid_range(inbox["report"], inbox["quiet"]).build()
    assert set(client.search(query.criteria, query.charset)) == {
        inbox["report"],
        inbox["unicode"],
        inbox["quiet"],
    }


def test_open_uid_range_past_the_end_still_matches_the_last_message(
    client: IMAPClient, inbox: dict[str, int]
) -> None:
    last = max(inbox.values())
    query = Q.uid_range(last + 100).build()
    assert client.search(query.criteria, query.charset) == [last]
