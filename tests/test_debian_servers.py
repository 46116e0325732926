"""The private Cyrus and Courier start, take users, and show the quirks their docstrings name."""

from __future__ import annotations

from imapclient import IMAPClient

from tests.support.debian_servers import Courier, Cyrus, PrivateServer
from tests.support.mailgen import make_message


def _greeting_capabilities(server: PrivateServer) -> set[str]:
    client = IMAPClient(server.host, port=server.plain_port, ssl=False, timeout=10)
    try:
        return {c.decode() for c in client.capabilities()}
    finally:
        client.shutdown()


def test_courier_selects_without_uidnext_and_keeps_folders_under_inbox(courier: Courier) -> None:
    user = courier.add_user()
    user.append("INBOX", make_message())
    with user.session() as client:
        selected = client.select_folder("INBOX", readonly=True)
        namespace = client.namespace()
        folders = {name for _flags, _delimiter, name in client.list_folders()}
        capabilities = {c.decode() for c in client.capabilities()}
    assert b"UIDNEXT" not in selected, "Courier sends no UIDNEXT on SELECT"
    assert namespace.personal == (("INBOX.", "."),)
    assert folders == {"INBOX", "INBOX.Sent", "INBOX.Drafts", "INBOX.Trash"}
    assert not {"MOVE", "CONDSTORE", "SPECIAL-USE", "LIST-STATUS"} & capabilities


def test_cyrus_flags_special_use_in_lower_case_and_changes_capabilities_at_login(
    cyrus: Cyrus,
) -> None:
    before = _greeting_capabilities(cyrus)
    user = cyrus.add_user()
    with user.session() as client:
        listed = {name: {f.decode() for f in flags} for flags, _d, name in client.list_folders()}
        after = {c.decode() for c in client.capabilities()}
    assert "\\sent" in listed["Sent"], "autocreated special-use flags are lower case"
    assert "LOGINDISABLED" in after - before
    assert {"CONDSTORE", "QRESYNC", "MOVE"} <= after
