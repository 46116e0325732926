"""Run private Cyrus IMAP and Courier-IMAP servers for the test session, beside Dovecot.

Both come from Debian's packages, but they `Conflict: imap-server` with dovecot-imapd,
so they are never installed: `make servers` downloads the .debs and unpacks them into
`.servers/root` of the checkout (no maintainer script runs, nothing is registered
with dpkg). Each instance runs in a mount namespace of its own (`unshare -m`) where
overlayfs lays the unpacked `/usr` over the real one and gives `/etc` and `/run`
writable upper layers inside the instance's directory: the machine's `/etc`, `/usr`
and `/run` are never written, and the mounts vanish with the namespace. Commands that
must see the same files as the server (adding a user) enter its namespace with
`nsenter`. Each listens on 127.0.0.1 only, in a process group of its own that `stop()`
ends.

    start_courier(workdir) / start_cyrus(workdir) -> server -> add_user() -> ServerUser
                                                           -> stop()
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.support.imap_account import ImapAccount
from tests.support.secret_watch import SecretKind, register_secret

HOST = "127.0.0.1"
SERVERS_ROOT = Path(__file__).resolve().parents[2] / ".servers" / "root"
MAIL_USER = "mail"  # Debian's system account for mail spools; owns every mailbox here
_STARTUP_TIMEOUT = 20.0
_user_numbers = itertools.count(1)

# Lays the unpacked packages over /usr, /etc and /run of this mount namespace only.
_ENTER_ROOT = """\
set -e
root=$1 instance=$2
shift 2
for layer in etc run; do mkdir -p "$instance/$layer/upper" "$instance/$layer/work"; done
mount -t overlay overlay -o "lowerdir=$root/usr:/usr" /usr
mount -t overlay overlay \
  -o "lowerdir=$root/etc:/etc,upperdir=$instance/etc/upper,workdir=$instance/etc/work" /etc
mount -t overlay overlay \
  -o "lowerdir=/run,upperdir=$instance/run/upper,workdir=$instance/run/work" /run
