"""Follow the outbox in id order for an SSE client, without gaps or repeats.

Every API process reads the `event` table itself (a poll per second per
stream), so a client may reconnect to any process and resume with
`Last-Event-ID`. Ids are handed out at INSERT but become visible at COMMIT,
so a transaction that started earlier can commit a lower id after a higher
one was already streamed. The tail therefore remembers the ids missing below
its high mark and looks for them again for `settle` seconds; after that a
missing id is taken to be a rolled-back insert.
"""

from __future__ import annotations

import time
from collections.abc import Collection

from sqlalchemy.engine import Engine

from app.db import session_scope
from app.db.models import Event
from app.db.repositories.events import event_ids_after, matching_events, newest_event_id
from app.notify.envelope import WEBHOOK_TEST_EVENT

POLL_BATCH = 500
SETTLE_SECONDS = 30.0
MAX_TRACKED_GAP = 1000  # a longer run of missing ids is deleted or rolled back, not late


class OutboxTail:
    """The events after a position that match a stream's filters, as they commit."""

    def __init__(
        self,
        engine: Engine,
        after_id: int,
        *,
        user_id: str | None = None,
        types: Collection[str] = (),
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        self._engine = engine
        self._high = after_id
        self._user_id = user_id
        self._types = tuple(types)
        self._settle_seconds = settle_seconds
        self._gaps: dict[int, float] = {}  # missing id -> when to stop waiting for it

    @classmethod
    def from_now(
        cls, engine: Engine, *, user_id: str | None = None, types: Collection[str] = ()
    ) -> OutboxTail:
        """Start after the newest event: a stream without Last-Event-ID sees new events only."""
        with session_scope(engine) as session:
            newest = newest_event_id(session)
        return cls(engine, newest, user_id=user_id, types=types)

    def poll(self) -> list[Event]:
        """Return the newly committed matching events, oldest first (blocking)."""
        now = time.monotonic()
        self._gaps = {event_id: until for event_id, until in self._gaps.items() if until > now}
        with session_scope(self._engine) as session:
            ids = event_ids_after(session, self._high, also_ids=self._gaps, limit=POLL_BATCH)
            for event_id in ids:
                if self._gaps.pop(event_id, None) is not None:
                    continue
                first_missing = max(self._high + 1, event_id - MAX_TRACKED_GAP)
                for missing in range(first_missing, event_id):
                    self._gaps[missing] = now + self._settle_seconds
                self._high = event_id
            if not ids:
                return []
            return matching_events(
                session,
                ids,
                user_id=self._user_id,
                types=self._types,
                exclude_types=(WEBHOOK_TEST_EVENT,),
            )
