"""Run the demo's IMAP server: a private Dovecot on loopback, serving one account over TLS.

    start_demo_dovecot(root)   write a CA and certificate, dovecot.conf, the account;
                               start `dovecot -F` in its own process group; wait for
                               the TLS greeting
    DemoDovecot.append(...)    store messages in the account's folders (APPEND)
    DemoDovecot.stop()         SIGTERM: the master stops every process it started

Everything lives under `root` (its own `base_dir`, `state_dir`, log, passwd-file
and home), it listens on 127.0.0.1 only and on TLS only, so a system Dovecot is
never touched. Dovecot's mail processes run as Debian's unprivileged `dovecot`
account, which must be able to reach `root` (the usual temporary directory is fine).
Its own process group keeps a terminal's Ctrl-C away from it: the demo stops
it after the service, in that order.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from imapclient import IMAPClient

from app.demo.certificates import write_demo_tls
from app.demo.mail import DemoMessage

DOVECOT_BIN = "/usr/sbin/dovecot"
HOST = "127.0.0.1"
ACCOUNT = "demo"
_MAIL_USER = "dovecot"  # Debian's unprivileged Dovecot account; owns the mailbox
_FOLDERS = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Archive": "\\Archive"}
_START_SECONDS = 20.0
_STOP_SECONDS = 15.0


class DemoServerError(RuntimeError):
    """The demo's Dovecot could not start; the message says why."""


@dataclass
class DemoDovecot:
    """The running server and the account the demo registers."""

    root: Path
    port: int
    ca_file: Path
    password: str = field(repr=False)
    process: subprocess.Popen[bytes] = field(repr=False)

    @contextmanager
    def _session(self) -> Iterator[IMAPClient]:
        """Log in to the account over TLS (verified against the demo CA); log out after."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        client = IMAPClient(HOST, port=self.port, ssl=True, ssl_context=context, timeout=30)
        try:
            client.login(ACCOUNT, self.password)
            yield client
        finally:
            try:
                client.logout()
            except (IMAPClient.Error, OSError):
                client.shutdown()

    def append(self, messages: Sequence[DemoMessage]) -> None:
        """Store `messages` with their dates and flags: one MULTIAPPEND per folder (RFC 3502).

        A folder the server does not have yet is created first.
        """
        with self._session() as client:
            existing = {name for _flags, _delimiter, name in client.list_folders()}
            for folder in dict.fromkeys(message.folder for message in messages):
                if folder not in existing:
                    client.create_folder(folder)
                client.multiappend(
                    folder,
                    [
                        {"msg": message.raw, "flags": message.flags, "date": message.date}
                        for message in messages
                        if message.folder == folder
                    ],
                )

    def stop(self) -> None:
        """Stop the master, which stops every process it started; kill it if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_demo_dovecot(root: Path) -> DemoDovecot:
    """Start Dovecot in `root` (an empty directory the `dovecot` account can reach)."""
    if not os.access(DOVECOT_BIN, os.X_OK):
        raise DemoServerError(f"{DOVECOT_BIN} is missing; `make demo` installs it with apt-get")
    if os.geteuid() != 0:
        raise DemoServerError(
            "the demo's Dovecot needs root, as the tests' does: it runs its mail processes"
            f" as the {_MAIL_USER!r} account"
        )
    mail_user = _mail_user()
    _check_reachable(root, mail_user)
    root.chmod(0o711)  # the mail processes run as `dovecot` and must reach the home below
    tls_dir = root / "tls"
    tls_dir.mkdir(mode=0o700)
    tls = write_demo_tls(tls_dir, HOST)
    home = root / "home"
    home.mkdir(mode=0o700)
    shutil.chown(home, user=_MAIL_USER, group=_MAIL_USER)
    password = secrets.token_urlsafe(16)
    users = root / "users"
    users.write_text(f"{ACCOUNT}:{{PLAIN}}{password}::::{home}::\n")
    users.chmod(0o640)
    shutil.chown(users, group=_MAIL_USER)
    port = free_loopback_port()
    config = root / "dovecot.conf"
    config.write_text(_config(root, port, tls.server_certificate, tls.server_key, users))
    with (root / "master.out").open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 - a fixed command line
            [DOVECOT_BIN, "-F", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    server = DemoDovecot(
        root=root, port=port, ca_file=tls.ca_file, password=password, process=process
    )
    try:
        _wait_for_greeting(server)
    except BaseException:
        server.stop()
        raise
    return server


def _config(root: Path, port: int, certificate: Path, key: Path, users: Path) -> str:
    """Return dovecot.conf (Dovecot 2.3): IMAP over TLS on 127.0.0.1, one passwd-file account."""
    mailboxes = "".join(
        f"  mailbox {name} {{\n    special_use = {use}\n    auto = subscribe\n  }}\n"
        for name, use in _FOLDERS.items()
    )
    return f"""\
base_dir = {root / "run"}
state_dir = {root / "state"}
instance_name = imap-bridge-demo
log_path = {root / "dovecot.log"}
protocols = imap
listen = {HOST}
default_internal_user = {_MAIL_USER}
default_login_user = dovenull
ssl = required
ssl_cert = <{certificate}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
mail_uid = {_MAIL_USER}
mail_gid = {_MAIL_USER}
first_valid_uid = 1
first_valid_gid = 1
mail_location = sdbox:~/mail
mail_fsync = never
# Past the kernel's inotify limit per uid (shared by every Dovecot on the machine) an
# idling session polls its mailbox at this interval instead (default 30 s).
mailbox_idle_check_interval = 1 secs
namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
"""


def _mail_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(_MAIL_USER)
    except KeyError:
        raise DemoServerError(
            f"no {_MAIL_USER!r} account: install Dovecot (`make demo` does it with apt-get)"
        ) from None


def _check_reachable(root: Path, mail_user: pwd.struct_passwd) -> None:
    """Refuse a directory the `dovecot` account cannot enter (a 0700 home on the way)."""
    for parent in root.resolve().parents:
        status = parent.stat()
        if status.st_uid == mail_user.pw_uid:
            bit = stat.S_IXUSR
        elif status.st_gid == mail_user.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not status.st_mode & bit:
            raise DemoServerError(
                f"the {_MAIL_USER!r} account cannot reach {root} (blocked at {parent});"
                " set TMPDIR to a directory it can reach"
            )


def free_loopback_port() -> int:
    """Return a port free on 127.0.0.1 now (a listener started soon after will likely get it)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_greeting(server: DemoDovecot) -> None:
    """Return once the TLS listener greets; raise with the log if the master exits or stalls."""
    context = ssl.create_default_context(cafile=str(server.ca_file))
    deadline = time.monotonic() + _START_SECONDS
    while not _greets(server.port, context):
        if server.process.poll() is not None or time.monotonic() > deadline:
            log = server.root / "dovecot.log"
            output = server.root / "master.out"
            raise DemoServerError(
                f"Dovecot did not start (exit status {server.process.poll()}):\n"
                + "".join(
                    path.read_text(errors="replace") for path in (output, log) if path.exists()
                )
            )
        time.sleep(0.05)


def _greets(port: int, context: ssl.SSLContext) -> bool:
    try:
        with (
            socket.create_connection((HOST, port), timeout=2) as raw,
            context.wrap_socket(raw, server_hostname=HOST) as wrapped,
        ):
            return wrapped.recv(64).startswith(b"* OK")
    except OSError:
        return False
