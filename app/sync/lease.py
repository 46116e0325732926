"""The mailbox lease a sync run holds, and the transactions that commit only under it.

A run's every write transaction first renews the lease in the same
transaction (`Lease.writing`): a worker that lost the mailbox to another one
(its lease expired during a long stall) fails that transaction, writes nothing
more and ends `lease_lost` (app.sync.heartbeat renews it between writes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.db import session_scope
from app.db.models import utcnow
from app.db.repositories.mailboxes import renew_lease
from app.sync.errors import LeaseLostError


@dataclass(frozen=True, slots=True)
class Lease:
    """The mailbox lease a run holds; each transaction it commits first proves it still does."""

    mailbox_id: int
    owner: str
    duration: timedelta

    def hold(self, session: Session) -> None:
        """Renew the lease in `session`'s transaction; raise if another worker took it."""
        if not renew_lease(session, self.mailbox_id, self.owner, utcnow(), self.duration):
            raise LeaseLostError(f"mailbox {self.mailbox_id} was taken over by another worker")

    @contextmanager
    def writing(self, engine: Engine) -> Iterator[Session]:
        """A transaction that commits only while the run still holds this lease."""
        with session_scope(engine) as session:
            self.hold(session)
            yield session
