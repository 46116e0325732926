"""The benchmark's cron-path rows run end to end on a few mailboxes, so they cannot rot.

Real Dovecot users, real databases, real `imap-bridge worker` and `imap-bridge serve`
processes on the machine's Redis; the assertions are on what the rows report the
workers did (runs recorded in the database, answers the API gave), never on time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bench.cli import Target
from bench.corpus import CorpusSpec
from bench.fleet import LOAD_CLIENTS, LOAD_MESSAGES, SCALE_MESSAGES, FleetRows
from bench.job import Measurement, Server
from bench.load import MIX
from bench.scale import error_lines
from bench.table import FleetSection, LatencySection, worker_peaks_kb
from tests.support.databases import ThrowawayDatabases, throwaway_databases
from tests.support.dovecot import Dovecot
from tests.support.redis_queue import TEST_REDIS_URL, delete_queue

pytestmark = pytest.mark.slow

MAILBOXES = 5
SCALE_MAIL = CorpusSpec(messages=SCALE_MESSAGES).total  # what each mailbox holds
LOAD_MAIL = CorpusSpec(messages=LOAD_MESSAGES).total


@pytest.fixture
def fleet_rows(dovecot: Dovecot, queue_name: str, tmp_path: Path) -> Iterator[FleetRows]:
    """The rows as `python -m bench` builds them, with two jobs per worker and host."""
    secret_key = Fernet.generate_key().decode()
    server = Server(dovecot.host, dovecot.tls_port, str(dovecot.ca_file), "", "")
    runner = Target(server, secret_key, tmp_path)  # only its child runner is used
    yield FleetRows(
        dovecot=dovecot,
        secret_key=secret_key,
        work=tmp_path,
        measure=runner.try_measure,
        say=print,
        redis_url=TEST_REDIS_URL,
        queue_name=queue_name,
        sync_start=CorpusSpec().start.date() - timedelta(days=1),
        seed=CorpusSpec().seed,
        max_jobs=2,
        connections_per_host=2,
    )
    delete_queue(TEST_REDIS_URL, queue_name)  # each row's queue is `<queue_name>-<row>`


def _measured(section: FleetSection | LatencySection, title: str) -> Measurement:
    assert isinstance(section, FleetSection)
    row = next(row for row in section.rows if row.title == title)
    assert row.measurement is not None, f"{title}: {row.note}"
    return row.measurement


def _assert_every_mailbox_synced(cycle: Measurement, new_messages: int, scratch: Path) -> None:
    """`scratch`: the row's folder, where its workers' logs are."""
    figures = cycle.figures
    assert figures["mailboxes"] == MAILBOXES
    assert figures["succeeded"] == MAILBOXES
    assert figures["runs"] >= MAILBOXES
    assert cycle.messages == new_messages
    errors = error_lines(sorted(scratch.glob("worker-*.log")))
    assert figures["log errors"] == len(errors) == 0, "the workers logged:\n" + "\n".join(errors)
    assert figures["unfinished"] == figures["failed runs"] == figures["errors"] == 0, figures
    assert len(worker_peaks_kb(figures)) == 2
    assert all(peak > 0 for peak in worker_peaks_kb(figures))


def test_scale_rows_sync_every_mailbox_then_find_nothing_new(
    fleet_rows: FleetRows, databases: ThrowawayDatabases, tmp_path: Path
) -> None:
    section = fleet_rows.scale(MAILBOXES, [("backend", databases)])

    reference = section.rows[0]
    assert reference.title.endswith("(reference)")
    assert reference.measurement is not None
    assert reference.measurement.figures["succeeded"] == MAILBOXES
    assert reference.measurement.figures["errors"] == 0
    _assert_every_mailbox_synced(
        _measured(section, "first cycle, backend"),
        MAILBOXES * SCALE_MAIL,
        tmp_path / "scale-backend-first",
    )
    no_change = _measured(section, "no-change cycle, backend")
    _assert_every_mailbox_synced(no_change, 0, tmp_path / "scale-backend-no-change")
    assert "target under 60 s" in section.rows[-1].note


def test_load_row_answers_every_request_while_every_mailbox_syncs(
    fleet_rows: FleetRows, tmp_path: Path
) -> None:
    with throwaway_databases("postgresql", tmp_path / "databases") as postgres:
        syncs, api = fleet_rows.load(MAILBOXES, "PostgreSQL", postgres)

    _assert_every_mailbox_synced(
        _measured(syncs, "first cycle, no API load (reference)"),
        MAILBOXES * LOAD_MAIL,
        tmp_path / "load-reference",
    )
    loaded = _measured(syncs, f"first cycle, {LOAD_CLIENTS} API clients")
    _assert_every_mailbox_synced(loaded, MAILBOXES * LOAD_MAIL, tmp_path / "load")
    assert isinstance(api, LatencySection)
    assert [row.title.split(":")[0] for row in api.rows[1:]] == [e.name for e in MIX]
    assert all(row.requests > 0 and row.errors == 0 for row in api.rows)
    assert loaded.figures["api errors"] == 0
    assert loaded.figures["api peak RSS kB"] > 0
