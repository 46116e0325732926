"""Header fields of a message: addresses, dates, message ids, decoded text.

Each field is read apart from the others, so a field the stdlib cannot read
(its address parser recurses once per ``:`` group) costs that field only: it
falls back to what can be salvaged (the addresses found among its words, no
date) and a defect names it. The stdlib's address parser slows down faster
than its input grows, so it sees at most 128 kB of a list, and 1,000
addresses are kept. Address lists are cached per process: correspondents
repeat across a mailbox.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.utils import getaddresses, parsedate_tz
from functools import lru_cache

from app.imap.text_decoding import decode_8bit, decode_words, read_or_fall_back, scrub, unfold

_MAX_COMMENT_DEPTH = 50
_MAX_ADDRESSES = 1000  # per header: a megabyte `To:` must not become a megabyte of JSON per list
# The stdlib's address parser slows down faster than the input grows (seconds for 500 kB of
# "<a:"); 1,000 real addresses fit in far less than this.
_MAX_ADDRESS_LIST_CHARS = 128 * 1024
# Dates outside these years do not survive a round trip through PostgreSQL and back into
# Python's datetime in every session time zone (year 0 and year 10000 cannot be read).
_MIN_YEAR, _MAX_YEAR = 2, 9998
CACHEABLE_CHARS = 2048  # longer header values are parsed every time, never kept in a cache
_BRACKETED_ID = re.compile(r"<([^<>]*)>")
_ADDRESS_SEPARATORS = re.compile(r'[\s<>(),;:"\[\]]+')


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox of an address-list header (From, To, Cc, Bcc, Reply-To)."""

    name: str  # decoded display name, "" when none
    email: str  # addr-spec as written


def decode_header_value(value: str | bytes | None) -> str:
    """Decode a header value: RFC 2047 encoded words, raw 8-bit bytes, folded lines."""
    if value is None:
        return ""
    text = decode_8bit(value) if isinstance(value, bytes) else value
    return decode_words(unfold(text), [], "header").strip()


def parse_addresses(value: str | bytes | None) -> tuple[Address, ...]:
    """Split an address-list header into addresses with decoded display names."""
    if value is None:
        return ()
    text = decode_8bit(value) if isinstance(value, bytes) else value
    return read_addresses(text)[0]


@lru_cache(maxsize=1024)
def _address_list(text: str) -> tuple[tuple[Address, ...], tuple[str, ...]]:
    """Parse an address list first, then decode the names (a decoded name may hold commas).

    Pure, so cached: correspondents repeat. Returns the addresses and the defects.
    """
    defects: list[str] = []
    text = unfold(scrub(text, defects, "address"))
    if text.count("(") > _MAX_COMMENT_DEPTH and _comment_depth(text) > _MAX_COMMENT_DEPTH:
        defects.append("address: comments nested too deep, parentheses dropped")
        text = text.replace("(", "").replace(")", "")
    addresses = read_or_fall_back(
        lambda: tuple(
            Address(name=decode_words(name, defects, "display name").strip(), email=email)
            for name, email in getaddresses([text])
            if email
        ),
        lambda: tuple(Address("", word) for word in _ADDRESS_SEPARATORS.split(text) if "@" in word),
        defects,
        "address list (addresses taken from its words)",
    )
    if len(addresses) > _MAX_ADDRESSES:
        defects.append(
            f"address: {len(addresses) - _MAX_ADDRESSES} addresses over the limit dropped"
        )
        addresses = addresses[:_MAX_ADDRESSES]
    return addresses, tuple(defects)


def _comment_depth(text: str) -> int:
    """Return how deep parentheses nest (the stdlib address parser recurses once per level)."""
    depth = deepest = 0
    for char in text:
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth = max(depth - 1, 0)
    return deepest


def read_addresses(text: str) -> tuple[tuple[Address, ...], tuple[str, ...]]:
    if len(text) <= CACHEABLE_CHARS:
        return _address_list(text)
    if len(text) <= _MAX_ADDRESS_LIST_CHARS:
        return _address_list.__wrapped__(text)
    cut = text.rfind(",", 0, _MAX_ADDRESS_LIST_CHARS)
    addresses, defects = _address_list.__wrapped__(
        text[: cut if cut > 0 else _MAX_ADDRESS_LIST_CHARS]
    )
    return addresses, (*defects, f"address: list cut at {_MAX_ADDRESS_LIST_CHARS} characters")


def parse_date(text: str, defects: list[str]) -> datetime | None:
    """Parse an RFC 5322 date; no zone (or -0000) means UTC."""

    def read() -> datetime | None:
        parts = parsedate_tz(unfold(text))
        if parts is None:
            return None
        zone = timezone(timedelta(seconds=parts[9] or 0))
        year, month, day, hour, minute, second = parts[:6]
        return datetime(year, month, day, hour, minute, min(second, 59), tzinfo=zone)

    moment = read_or_fall_back(read, lambda: None, [], "date")
    if moment is None or not storable(moment):
        defects.append(f"unparseable Date header {text[:80]!r}")
        return None
    return moment


def storable(moment: datetime) -> bool:
    """Say whether `moment` survives the database in any session time zone."""
    try:
        return _MIN_YEAR <= moment.astimezone(UTC).year <= _MAX_YEAR
    except (ValueError, OverflowError):  # beyond datetime's range once in UTC
        return False


def message_ids(text: str) -> list[str]:
    """Return the <id> tokens of a Message-ID, In-Reply-To or References value, in order."""
    ids = ["".join(inner.split()) for inner in _BRACKETED_ID.findall(text)]
    if not ids:  # bare ids, as some broken mailers write them
        ids = [token for token in text.replace(",", " ").split() if "@" in token]
    return [f"<{token}>" for token in ids if token]


def aware(moment: datetime | None) -> datetime | None:
    """Make an INTERNALDATE aware; one the database could not hold back is dropped."""
    if moment is None:
        return None
    try:
        aware = moment if moment.tzinfo is not None else moment.astimezone()
    except (ValueError, OverflowError):  # year 1 in a zone east of UTC
        return None
    return aware if storable(aware) else None
