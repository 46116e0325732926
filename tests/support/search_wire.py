"""Search criteria as they reach the wire, read back as a strict RFC 3501 server would."""

from __future__ import annotations

import re
from datetime import date

from imapclient.datetime_util import format_criteria_date
from imapclient.imapclient import _is8bit, _normalise_search_criteria, _quoted

from app.imap.search import Criterion, SearchQuery, SearchQueryBuilder

Q = SearchQueryBuilder()
Parsed = list["bytes | Parsed"]


def wire(query: SearchQuery) -> bytes:
    """Render the criteria as imapclient's `_raw_command` puts them on the wire."""
    parts = []
    for item in _normalise_search_criteria(query.criteria, query.charset):
        if _is8bit(item):
            data = item.original if isinstance(item, _quoted) else item
            parts.append(b"{%d}\r\n" % len(data) + data)
        else:
            parts.append(item)
    return b" ".join(parts)


_TOKEN = re.compile(
    rb'(?P<open>\()|(?P<close>\))|"(?P<quoted>(?:[^"\\\x00\r\n\x80-\xff]|\\["\\])*)"'
    rb"|\{(?P<literal>\d+)\}\r\n|(?P<atom>\d+:(?:\d+|\*)|[^\x00-\x20\x7f-\xff(){%*\"\\]+)"
)


def parse(data: bytes) -> Parsed:
    """Read search keys as a strict RFC 3501 server would: values and parenthesised groups."""
    stack: list[Parsed] = [[]]
    pos = 0
    while pos < len(data):
        match = _TOKEN.match(data, pos)
        assert match, f"unparseable at {data[pos:]!r}"
        pos = match.end()
        if match["open"]:
            stack.append([])
            continue
        if match["close"]:
            assert len(stack) > 1, "unbalanced )"
            group = stack.pop()
            stack[-1].append(group)
        elif match["quoted"] is not None:
            stack[-1].append(re.sub(rb"\\(.)", rb"\1", match["quoted"]))
        elif match["literal"]:
            end = pos + int(match["literal"])
            stack[-1].append(data[pos:end])
            pos = end
        else:
            stack[-1].append(match["atom"])
        if pos < len(data) and data[pos : pos + 1] != b")":
            assert data[pos : pos + 1] == b" ", f"no space before {data[pos:]!r}"
            pos += 1
    assert len(stack) == 1, "unbalanced ("
    return stack[0]


def values(criteria: tuple[Criterion, ...]) -> Parsed:
    """Return what a server should read from `criteria`: one value per item."""
    out: Parsed = []
    for item in criteria:
        if isinstance(item, tuple):
            out.append(values(item))
        elif isinstance(item, date):
            out.append(format_criteria_date(item))
        elif isinstance(item, int):
            out.append(str(item).encode())
        else:
            out.append(item.encode() if isinstance(item, str) else bytes(item))
    return out


def terms_in_every_position(term: str) -> list[SearchQueryBuilder]:
    """Place `term` wherever a query can hold one: top level, groups, OR, NOT."""
    return [
        Q.sender(term),
        Q.to(term).cc(term).bcc(term),
        Q.subject(term).seen(),
        Q.body(term).text(term),
        Q.header("X-Tag", term),
        Q.any_of(Q.subject(term), Q.flagged().text(term)),
        Q.any_of(Q.text(term).seen(), Q.subject(term), Q.body(term).sender(term)),
        Q.not_(Q.subject(term).text(term)),
        Q.not_(Q.any_of(Q.seen().subject(term), Q.to(term).header("X-Tag", term))),
    ]
