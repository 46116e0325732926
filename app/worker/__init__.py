"""The arq worker: a cron that queues the mailboxes that are due, and the job that syncs one.


    the process (`imap-bridge worker`, `imap-bridge run`): app.supervised_worker
    cron, every minute (one worker per tick) ... queue `sync` for each mailbox whose
                                                 `next_sync_at` passed; the job id makes
                                                 a second enqueue a no-op
    sync job
      its run already finished (redelivery) .... done: arq delivers at least once
      queued by the cron, no longer due ........ done: synced since the cron read the list
      marked in progress for 2/3 of SYNC_LEASE_SECONDS, renewed while it runs: a
        killed worker's job goes to another worker that soon, not after arq's timeout
      sync_mailbox in a thread
        lease held elsewhere, no run id ........ done: the holder is syncing it
        lease held elsewhere, a queued run ..... (the API's, with its run id) Retry every
                                                 30 s for as long as a crashed holder's
                                                 lease can last, then the run fails with
                                                 error code `busy`
        the database does not answer ........... Retry in 2 s, doubling to 60 s; a run
                                                 the engine could record as failed
                                                 (`database_unavailable`) is over: the
                                                 retry makes a new one, unless the API
                                                 asked for that run (the schedule then
                                                 retries the mailbox)
        time budget spent (incomplete) ......... a follow-up job is queued as soon as
                                                 this one has left the queue
        done ................................... the engine set `next_sync_at`
      watched (queued by the watcher) .......... take the changed folders (app.job_queue) and
                                                 sync only those; lease held or the budget
                                                 spent: the folders go back; at the end a
                                                 follow-up is queued if any are waiting
      queue the dispatcher ..................... Redis down: wait for it (1 s doubling to
                                                 10 s), so that arq can record the job's
                                                 end once it answers

Notifications: a `dispatch_events` job (app.notify.dispatcher) is queued after
every sync job, whose events are committed by then, and runs as a cron every
10 seconds for the events other processes wrote and the retries that fell due.

The schedule lives in the database, not in the cron: the engine sets
`next_sync_at` after every run (the interval after a success, a backoff after a
failure, now when the time budget ran out), so a changed
`SYNC_INTERVAL_MINUTES` needs no restart and failed mailboxes retry on their
backoff. A follow-up that is lost (the worker died between the two steps) is
picked up by the next tick, since the mailbox is due.

A worker process runs `SYNC_MAX_JOBS` jobs at once. How many of them talk to
one IMAP host is the connection budget's business (app.connection_budget),
shared by every process: a sync waits for a slot there, holding one of the
`SYNC_MAX_JOBS`. Right after a Redis outage a process may run more jobs for a
while (the replaced arq Worker's, finishing, and the new one's), but never
more threads: that limit belongs to the process, not to an arq Worker.

The package: `settings` (the arq Worker's arguments: jobs, crons, limits),
`state` (what the process keeps between jobs), `sync_job` (the job drawn
above and its follow-up), `cron_jobs` (the due mailboxes, the outbox).
"""

from app.worker.settings import WorkerSettings, worker_settings
from app.worker.state import JobContext

__all__ = ["JobContext", "WorkerSettings", "worker_settings"]
