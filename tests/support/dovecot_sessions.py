"""How many IMAP sessions Dovecot held at once, read from its own log.

Dovecot logs `imap-login: ... Login: user=<name>, ..., session=<id>` when a session
is handed to its `imap` process, and `imap(name)<pid><id>: ... Disconnected: ...`
when it ends (logged out, or the client vanished). Replaying those lines in the
order Dovecot wrote them gives the sessions open at every moment, as the server
saw them: no client-side count can claim that.

The two lines come from two processes, and Dovecot's log process may write a
short session's `Disconnected` before its `Login`; such a session was over
before its login line, so it never counts as open.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

_LOGIN = re.compile(r"imap-login: Info: Login: user=<([^>]+)>.*session=<([^>]+)>")
_DISCONNECTED = re.compile(r"imap\([^)]+\)<\d+><([^>]+)>: Info: Disconnected")


@dataclass
class SessionLog:
    """Dovecot's log from the moment this was made: sessions of `users` only."""

    log_file: Path
    users: Collection[str]
    offset: int = 0

    def __post_init__(self) -> None:
        self.offset = self.log_file.stat().st_size

    def lines(self) -> list[str]:
        with self.log_file.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace").splitlines()

    def most_at_once(self) -> int:
        """Return the most sessions of the users that were open at the same time."""
        return len(self.open_at_the_peak())

    def open_at_the_peak(self) -> list[str]:
        """Return the login lines of the sessions open when the most were (the first time)."""
        open_sessions: dict[str, str] = {}
        ended_first: set[str] = set()  # see the module docstring
        peak: list[str] = []
        for line in self.lines():
            if (login := _LOGIN.search(line)) and login.group(1) in self.users:
                if login.group(2) in ended_first:
                    continue
                open_sessions[login.group(2)] = line
                if len(open_sessions) > len(peak):
                    peak = list(open_sessions.values())
            elif (ended := _DISCONNECTED.search(line)) and not open_sessions.pop(
                ended.group(1), None
            ):
                ended_first.add(ended.group(1))
        return peak

    def of_session(self, login_line: str) -> list[str]:
        """Return every line of the session a login line started (for failure output)."""
        login = _LOGIN.search(login_line)
        assert login is not None, f"not a login line: {login_line}"
        return [line for line in self.lines() if f"<{login.group(2)}>" in line]

    def logins(self) -> int:
        """Return how many sessions of the users logged in."""
        return sum(
            1
            for line in self.lines()
            if (login := _LOGIN.search(line)) and login.group(1) in self.users
        )
