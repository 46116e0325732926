"""The benchmark's per-server rows run end to end on a tiny corpus, so they cannot rot.

Real Dovecot, legacy Dovecot, Cyrus and Courier of the test rig, a real SQLite database
per first sync; the assertions are on what the rows report (messages fetched and
stored, commands of a no-change resync, whose row each ratio divides by), never on time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bench.cli import server_rows
from bench.corpus import CorpusSpec
from bench.servers import MatrixServer
from bench.table import Row, Section, render
from tests.support.debian_servers import Courier, Cyrus
from tests.support.dovecot import Dovecot

pytestmark = pytest.mark.slow

SPEC = CorpusSpec(messages=20)
LABELS = ("Dovecot", "legacy Dovecot", "Cyrus", "Courier")


def _rows(section: Section, label: str) -> tuple[Row, Row]:
    reference, ours = (row for row in section.rows if row.title.startswith(f"{label}: "))
    for row in (reference, ours):
        assert row.measurement is not None, f"{row.title} did not run: {row.note}"
    return reference, ours


def test_each_server_gets_a_first_sync_and_a_no_change_row_against_its_own_raw_client(
    dovecot: Dovecot, legacy_dovecot: Dovecot, cyrus: Cyrus, courier: Courier, tmp_path: Path
) -> None:
    servers = [
        MatrixServer("Dovecot", dovecot.add_user),
        MatrixServer("legacy Dovecot", legacy_dovecot.add_user),
        MatrixServer("Cyrus", cyrus.add_user),
        MatrixServer("Courier", courier.add_user, sent="INBOX.Sent"),
    ]
    rows = server_rows(SPEC, Fernet.generate_key().decode(), tmp_path, print)

    fetch, check = rows.sections(servers)

    for label in LABELS:
        raw_fetch, first_sync = _rows(fetch, label)
        assert raw_fetch.measurement is not None and first_sync.measurement is not None
        assert raw_fetch.measurement.messages == SPEC.total, f"{label}: imaplib fetched"
        assert first_sync.measurement.messages == SPEC.total, f"{label}: our first sync stored"
        assert first_sync.reference is raw_fetch.measurement, f"{label}: ratio of another server"
        raw_check, resync = _rows(check, label)
        assert resync.measurement is not None
        assert resync.measurement.messages == 0, f"{label}: the resync found new mail"
        assert resync.measurement.commands[-1] == "LOGOUT"
        assert resync.reference is raw_check.measurement, f"{label}: ratio of another server"
    table = render([], [fetch, check])
    assert "failed" not in table
    assert all(f"{label}: ours first sync" in table for label in LABELS)
