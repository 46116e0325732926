"""Who holds a lease: a name for this process, and whether a named holder is gone.

    <hostname>:<pid>:<machine>:<start>:<random>

`machine` is the kernel's boot id and this process's PID namespace, `start` the
process's start time in clock ticks since boot (/proc/<pid>/stat, field 22). A
claimant on the same machine (same boot, same PID namespace) can then tell a
crashed holder at once: its pid no longer exists, is a zombie, or belongs to a
process started at another time (the pid was reused). Anything else (another
machine or container, a name in another format, no /proc) counts as alive:
that lease is left to expire.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_PROC = Path("/proc")
_UNKNOWN = "-"


@dataclass(frozen=True, slots=True)
class _Process:
    start: str  # clock ticks since boot
    zombie: bool


def worker_identity() -> str:
    """Name this process as a lease holder (see the module docstring)."""
    pid = os.getpid()
    process = _process(pid)
    start = process.start if process is not None else _UNKNOWN
    return f"{socket.gethostname()}:{pid}:{_machine()}:{start}:{uuid.uuid4().hex[:8]}"


def holder_is_gone(owner: str) -> bool:
    """Say whether `owner` is a process of this machine that no longer runs."""
    parts = owner.split(":")
    if len(parts) != 5:
        return False
    _host, pid_text, machine, start, _suffix = parts
    if machine != _machine() or machine == _UNKNOWN or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # this process: another of its threads holds the lease
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: it exists
        pass
    process = _process(pid)
    if process is None:
        return False
    return process.zombie or start not in {_UNKNOWN, process.start}  # else: pid reused


@cache
def _machine() -> str:
    """Boot id and PID namespace: pids mean the same process only where both agree."""
    try:
        boot = (_PROC / "sys/kernel/random/boot_id").read_text().strip()[:8]
        namespace = os.readlink(_PROC / "self/ns/pid").removeprefix("pid:[").rstrip("]")
    except OSError:
        return _UNKNOWN
    return f"{boot}.{namespace}"


def _process(pid: int) -> _Process | None:
    """Read a process's state and start time from /proc (None: gone or no /proc)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # `comm` (field 2) is parenthesised and may hold spaces or parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    return _Process(start=fields[19], zombie=fields[0] in {"Z", "X"})
