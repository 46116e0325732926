"""Bring the stored system flags of linked mail to what the server reports.

Only a change of the stored state counts: a flag the database already holds
(our own write-back, the same message seen in a second folder) changes
nothing and announces nothing. Of the changes, those of seen and flagged are
the ones `email.updated` carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from app.db.repositories.emails import flag_columns, update_flag_columns

_FLAG_COLUMNS = {
    "seen": "\\Seen",
    "flagged": "\\Flagged",
    "answered": "\\Answered",
    "draft": "\\Draft",
}
_VISIBLE_FLAGS = 2  # seen and flagged, the first columns: what `email.updated` carries


@dataclass(frozen=True, slots=True)
class FlagChanges:
    """What `apply_flags` wrote: how many emails changed, and which of them in seen/flagged."""

    changed: int
    visible: list[int]


def apply_flags(
    session: Session, links: dict[int, int], flags: dict[int, frozenset[str]]
) -> FlagChanges:
    """Write changed system flags of linked UIDs (`links`: UID -> email id); say which changed."""
    targets = {links[uid]: state for uid, state in flags.items() if uid in links}
    current = flag_columns(session, list(targets), list(_FLAG_COLUMNS))
    changes: list[dict[str, Any]] = []
    visible: list[int] = []
    for email_id, state in targets.items():
        wanted = tuple(flag in state for flag in _FLAG_COLUMNS.values())
        if email_id in current and current[email_id] != wanted:
            changes.append({"id": email_id, **dict(zip(_FLAG_COLUMNS, wanted, strict=True))})
            if current[email_id][:_VISIBLE_FLAGS] != wanted[:_VISIBLE_FLAGS]:
                visible.append(email_id)
    update_flag_columns(session, changes)
    return FlagChanges(len(changes), visible)