exec "$@"
"""


ServerT = TypeVar("ServerT", bound="PrivateServer")


class ServerError(RuntimeError):
    """A test server failed to start, or a command run beside it failed."""


@dataclass
class PrivateServer:
    """A server running in its own mount namespace; `run` runs a command inside it."""

    name: str
    host: str
    plain_port: int
    root: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def run(self, argv: Sequence[str], stdin: str = "") -> str:
        """Run `argv` in the server's mount namespace (its /usr, /etc, /run) and return stdout."""
        result = subprocess.run(
            ["nsenter", f"--mount=/proc/{self.process.pid}/ns/mnt", *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise ServerError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr}")
        return result.stdout

    def read_log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else "(missing)\n"

    def stop(self) -> None:
        """End the server's whole process group (its listener and every session)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # Children (authdaemond, imapd sessions) may outlive the group's leader.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def _new_account(self, name: str | None, password: str | None) -> tuple[str, str]:
        name = name or f"user{next(_user_numbers)}x{secrets.token_hex(3)}"
        password = password or secrets.token_urlsafe(12)
        register_secret(SecretKind.IMAP_PASSWORD, password, f"{self.name} user {name}")
        return name, password


@dataclass
class ServerUser(ImapAccount):
    """One account on a Cyrus or Courier test server."""

    server: PrivateServer

    def address(self) -> tuple[str, int]:
        return self.server.host, self.server.plain_port


@dataclass
class Courier(PrivateServer):
    """Courier-IMAP 5.0 with Maildir++ folders and a userdb of its own.

    Quirks a client meets (RFC 3501 allows each): SELECT sends no `[UIDNEXT]`;
    NAMESPACE is `(("INBOX." "."))`, every folder lives under `INBOX.` (a CREATE
    outside it is refused); no SPECIAL-USE, CONDSTORE, QRESYNC, MOVE or LIST-EXTENDED,
    so Sent is known by name alone (`INBOX.Sent`); UIDVALIDITY is time based, and
    RENAME gives the folder (and its subfolders) a new one, so a rename cannot be told
    from a delete and a create.
    Debian's default `IMAP_EMPTYTRASH=Trash:7` purges old mail from Trash at login: it
    is turned off here, or old-dated test mail moved to Trash would vanish.
    """

    def add_user(self, name: str | None = None, password: str | None = None) -> ServerUser:
        """Create a Maildir user with INBOX.Sent, INBOX.Drafts and INBOX.Trash (by name only)."""
        name, password = self._new_account(name, password)
        home = self.root / "homes" / name
        for part in ("cur", "new", "tmp"):
            (home / "Maildir" / part).mkdir(parents=True)
        _chown_tree(home)
        hashed = subprocess.run(
            ["openssl", "passwd", "-6", "-stdin"],
            input=password,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        uid, gid = _mail_ids()
        entry = f"{name}\tuid={uid}|gid={gid}|home={home}|mail={home}/Maildir|systempw={hashed}\n"
        self.run(["sh", "-c", "cat >> /etc/courier/userdb && makeuserdb"], stdin=entry)
        user = ServerUser(name=name, password=password, server=self)
        with user.session() as client:
            for folder in ("INBOX.Sent", "INBOX.Drafts", "INBOX.Trash"):
                client.create_folder(folder)
        return user


@dataclass
class Cyrus(PrivateServer):
    """Cyrus IMAP 3.6 with its 3.x defaults: `/` separator, folders beside INBOX.

    Quirks a client meets: the special-use folders autocreated at first login carry
    lower-case flags (`\\sent`, `\\drafts`, `\\trash`; RFC 6154 flags are
    case-insensitive); the greeting's [CAPABILITY] names six, CAPABILITY itself all, and
    login changes them (AUTH=, SASL-IR go, LOGINDISABLED comes, harmless once
    authenticated): read them again after login. UIDVALIDITY is the clock in seconds,
    so folders created within one second share it (RFC 3501 allows that).
    """

    def add_user(self, name: str | None = None, password: str | None = None) -> ServerUser:
        """Create a SASL user; the first login autocreates INBOX, Sent, Drafts and Trash."""
        name, password = self._new_account(name, password)
        self.run(
            ["saslpasswd2", "-p", "-c", "-f", str(self.root / "sasldb2"), "-u", _CYRUS_REALM, name],
            stdin=password,
        )
        user = ServerUser(name=name, password=password, server=self)
        user.client().logout()
        return user


_CYRUS_REALM = "cyrus.test"


def start_courier(workdir: Path) -> Courier:
    """Start authdaemond (userdb only), gam_server and couriertcpd on a free loopback port.

    Without gam_server (gamin) every APPEND and NOOP waits about 1.2 s for it.
    """
    _check_unpacked()
    port = _free_port()
    _prepare(workdir)
    config = workdir / "etc" / "upper" / "courier"
    config.mkdir(parents=True)
    _rewrite(
        SERVERS_ROOT / "etc/courier/authdaemonrc",
        config / "authdaemonrc",
        {"authmodulelist": '"authuserdb"', "daemons": "1"},
    )
    _rewrite(SERVERS_ROOT / "etc/courier/imapd", config / "imapd", {"IMAP_EMPTYTRASH": ""})
    uid, gid = _mail_ids()
    script = f"""\
set -a; . /etc/courier/authdaemonrc; . /etc/courier/imapd; set +a
mkdir -p /run/courier/authdaemon
touch /etc/courier/userdb && chmod 600 /etc/courier/userdb && makeuserdb
setpriv --reuid={uid} --regid={gid} --clear-groups /usr/libexec/gam_server &
/usr/lib/courier/courier-authlib/authdaemond &
exec couriertcpd -address={HOST} -maxprocs=60 -maxperip=60 -nodnslookup -noidentlookup \
  {port} /usr/lib/courier/courier/imaplogin /usr/bin/imapd Maildir
"""
    return _start(Courier, "courier", workdir, port, ["sh", "-c", script])


def start_cyrus(workdir: Path) -> Cyrus:
    """Start Cyrus's master with an imapd.conf and cyrus.conf of the instance's own.

    Every path it writes is in `workdir`; it runs as `mail` and logs to syslog only.
    """
    _check_unpacked()
    port = _free_port()
    _prepare(workdir)
    for part in ("lib", "spool", "state/proc", "state/lock", "state/socket"):
        (workdir / part).mkdir(parents=True)
    imapd_conf = workdir / "imapd.conf"
    imapd_conf.write_text(f"""\
configdirectory: {workdir / "lib"}
partition-default: {workdir / "spool"}
defaultpartition: default
proc_path: {workdir / "state/proc"}
mboxname_lockpath: {workdir / "state/lock"}
idlesocket: {workdir / "state/socket/idle"}
notifysocket: {workdir / "state/socket/notify"}
lmtpsocket: {workdir / "state/socket/lmtp"}
servername: {_CYRUS_REALM}
cyrus_user: {MAIL_USER}
altnamespace: yes
unixhierarchysep: yes
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {workdir / "sasldb2"}
sasl_mech_list: PLAIN LOGIN
autocreate_quota: 0
autocreate_inbox_folders: Sent|Drafts|Trash
autocreate_subscribe_folders: Sent|Drafts|Trash
xlist-sent: Sent
xlist-drafts: Drafts
xlist-trash: Trash
syslog_prefix: cyrus-test
""")
    (workdir / "cyrus.conf").write_text(f"""\
START {{
  recover cmd="ctl_cyrusdb -C {imapd_conf} -r"
}}
SERVICES {{
  imap cmd="imapd -C {imapd_conf}" listen="{HOST}:{port}" prefork=1 maxchild=100
}}
EVENTS {{
}}
""")
    sasldb = workdir / "sasldb2"
    sasldb.touch(mode=0o600)
    _chown_tree(workdir / "lib", workdir / "spool", workdir / "state", sasldb)
    argv = ["/usr/lib/cyrus/bin/master", "-C", str(imapd_conf), "-M", str(workdir / "cyrus.conf")]
    return _start(Cyrus, "cyrus", workdir, port, argv)


def _start(
    kind: Callable[..., ServerT], name: str, workdir: Path, port: int, argv: list[str]
) -> ServerT:
    log = (workdir / "server.log").open("wb")
    enter_root = ["unshare", "-m", "sh", "-c", _ENTER_ROOT, "enter-root", str(SERVERS_ROOT)]
    process = subprocess.Popen(
        [*enter_root, str(workdir), *argv],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stop() ends every child with it
    )
    server = kind(name=name, host=HOST, plain_port=port, root=workdir, process=process)
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    while not _greets(HOST, port):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise ServerError(f"{name} did not start:\n{server.read_log()}")
        time.sleep(0.05)
    return server


class PrivateServers:
    """Start Courier and Cyrus on first use, once per test session; stop both at the end."""

    def __init__(self) -> None:
        self._running: dict[str, PrivateServer] = {}

    def courier(self) -> Courier:
        server = self._get("courier", start_courier)
        assert isinstance(server, Courier)
        return server

    def cyrus(self) -> Cyrus:
        server = self._get("cyrus", start_cyrus)
        assert isinstance(server, Cyrus)
        return server

    def _get(self, name: str, start: Callable[[Path], PrivateServer]) -> PrivateServer:
        if name not in self._running:
            workdir = Path(tempfile.mkdtemp(prefix=name[:2]))
            try:
                self._running[name] = start(workdir)
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
        return self._running[name]

    def stop_all(self) -> None:
        running = list(self._running.values())
        self._running.clear()
        for server in running:
            server.stop()
            shutil.rmtree(server.root, ignore_errors=True)


def _check_unpacked() -> None:
    if not (SERVERS_ROOT / "usr/lib/cyrus/bin/master").exists():
        raise ServerError(f"{SERVERS_ROOT} holds no unpacked servers: run `make servers` first")


def _prepare(workdir: Path) -> None:
    """Let `mail` reach the instance's homes and spools below the root-owned directory."""
    workdir.chmod(0o711)
    (workdir / "homes").mkdir()
    _chown_tree(workdir / "homes")


def _mail_ids() -> tuple[int, int]:
    entry = pwd.getpwnam(MAIL_USER)
    return entry.pw_uid, entry.pw_gid


def _chown_tree(*paths: Path) -> None:
    for path in paths:
        for item in [path, *path.rglob("*")]:
            shutil.chown(item, user=MAIL_USER, group=MAIL_USER)


def _rewrite(source: Path, target: Path, settings: dict[str, str]) -> None:
    """Copy a shell-style config file, replacing the value of each `NAME=` line in `settings`."""
    lines = []
    for line in source.read_text().splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={settings[key]}" if key in settings and "=" in line else line)
    target.write_text("\n".join(lines) + "\n")


def _greets(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as raw:
            return raw.recv(64).startswith(b"* OK")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port
