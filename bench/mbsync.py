"""`mbsync` (isync) as a peer: what a user pulling mail into a Maildir would run instead of us.

    job.scratch_dir/mbsyncrc   IMAPAccount (implicit TLS, the bench CA) -> IMAPStore
                               MaildirStore -> Channel (Patterns INBOX Sent, Sync Pull)
    job.scratch_dir/maildir/   the Maildir and mbsync's sync state, kept between runs

The first run fills the empty Maildir; a later run on the same `scratch_dir`
pulls what changed since (nothing, or the bench's new mail and flags). mbsync
is a C program started from this child, so the row's peak RSS is mbsync's own,
read by polling `/proc/<pid>/status` (VmHWM, a high-water mark) every few
milliseconds while it runs. `ru_maxrss` of the child would not do: Linux
starts it from the Python parent's peak at exec. mbsync keeps its defaults
(FSync yes: each message is flushed to disk, as a user's mail would be).
Its IMAP commands are counted from one more run with `-Dn` (protocol trace),
outside the timing, and only after a run that fetched no message (the trace
would hold every body).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from time import perf_counter

from bench.child import vm_hwm_kb
from bench.job import Job, Measurement, Server, folder_scoped, median_run

MBSYNC = "mbsync"
_CHANNEL = "bench"
_POLL_SECONDS = 0.005
_TIMEOUT_SECONDS = 3600
_TLS_HOST = "localhost"  # the DNS name on the bench certificate; mbsync checks names, not IPs
_COMMAND_TRACE = ">>> "  # how `mbsync -Dn` prints a command it sends: ">>> 3 SELECT ..."


def config_text(server: Server, folders: tuple[str, ...], maildir: Path) -> str:
    """Return an mbsyncrc that pulls `folders` of the bench user into `maildir`."""
    return f"""\
IMAPAccount {_CHANNEL}
Host {_TLS_HOST}
Port {server.port}
User {server.username}
Pass {server.password}
SSLType IMAPS
CertificateFile {server.ca_file}

IMAPStore {_CHANNEL}-far
Account {_CHANNEL}

MaildirStore {_CHANNEL}-near
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel {_CHANNEL}
Far :{_CHANNEL}-far:
Near :{_CHANNEL}-near:
Patterns {" ".join(folders)}
Create Near
Sync Pull
Expunge None
SyncState *
"""


def _run(config: Path, *options: str) -> tuple[float, int, str]:
    """Run mbsync once; return its wall time, its peak RSS in KB and its stdout."""
    started = perf_counter()
    process = subprocess.Popen(
        [MBSYNC, "-c", str(config), *options, _CHANNEL],
        stdout=subprocess.PIPE if options else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    status = Path(f"/proc/{process.pid}/status")
    peak_kb = 0
    if options:  # a traced run is read to the end, not polled
        out, err = process.communicate(timeout=_TIMEOUT_SECONDS)
    else:
        while process.poll() is None:
            peak_kb = max(peak_kb, vm_hwm_kb(status))
            time.sleep(_POLL_SECONDS)
        out, err = "", process.stderr.read() if process.stderr else ""
    seconds = perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"mbsync exited {process.returncode}: {err.strip()}")
    return seconds, peak_kb, out


def _maildir_contents(maildir: Path) -> tuple[int, int]:
    """Return the number of messages in the Maildir and their size in bytes."""
    files = [path for path in maildir.glob("*/*/*") if path.parent.name in ("cur", "new")]
    return len(files), sum(path.stat().st_size for path in files)


def _traced_commands(config: Path) -> list[str]:
    """Run mbsync once more with a protocol trace and return the IMAP commands it sent."""
    _, _, trace = _run(config, "-Dn")
    commands = []
    for line in trace.splitlines():
        if line.startswith(_COMMAND_TRACE):
            words = line[len(_COMMAND_TRACE) :].upper().split()  # tag, command, arguments
            uid_prefixed = len(words) > 2 and words[1] == "UID"
            commands.append(" ".join(words[1:3]) if uid_prefixed else words[1])
    return commands


def sync_with_mbsync(job: Job) -> Measurement:
    """Pull the job's folders with mbsync into `scratch_dir`, new or filled by an earlier run."""
    if shutil.which(MBSYNC) is None:
        raise RuntimeError(f"{MBSYNC} is not installed (Debian package isync)")
    assert job.scratch_dir is not None
    scratch = Path(job.scratch_dir)
    maildir = scratch / "maildir"
    config = scratch / "mbsyncrc"
    if not maildir.exists():
        maildir.mkdir(parents=True)
        config.write_text(config_text(job.server, job.folders, maildir))
    runs = []
    for _ in range(job.repeat):
        messages_before, size_before = _maildir_contents(maildir)
        seconds, peak_kb, _ = _run(config)
        messages_after, size_after = _maildir_contents(maildir)
        runs.append(
            Measurement(
                seconds,
                messages_after - messages_before,
                size_after - size_before,
                peak_rss_kb=peak_kb,
            )
        )
    run = median_run(runs)
    if run.messages:  # a trace would hold every body it fetched; nothing is left to fetch now
        return run
    commands = _traced_commands(config)
    return Measurement(
        run.seconds,
        run.messages,
        run.bytes,
        command_count=len(commands),
        folder_commands=folder_scoped(commands),
        commands=commands,
        peak_rss_kb=max(r.peak_rss_kb for r in runs),
    )
