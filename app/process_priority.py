"""Lower the CPU priority of a process that only does background work.

On a host where `imap-bridge worker` shares the cores with `imap-bridge serve`
(or anything else answering people), parsing and storing mail should mostly
wait for them: a first sync keeps a core busy for minutes, and at the same
priority it adds its time slices to every API answer. At niceness 10 the
kernel gives the worker about a tenth of a core that a process at 0 also
wants, and all of it when nobody else does.
"""

from __future__ import annotations

import os


def lower_cpu_priority(niceness: int) -> None:
    """Raise this process's niceness to at least `niceness`; never lower it.

    A process already started nicer (by `nice`, a systemd `Nice=`) stays as nice.
    Call it before the process starts threads: on Linux each thread has a niceness
    of its own, which the threads it starts inherit.
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness > current:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
