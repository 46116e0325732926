"""The server matrix's rows: our first sync and no-change resync on each server of the rig.

    generate the corpus once
    -> per server, started on first use by the test rig's code (tests.support.dovecot,
       tests.support.debian_servers): one user, the corpus stored with APPEND (Cyrus ignores
       files dropped into its spool), then over plain IMAP:
       imaplib UID FETCH of INBOX + Sent (reference) -> ours first sync, SQLite, all mail
       imapclient STATUS per folder (reference)      -> ours no-change resync of that database

Each of our rows is divided by the raw client's row against the same server and the
same messages, measured just before it; comparing across servers compares the servers
as much as us. Plain IMAP because the rig's Cyrus and Courier listen without TLS.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace

from bench.corpus import CorpusMessage, CorpusSpec, generate, load
from bench.job import Job, Measurement, Server
from bench.table import Ratio, Row, Section
from tests.support.databases import ThrowawayDatabases
from tests.support.debian_servers import PrivateServers
from tests.support.dovecot import DovecotInstances
from tests.support.imap_account import ImapAccount

SERVER_MESSAGES = 2_000  # INBOX of each server; Sent gets a twentieth
REPEAT = 3  # imaplib's fetch and each check are the median of this many runs
CORPUS_FOLDERS = 2  # INBOX and Sent, whatever the server calls them
_NO_REFERENCE = Measurement(seconds=0, messages=0, bytes=0)  # its row's ratio reads "-"


@dataclass(frozen=True, slots=True)
class MatrixServer:
    """A server of the rig: its name in the table, how to get a new user, its Sent folder."""

    label: str
    add_user: Callable[[], ImapAccount]
    sent: str = "Sent"

    def folders(self) -> tuple[str, ...]:
        return ("INBOX", self.sent)


def matrix_servers(cleanup: ExitStack) -> list[MatrixServer]:
    """The four servers of the test matrix, each started when its first user is added.

    `cleanup` stops whichever were started and deletes their directories.
    """
    dovecots = DovecotInstances()
    cleanup.callback(dovecots.stop_all)
    private = PrivateServers()
    cleanup.callback(private.stop_all)
    return [
        MatrixServer("Dovecot", lambda: dovecots.get().add_user()),
        MatrixServer(
            "legacy Dovecot",  # no CONDSTORE/QRESYNC, no UNSELECT
            lambda: dovecots.get(condstore=False, unselect=False).add_user(),
        ),
        MatrixServer("Cyrus", lambda: private.cyrus().add_user()),
        MatrixServer("Courier", lambda: private.courier().add_user(), sent="INBOX.Sent"),
    ]


@dataclass(frozen=True, slots=True)
class ServerRows:
    """Measure the per-server rows into two sections, through the bench's child runner.

    `measure` runs a job in a child process and returns its measurement or why it
    failed; `new_sync_job` registers a server's user in a new database and returns
    the job of its first sync.
    """

    spec: CorpusSpec
    measure: Callable[[Job], Measurement | str]
    new_sync_job: Callable[[Server, ThrowawayDatabases], Job]
    databases: ThrowawayDatabases
    say: Callable[[str], None]

    def sections(self, servers: list[MatrixServer]) -> list[Section]:
        self.say(f"generating {self.spec.total:,} messages for every server")
        rendered = list(generate(self.spec))  # once: rendering costs more than storing
        counts = f"{self.spec.messages:,} INBOX + {self.spec.total - self.spec.messages:,} Sent"
        fetch = Section(f"First sync over plain IMAP, per server, {counts} messages", Ratio.RATE)
        check = Section("No-change check over plain IMAP, per server", Ratio.TIME)
        for server in servers:
            self._server(server, rendered, fetch, check)
        return [fetch, check]

    def _server(
        self,
        matrix: MatrixServer,
        rendered: list[CorpusMessage],
        fetch: Section,
        check: Section,
    ) -> None:
        label = matrix.label
        try:
            user = matrix.add_user()
            self.say(f"{label}: storing {self.spec.total:,} messages")
            corpus = load(self.spec, user, sent=matrix.sent, rendered=rendered)
        except Exception as exc:  # a server that does not start fails its rows, not the bench
            self.say(f"FAILED: {label}: {exc}")
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            for section in (fetch, check):
                section.rows.append(Row(f"{label}: all rows", 0, None, reason, outcome="failed"))
            return
        self.say(f"{label}: stored {corpus.megabytes:.1f} MB in {corpus.seconds:.1f} s")
        host, port = user.address()
        server = Server(host, port, "", user.name, user.password)
        folders = matrix.folders()
        raw_fetch = self._row(
            fetch,
            f"{label}: imaplib UID FETCH x500 (reference)",
            Job("bench.peers:fetch_with_imaplib", server, folders, repeat=REPEAT),
        )
        first_sync = self.new_sync_job(server, self.databases)
        if self._row(fetch, f"{label}: ours first sync, SQLite", first_sync, raw_fetch) is None:
            check.rows.append(Row(f"{label}: all rows", 0, None, "no first sync", outcome="failed"))
            return
        raw_check = self._row(
            check,
            f"{label}: imapclient STATUS per folder (reference)",
            Job("bench.peers:check_with_imapclient", server, folders, repeat=REPEAT),
        )
        self._row(
            check,
            f"{label}: ours no-change resync (median of {REPEAT})",
            replace(first_sync, repeat=REPEAT),
            raw_check,
        )

    def _row(
        self, section: Section, title: str, job: Job, *against: Measurement | None
    ) -> Measurement | None:
        """Measure one row, divided by `against` (no ratio if that failed), else by itself."""
        self.say(f"measuring: {title}")
        measured = self.measure(job)
        if isinstance(measured, str):
            self.say(f"FAILED: {title}: {measured}")
            section.rows.append(Row(title, CORPUS_FOLDERS, None, measured, outcome="failed"))
            return None
        reference = (against[0] or _NO_REFERENCE) if against else measured
        # Our no-change rows name their commands, as the bench mailbox's do.
        named = against and section.ratio is Ratio.TIME and measured.commands
        note = f"IMAP commands {' '.join(measured.commands)}" if named else ""
        section.rows.append(Row(title, CORPUS_FOLDERS, measured, note, reference=reference))
        return measured
