"""Keep a running sync's lease alive while IMAP works, so the lease itself can be short.

    every third of SYNC_LEASE_SECONDS, in a thread of its own, until the run ends:
      renew the lease (UPDATE ... WHERE lease_owner = this run) --- renewed: again
                                                               --- another holds it: stop;
        the run's next write fails its own lease check (`Lease.hold`) and the run ends
        `lease_lost` without writing more
      the database does not answer -------------------------------- try again next beat;
        the lease lapses if the outage outlasts it, as a crashed holder's does

Each write transaction of the run renews the lease as well; the heartbeat covers
the long stretches without one (a large FETCH, a slow server, the login).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from types import TracebackType

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from app.db import session_scope
from app.db.models import utcnow
from app.db.repositories.mailboxes import renew_lease
from app.sync.lease import Lease

log = logging.getLogger(__name__)


class LeaseHeartbeat:
    """Renew `lease` every third of its length for as long as the `with` block runs."""

    def __init__(self, engine: Engine, lease: Lease) -> None:
        self._engine = engine
        self._lease = lease
        self._interval = lease.duration.total_seconds() / 3
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,  # its lines carry the run's correlation id
            args=(self._beat,),
            name=f"lease-heartbeat-{lease.mailbox_id}",
            daemon=True,
        )

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopped.set()
        self._thread.join()

    def _beat(self) -> None:
        lease = self._lease
        while not self._stopped.wait(self._interval):
            try:
                with session_scope(self._engine) as session:
                    held = renew_lease(
                        session, lease.mailbox_id, lease.owner, utcnow(), lease.duration
                    )
            except SQLAlchemyError as exc:
                log.info(
                    "sync.lease_renewal_failed",
                    extra={"mailbox_id": lease.mailbox_id, "error": type(exc).__name__},
                )
                continue
            if not held:  # taken over, or given back by the run's last transaction
                return
