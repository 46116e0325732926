"""Start-up rows: how long a command takes before it does anything, beside a bare Python.

Each row runs its command STARTUP_REPEAT times in a fresh process and reports the
median wall time and, in its figures, the median CPU time (user + system) of the
child. On a loaded machine the wall time waits for a core; the CPU time does not,
so the CPU ratios to `python -c pass` (measured in the same run) are the figures to
compare between runs.

    python -c pass (reference)       the interpreter alone
    imap-bridge --help               the CLI's parser: no ORM, web framework or engine
    python -c "import app.imap"      the IMAP layer as a library
    imap-bridge sync --mailbox ID    a no-change sync of the bench mailbox, start to exit
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path
from time import perf_counter

from bench.job import Job, Measurement, service_environment

STARTUP_REPEAT = 10
IMAP_BRIDGE = str(Path(sys.executable).with_name("imap-bridge"))
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


def time_command(command: list[str], environment: dict[str, str], repeat: int) -> Measurement:
    """Run `command` `repeat` times; median wall seconds, median CPU seconds in the figures."""
    walls: list[float] = []
    cpus: list[float] = []
    peaks_kb: list[int] = []
    for _ in range(repeat):
        started = perf_counter()
        process = subprocess.Popen(
            command,
            cwd=_PROJECT_ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        errors = process.stderr.read()
        _pid, status, usage = os.wait4(process.pid, 0)
        walls.append(perf_counter() - started)
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if process.returncode != 0:
            raise RuntimeError(f"{command} exited {process.returncode}: {errors.decode()[-2000:]}")
        cpus.append(usage.ru_utime + usage.ru_stime)
        peaks_kb.append(usage.ru_maxrss)  # the command's own peak, in kB on Linux
    return Measurement(
        statistics.median(walls),
        0,
        0,
        peak_rss_kb=max(peaks_kb),
        figures={"cpu s": statistics.median(cpus), "runs": repeat},
    )


def bare_python(job: Job) -> Measurement:
    return time_command([sys.executable, "-c", "pass"], dict(os.environ), job.repeat)


def cli_help(job: Job) -> Measurement:
    return time_command([IMAP_BRIDGE, "--help"], dict(os.environ), job.repeat)


def import_imap(job: Job) -> Measurement:
    return time_command([sys.executable, "-c", "import app.imap"], dict(os.environ), job.repeat)


def cli_sync(job: Job) -> Measurement:
    """`imap-bridge sync --mailbox ID` on the job's database, configured as an operator would."""
    assert job.mailbox_id is not None
    command = [IMAP_BRIDGE, "sync", "--mailbox", str(job.mailbox_id)]
    return time_command(command, service_environment(job), job.repeat)
