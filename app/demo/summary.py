"""What `make demo` prints once everything runs, in the order a newcomer needs it.

what it started ..... the demo server and its mail, the service, the mailbox, new mail
the settings ........ the two it sets; the one that differs from production, said so
the API key ......... shown once, as `make run` shows its first key
docs, status ........ the interactive API documentation and the status page
curl commands ....... list the synced mail, search the server, flag a message,
                      watch the event stream; pasted after the line that sets
                      API and KEY, they run as printed
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.demo.dovecot import HOST
from app.demo.mail import ADDRESS, FOLDERS, HISTORY_DAYS, DemoMessage
from app.demo.mailbox import SyncedMailbox
from app.demo.service import PRIVATE_HOSTS_SETTING

# Searched on the server: a folder the sync leaves alone.
SEARCH_REQUEST = {"folder": "Archive", "text": "invoice"}


@dataclass(frozen=True)
class DemoFacts:
    """Everything the summary names."""

    directory: Path
    imap_port: int
    ca_file: Path
    history: list[DemoMessage]
    base_url: str
    service_log: Path
    api_key: str
    mailbox: SyncedMailbox
    arrival_seconds: float


def summary(facts: DemoFacts) -> str:
    """Return the text printed once the demo mailbox is synced."""
    per_folder = Counter(message.folder for message in facts.history)
    folders = ", ".join(f"{name} {per_folder[name]}" for name in FOLDERS)
    synced = ", ".join(f"{name} {count}" for name, count in facts.mailbox.synced.items())
    mailbox = facts.mailbox.mailbox_id
    window = Settings.model_fields["sync_window_days"].default
    return f"""\
imap-bridge demo: everything runs on this machine, in {facts.directory}
(removed when you press Ctrl-C; the ./var/ of `make run` is left alone)

started
  Dovecot      {HOST}:{facts.imap_port}, IMAP over TLS with a certificate from a CA made for
               this demo; the account {ADDRESS} holds {len(facts.history)} messages from the
               last {HISTORY_DAYS // 30} months: {folders}
  imap-bridge  `imap-bridge run` as `make run` starts it: the API, one worker and the watcher,
               on SQLite and an embedded Redis in the demo directory; its log:
               {facts.service_log}
  mailbox      {ADDRESS} (id {mailbox}), registered through the API (POST /v1/mailboxes);
               the first sync stored {synced}: the last {window} days of the folders it syncs
  new mail     a new message arrives in the demo INBOX every {facts.arrival_seconds:g} s

settings (every other one is the default of `make run`)
  IMAP_CA_FILE={facts.ca_file}
               trust the demo CA, as for any server with a certificate of its own CA
  {PRIVATE_HOSTS_SETTING}=true
               the one setting that differs from production: it lets the service reach
               the demo server on {HOST} (the SSRF guard refuses private addresses)

API key    {facts.api_key}
API docs   {facts.base_url}/docs
status     {facts.base_url}/status

try it: paste the first line into a shell, then any command below it
{_commands(facts)}
press Ctrl-C to stop everything and remove the demo's files
"""


def curl_commands(mailbox_id: int, email_id: int) -> dict[str, str]:
    """Return the curl commands, by what they show; they expect $API and $KEY set."""
    auth = '-H "Authorization: Bearer $KEY"'
    json_body = '-H "Content-Type: application/json" -d'
    search = shlex.quote(json.dumps(SEARCH_REQUEST))
    flag = shlex.quote(json.dumps({"flagged": True}))
    return {
        "the synced mail, newest first": (
            f'curl -sS "$API/v1/mailboxes/{mailbox_id}/emails?limit=5" {auth}'
        ),
        "search the server itself, here Archive, a folder the sync leaves alone": (
            f'curl -sS -X POST "$API/v1/mailboxes/{mailbox_id}/search" {auth} {json_body} {search}'
        ),
        "flag a message: stored on the server first, then in the local copy": (
            f'curl -sS -X PATCH "$API/v1/emails/{email_id}" {auth} {json_body} {flag}'
        ),
        "the event stream: email.received within seconds of each new message": (
            f'curl -sSN "$API/v1/events?types=email.received" {auth}'
        ),
    }


def _commands(facts: DemoFacts) -> str:
    lines = [f"  API={facts.base_url} KEY={facts.api_key}", ""]
    for purpose, command in curl_commands(facts.mailbox.mailbox_id, facts.mailbox.email_id).items():
        lines += [f"  # {purpose}", f"  {command}", ""]
    return "\n".join(lines)
