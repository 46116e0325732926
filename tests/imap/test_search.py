"""The search query builder, checked against imapclient's own criteria normaliser."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

import pytest

from app.imap.search import Criterion, SearchQuery, SearchQueryBuilder
from tests.support.search_wire import Q, parse, terms_in_every_position, values, wire

TRICKY_TERMS = [
    'say "hi"',
    "back\\slash",
    "trailing\\",
    '\\"',
    '"',
    "",
    " ",
    "a)",
    "(a",
    ")",
    "((",
    "{5}",
    "{5+}",
    "x {3}",
    "%",
    "*",
    "a]",
    "[b",
    "NIL",
    "OR",
    "ALL)",
    "tab\there",
    "\x01",
    "Grüße",
    "日本語",
    "é)",
    '"é"',
    "party 🎉",
]


@pytest.mark.parametrize(
    ("builder", "expected"),
    [
        (Q.sender("a@example.com"), ("FROM", "a@example.com")),
        (Q.to("b@example.com"), ("TO", "b@example.com")),
        (Q.cc("c@example.com"), ("CC", "c@example.com")),
        (Q.bcc("d@example.com"), ("BCC", "d@example.com")),
        (Q.subject("report"), ("SUBJECT", "report")),
        (Q.body("invoice"), ("BODY", "invoice")),
        (Q.text("hello world"), ("TEXT", "hello world")),
        (Q.header("X-Priority", "1"), ("HEADER", "X-Priority", "1")),
        (Q.header("List-Id", ""), ("HEADER", "List-Id", "")),
        (Q.since(date(2024, 3, 5)), ("SINCE", date(2024, 3, 5))),
        (Q.before(date(2024, 3, 5)), ("BEFORE", date(2024, 3, 5))),
        (Q.on(datetime(2024, 3, 5, 23, 59, tzinfo=UTC)), ("ON", date(2024, 3, 5))),
        (Q.seen(), ("SEEN",)),
        (Q.seen(False), ("UNSEEN",)),
        (Q.flagged(), ("FLAGGED",)),
        (Q.flagged(False), ("UNFLAGGED",)),
        (Q.answered(), ("ANSWERED",)),
        (Q.answered(False), ("UNANSWERED",)),
        (Q.larger(0), ("LARGER", 0)),
        (Q.smaller(10_000), ("SMALLER", 10_000)),
        (Q.uid_range(5, 9), ("UID", "5:9")),
        (Q.uid_range(5), ("UID", "5:*")),
    ],
)
def test_each_method_adds_its_search_key(
    builder: SearchQueryBuilder, expected: tuple[Criterion, ...]
) -> None:
    assert builder.build() == SearchQuery(criteria=expected, charset=None)


def test_dates_reach_the_wire_in_imap_date_form() -> None:
    query = Q.since(date(2024, 3, 5)).before(datetime(2024, 12, 25, 8, 0, tzinfo=UTC)).build()
    assert wire(query) == b"SINCE 05-Mar-2024 BEFORE 25-Dec-2024"


def test_chained_keys_keep_their_order() -> None:
    query = Q.subject("notification").sender("test@test.com").seen(False).larger(100).build()
    assert query.criteria == (
        "SUBJECT",
        "notification",
        "FROM",
        "test@test.com",
        "UNSEEN",
        "LARGER",
        100,
    )


def test_empty_query_matches_all() -> None:
    assert Q.build() == SearchQuery(criteria=("ALL",), charset=None)


def test_any_of_three_folds_into_nested_binary_ors() -> None:
    query = Q.any_of(Q.sender("a@x.org"), Q.sender("b@x.org"), Q.sender("c@x.org")).build()
    assert wire(query) == b"OR FROM a@x.org OR FROM b@x.org FROM c@x.org"


def test_any_of_parenthesises_only_multi_key_alternatives() -> None:
    query = Q.seen().any_of(Q.subject("a").flagged(), Q.subject("b")).build()
    assert query.criteria == ("SEEN", "OR", ("SUBJECT", "a", "FLAGGED"), "SUBJECT", "b")
    assert wire(query) == b"SEEN OR (SUBJECT a FLAGGED) SUBJECT b"


def test_any_of_one_alternative_is_that_alternative() -> None:
    assert Q.any_of(Q.subject("a").seen()).build() == Q.subject("a").seen().build()


def test_any_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="any_of"):
        Q.any_of()


def test_not_negates_a_single_key_or_a_group() -> None:
    assert wire(Q.not_(Q.seen()).build()) == b"NOT SEEN"
    assert wire(Q.not_(Q.seen().flagged()).build()) == b"NOT (SEEN FLAGGED)"
    assert wire(Q.not_(Q).build()) == b"NOT ALL"


def test_group_ending_in_a_literal_keeps_its_parenthesis_outside_it() -> None:
    query = Q.not_(Q.seen().subject("é")).build()
    assert wire(query) == b"NOT (SEEN SUBJECT {2}\r\n\xc3\xa9 ALL)"


def test_ascii_query_declares_no_charset() -> None:
    assert Q.subject("plain").text('with "quotes"').build().charset is None


@pytest.mark.parametrize(
    "builder",
    [
        Q.subject("Grüße"),
        Q.header("X-Tag", "日本"),
        Q.any_of(Q.seen(), Q.not_(Q.flagged().body("ça va"))),
    ],
)
def test_non_ascii_anywhere_declares_utf8(builder: SearchQueryBuilder) -> None:
    assert builder.build().charset == "UTF-8"


def test_builder_is_reusable_for_different_queries() -> None:
    base = Q.sender("boss@example.com")
    unread = base.seen(False).build()
    urgent = base.subject("urgent").build()
    assert unread.criteria == ("FROM", "boss@example.com", "UNSEEN")
    assert urgent.criteria == ("FROM", "boss@example.com", "SUBJECT", "urgent")
    assert base.build().criteria == ("FROM", "boss@example.com")
    assert Q.build().criteria == ("ALL",)


TERM_METHODS: dict[str, Callable[[str], SearchQueryBuilder]] = {
    "sender": Q.sender,
    "to": Q.to,
    "cc": Q.cc,
    "bcc": Q.bcc,
    "subject": Q.subject,
    "body": Q.body,
    "text": Q.text,
    "header value": lambda value: Q.header("X-Tag", value),
}


@pytest.mark.parametrize("field", TERM_METHODS)
@pytest.mark.parametrize("attack", ["x\r\nA1 LOGOUT", "x\rSEEN", "x\nSEEN", "x\x00", "\ud800"])
def test_line_breaks_nul_and_broken_unicode_are_refused_naming_the_field(
    field: str, attack: str
) -> None:
    with pytest.raises(ValueError, match=field):
        TERM_METHODS[field](attack)


@pytest.mark.parametrize("field", TERM_METHODS)
def test_quotes_cannot_close_the_term_early(field: str) -> None:
    attack = 'x" OR ALL "'
    query = TERM_METHODS[field](attack).build()
    assert attack.encode() in parse(wire(query))
    assert parse(wire(query)) == values(query.criteria)


@pytest.mark.parametrize("name", ["", "X Tag", "X-Tag:", "Tâg", "X\r\nTag", "X\x00"])
def test_header_name_must_be_an_rfc5322_field_name(name: str) -> None:
    with pytest.raises(ValueError, match="header name"):
        Q.header(name, "value")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: Q.larger(-1), "larger"),
        (lambda: Q.smaller(-5), "smaller"),
        (lambda: Q.larger("5 OR ALL"), "larger"),  # type: ignore[arg-type]
        (lambda: Q.smaller(True), "smaller"),
        (lambda: Q.uid_range(0), "uid_range start"),
        (lambda: Q.uid_range(1, 0), "uid_range end"),
        (lambda: Q.since("2024-01-01 OR ALL"), "since"),  # type: ignore[arg-type]
        (lambda: Q.subject(b"bytes"), "subject"),  # type: ignore[arg-type]
    ],
)
def test_wrong_numbers_and_types_are_refused(call: Callable[[], object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        call()


@pytest.mark.parametrize("term", TRICKY_TERMS)
def test_every_term_reaches_the_server_as_exactly_one_value(term: str) -> None:
    for builder in terms_in_every_position(term):
        query = builder.build()
        assert parse(wire(query)) == values(query.criteria), query


@pytest.mark.parametrize("name", ["X-(weird)", "X-{5}", 'X-"q"', "X\\y", "X-50%"])
def test_odd_but_valid_header_names_reach_the_server_as_one_value(name: str) -> None:
    query = Q.any_of(Q.header(name, "v").seen(), Q.header(name, "é")).build()
    assert parse(wire(query)) == values(query.criteria)
