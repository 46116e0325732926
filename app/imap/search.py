"""Build IMAP SEARCH criteria (RFC 3501 §6.4.4) that user input cannot break out of.

The output is imapclient's nested-list form, for `client.search(query.criteria,
query.charset)`. imapclient quotes a term only when it holds a space, a double
quote or a backslash, so a term like ``{5}`` or ``a)`` would go out bare and
change the command. Every term that is not a plain atom is therefore handed over
as an imapclient literal, which it sends as a quoted string or an IMAP literal.
Non-ASCII terms are UTF-8 bytes (imapclient drops the charset inside nested
lists, mjs/imapclient#645) and make the query declare ``CHARSET UTF-8``; ASCII
queries declare none, which servers that refuse UTF-8 (Exchange) accept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import TypeAlias

from imapclient.imapclient import _literal

Criterion: TypeAlias = "str | bytes | int | date | tuple[Criterion, ...]"
SearchKey: TypeAlias = tuple[Criterion, ...]

# What imapclient would send bare although an atom must not hold it (RFC 3501
# atom-specials): anything outside printable ASCII, parentheses, "{", wildcards, "]".
# Space, quote and backslash are fine: imapclient quotes the term for those.
_NEEDS_LITERAL = re.compile(r"[^\x20-\x7e]|[(){%*\]]")
_FORBIDDEN_CHARS = re.compile(r"[\r\n\x00]")
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 §3.6.8 ftext


@dataclass(frozen=True)
class SearchQuery:
    """Criteria ready for `IMAPClient.search(criteria, charset)`."""

    criteria: tuple[Criterion, ...]
    charset: str | None


@dataclass(frozen=True)
class SearchQueryBuilder:
    """Collect search keys that all must match; every method returns a new builder."""

    _keys: tuple[SearchKey, ...] = ()

    def sender(self, address: str) -> SearchQueryBuilder:
        return self._add("FROM", _term("sender", address))

    def to(self, address: str) -> SearchQueryBuilder:
        return self._add("TO", _term("to", address))

    def cc(self, address: str) -> SearchQueryBuilder:
        return self._add("CC", _term("cc", address))

    def bcc(self, address: str) -> SearchQueryBuilder:
        return self._add("BCC", _term("bcc", address))

    def subject(self, text: str) -> SearchQueryBuilder:
        return self._add("SUBJECT", _term("subject", text))

    def body(self, text: str) -> SearchQueryBuilder:
        return self._add("BODY", _term("body", text))

    def text(self, text: str) -> SearchQueryBuilder:
        """Match `text` in the headers or the body."""
        return self._add("TEXT", _term("text", text))

    def header(self, name: str, value: str) -> SearchQueryBuilder:
        """Match `value` in header `name`; an empty value matches any message having it."""
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            raise ValueError(f"header name must be an RFC 5322 field name, got {name!r}")
        return self._add("HEADER", _term("header name", name), _term("header value", value))

    def since(self, day: date) -> SearchQueryBuilder:
        """Match internal dates on or after `day` (the server's time zone decides the day)."""
        return self._add("SINCE", _day("since", day))

    def before(self, day: date) -> SearchQueryBuilder:
        return self._add("BEFORE", _day("before", day))

    def on(self, day: date) -> SearchQueryBuilder:
        return self._add("ON", _day("on", day))

    def seen(self, seen: bool = True) -> SearchQueryBuilder:
        return self._add("SEEN" if seen else "UNSEEN")

    def flagged(self, flagged: bool = True) -> SearchQueryBuilder:
        return self._add("FLAGGED" if flagged else "UNFLAGGED")

    def answered(self, answered: bool = True) -> SearchQueryBuilder:
        return self._add("ANSWERED" if answered else "UNANSWERED")

    def larger(self, size: int) -> SearchQueryBuilder:
        return self._add("LARGER", _count("larger", size, minimum=0))

    def smaller(self, size: int) -> SearchQueryBuilder:
        return self._add("SMALLER", _count("smaller", size, minimum=0))

    def uid_range(self, start: int, end: int | None = None) -> SearchQueryBuilder:
        """Match UIDs from `start` to `end`, or to the last message when `end` is None.

        IMAP reads ``n:*`` as a range ending at the highest UID, so it matches the
        last message even when `start` is above every UID.
        """
        first = _count("uid_range start", start, minimum=1)
        last = "*" if end is None else _count("uid_range end", end, minimum=1)
        return self._add("UID", f"{first}:{last}")

    def any_of(self, *alternatives: SearchQueryBuilder) -> SearchQueryBuilder:
        """Match when at least one alternative matches, folded into binary ORs."""
        if not alternatives:
            raise ValueError("any_of needs at least one alternative")
        if len(alternatives) == 1:
            return SearchQueryBuilder((*self._keys, *alternatives[0]._keys))
        key = alternatives[-1]._as_operand()
        for alternative in reversed(alternatives[:-1]):
            key = ("OR", *alternative._as_operand(), *key)
        return self._add(*key)

    def not_(self, excluded: SearchQueryBuilder) -> SearchQueryBuilder:
        return self._add("NOT", *excluded._as_operand())

    def build(self) -> SearchQuery:
        criteria: tuple[Criterion, ...] = tuple(item for key in self._keys for item in key)
        return SearchQuery(
            criteria=criteria or ("ALL",),
            charset="UTF-8" if _has_8bit(criteria) else None,
        )

    def _add(self, *key: Criterion) -> SearchQueryBuilder:
        return SearchQueryBuilder((*self._keys, key))

    def _as_operand(self) -> SearchKey:
        """Return this query as one search key: bare if it is one, else a parenthesised list."""
        criteria = self.build().criteria
        if len(self._keys) <= 1:
            return criteria
        # imapclient glues ")" onto the group's last item, which would land inside a
        # literal; a trailing ALL (true for every message) keeps it outside.
        if isinstance(criteria[-1], _literal):
            criteria = (*criteria, "ALL")
        return (criteria,)


def _term(field: str, value: str) -> str | bytes:
    """Return `value` as imapclient must receive it to send one quoted string or literal."""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string, got {type(value).__name__}")
    if _FORBIDDEN_CHARS.search(value):
        raise ValueError(f"{field} must not contain CR, LF or NUL")
    if not _NEEDS_LITERAL.search(value):
        return value
    try:
        literal: bytes = _literal(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(f"{field} is not valid Unicode text") from exc
    return literal


def _day(field: str, value: date) -> date:
    if isinstance(value, datetime):
        return value.date()
    if not isinstance(value, date):
        raise ValueError(f"{field} must be a date, got {type(value).__name__}")
    return value


def _count(field: str, value: int, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{field} must be an integer >= {minimum}, got {value!r}")
    return value


def _has_8bit(criteria: tuple[Criterion, ...]) -> bool:
    return any(
        _has_8bit(item)
        if isinstance(item, tuple)
        else isinstance(item, bytes) and not item.isascii()
        for item in criteria
    )
