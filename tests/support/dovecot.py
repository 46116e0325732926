"""Run a private, real Dovecot for the test session and change mailboxes under the sync.

The instance lives entirely in one work directory (its own `base_dir`, `state_dir`,
log, certificates, users and homes), listens on 127.0.0.1 only and is driven with
`doveadm -c <its config>`, so a system Dovecot is never touched.

    start_dovecot(workdir) -> Dovecot -> add_user() -> MailUser -> append/move/flag/...
                                      -> doveadm(...)            (kick, UIDVALIDITY)
                                      -> stop()

Storage is sdbox: its index is the only record of UIDVALIDITY and UIDs, so
`doveadm mailbox update --uid-validity` is one authoritative change, as on a server
that really renumbered a folder (Maildir keeps a second copy in dovecot-uidlist).
Each user has a passwd-file of their own (`users/%u`): Dovecot re-reads a passwd-file
at most once a second and only when its mtime or size changed, and a per-user file
makes a new user visible at once.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import os
import pwd
import re
import secrets
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
import time
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from app.demo.certificates import CertificateAuthority, certificate_pem, private_key_pem
from tests.support.imap_account import ImapAccount
from tests.support.secret_watch import SecretKind, register_secret

DOVECOT_BIN = "/usr/sbin/dovecot"
DOVEADM_BIN = "/usr/bin/doveadm"
HOST = "127.0.0.1"
MAIL_USER = "dovecot"  # Debian's unprivileged Dovecot account; owns every mailbox
SPECIAL_USE_FOLDERS = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}
# Dovecot 2.3's built-in capability list but CONDSTORE and QRESYNC; `imap_capability`
# can only replace the list whole.
_CAPABILITIES_WITHOUT_CONDSTORE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES"
    " THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN"
    " NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 ESEARCH ESORT SEARCHRES WITHIN"
    " CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE"
    " SAVEDATE LITERAL+ NOTIFY SPECIAL-USE"
)
_USER_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
_STARTUP_TIMEOUT = 15.0
CERTIFICATE_VALIDITY = dt.timedelta(days=7)  # the rig's CAs and the servers they sign
_EX_NOUSER = 68  # doveadm kick: the user had no session to drop
_user_numbers = itertools.count(1)


class DovecotError(RuntimeError):
    """The test Dovecot failed to start, or a doveadm command failed."""


@dataclass(frozen=True)
class Passdb:
    """One `passdb { }` block, limited to the SASL mechanisms it may answer."""

    driver: str
    args: str
    mechanisms: str


@dataclass(frozen=True)
class DovecotConfig:
    """Everything that varies between test instances; `render_config` turns it into a file."""

    root: Path
    tls_port: int
    plain_port: int
    condstore: bool
    starttls: bool
    # False: UNSELECT (RFC 3691) is not advertised, as on servers older than it.
    unselect: bool = True
    # False: neither IDLE (RFC 2177) nor NOTIFY (RFC 5465) is advertised: a watcher must poll.
    push: bool = True
    auth_mechanisms: tuple[str, ...] = ("plain", "login")
    # Tried after the users' passwd-files, e.g. an oauth2 passdb for XOAUTH2.
    extra_passdbs: tuple[Passdb, ...] = ()
    # Sessions at once the process and client limits allow; 0 keeps Dovecot's (about 100).
    sessions: int = 0

    @property
    def base_dir(self) -> Path:
        return self.root / "run"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def log_file(self) -> Path:
        return self.root / "dovecot.log"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def users_dir(self) -> Path:
        return self.root / "users"

    @property
    def homes_dir(self) -> Path:
        return self.root / "homes"

    @property
    def config_file(self) -> Path:
        return self.root / "dovecot.conf"


def render_config(config: DovecotConfig) -> str:
    """Return dovecot.conf text for one private instance (Dovecot 2.3 syntax)."""
    users = Passdb(driver="passwd-file", args=f"{config.users_dir}/%u", mechanisms="plain login")
    passdbs = "".join(
        f"passdb {{\n  driver = {db.driver}\n  args = {db.args}\n"
        f"  mechanisms = {db.mechanisms}\n}}\n"
        for db in (users, *config.extra_passdbs)
    )
    capability = _advertised_capabilities(config)
    mailboxes = "".join(
        f"  mailbox {name} {{\n    special_use = {use}\n    auto = subscribe\n  }}\n"
        for name, use in SPECIAL_USE_FOLDERS.items()
    )
    # STARTTLS is offered on every plain listener while `ssl` is on, so an instance
    # without it serves the plain port from a login service started with ssl=no.
    if config.starttls:
        starttls_port, plain_login_service = config.plain_port, ""
    else:
        starttls_port = 0
        plain_login_service = (
            "service imap-login-nostarttls {\n"
            "  executable = imap-login -o ssl=no\n"
            "  protocol = imap\n  type = login\n"
            "  user = $default_login_user\n  chroot = login\n"
            f"  inet_listener imap-plain {{\n    port = {config.plain_port}\n  }}\n"
            "}\n"
        )
    return f"""\
base_dir = {config.base_dir}
state_dir = {config.state_dir}
instance_name = imap-bridge-test
log_path = {config.log_file}
auth_verbose = yes
protocols = imap
listen = {HOST}
default_internal_user = {MAIL_USER}
default_login_user = dovenull
ssl = yes
ssl_cert = <{config.tls_dir / "server.pem"}
ssl_key = <{config.tls_dir / "server.key"}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = {" ".join(config.auth_mechanisms)}
# Failed logins must not hold later ones back (anvil's penalty grows to 15 s).
auth_failure_delay = 0
{_session_limits(config.sessions)}service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{_client_limit(config.sessions)}}}
{passdbs}userdb {{
  driver = passwd-file
  args = {users.args}
}}
mail_uid = {MAIL_USER}
mail_gid = {MAIL_USER}
first_valid_uid = 1
first_valid_gid = 1
mail_location = sdbox:~/mail
mail_fsync = never
mail_max_userip_connections = 100
# IDLE/NOTIFY sessions past the kernel's inotify limit (128 per uid, shared by every
# instance on the machine) fall back to polling the mailbox at this interval (default 30 s).
mailbox_idle_check_interval = 1 secs
imap_capability = {capability}
namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}}}
service imap-login {{
{_login_processes(config.sessions)}  inet_listener imap {{
    port = {starttls_port}
  }}
  inet_listener imaps {{
    port = {config.tls_port}
    ssl = yes
  }}
}}
{plain_login_service}"""


def _session_limits(sessions: int) -> str:
    """Raise every process and client limit a session counts against (field notes, "Many IDLE
    sessions"); each TLS session also holds a login process's connection."""
    if not sessions:
        return ""
    clients = 2 * sessions
    return (
        f"default_process_limit = {sessions}\ndefault_client_limit = {clients}\n"
        f"service auth {{\n{_client_limit(sessions)}}}\n"
        f"service stats {{\n{_client_limit(sessions)}}}\n"
    )


def _client_limit(sessions: int) -> str:
    return f"  client_limit = {2 * sessions}\n" if sessions else ""


def _login_processes(sessions: int) -> str:
    """A few long-lived login processes proxy every TLS session, not one process each."""
    if not sessions:
        return ""
    return f"  service_count = 0\n  process_min_avail = 2\n  client_limit = {sessions}\n"


def _advertised_capabilities(config: DovecotConfig) -> str:
    """The `imap_capability` setting: empty keeps Dovecot's own list.

    Dovecot advertises CONDSTORE, QRESYNC and UNSELECT by default, and "+"
    only adds to the list, so an instance without one of them spells it all out.
    """
    if config.condstore and config.unselect and config.push:
        return ""
    names = _CAPABILITIES_WITHOUT_CONDSTORE.split()
    if config.condstore:
        names += ["CONDSTORE", "QRESYNC"]
    if not config.unselect:
        names.remove("UNSELECT")
    if not config.push:
        names.remove("IDLE")
        names.remove("NOTIFY")
    return " ".join(names)


@dataclass
class Dovecot:
    """A running private Dovecot; `stop()` ends it."""

    host: str
    tls_port: int
    plain_port: int
    ca_file: Path
    other_ca_file: Path
    config: DovecotConfig
    process: subprocess.Popen[bytes] = field(repr=False)

    def add_user(self, name: str | None = None, password: str | None = None) -> MailUser:
        """Create a user with an empty mailbox; Dovecot creates the special-use folders."""
        name = name or f"user{next(_user_numbers)}-{secrets.token_hex(3)}"
        if not _USER_NAME.match(name):
            raise ValueError(f"user name {name!r} must be lowercase [a-z0-9._@-]")
        if (self.config.users_dir / name).exists():
            raise ValueError(f"user {name!r} already exists")
        user = MailUser(name=name, password="", dovecot=self)
        user.set_password(password or secrets.token_urlsafe(12))
        return user

    def doveadm(self, *args: str, ok_exit_codes: Container[int] = (0,)) -> str:
        """Run doveadm against this instance only and return its stdout."""
        result = subprocess.run(
            [DOVEADM_BIN, "-c", str(self.config.config_file), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode not in ok_exit_codes:
            raise DovecotError(
                f"doveadm {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result.stdout

    def read_log(self) -> str:
        """Return the instance's log, for failure output."""
        return _read_text(self.config.log_file)

    def stop(self) -> None:
        """Stop the master and every process it started."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class MailUser(ImapAccount):
    """One account on the test Dovecot; Dovecot-only changes go through doveadm."""

    dovecot: Dovecot

    def address(self) -> tuple[str, int]:
        return self.dovecot.host, self.dovecot.plain_port

    def set_uidvalidity(self, folder: str, value: int) -> None:
        """Renumber the folder as a server would, then drop sessions so they notice."""
        self.dovecot.doveadm(
            "mailbox", "update", "-u", self.name, "--uid-validity", str(value), folder
        )
        self.kick()

    def open_sessions(self) -> int:
        """Count this user's open IMAP sessions, as `doveadm who` lists them."""
        listing = self.dovecot.doveadm("who", "-1", self.name, ok_exit_codes=(0, _EX_NOUSER))
        return sum(1 for line in listing.splitlines() if line.split()[:1] == [self.name])

    def kick(self) -> None:
        """Drop every open IMAP session of this user (a server-side disconnect)."""
        self.dovecot.doveadm("kick", self.name, ok_exit_codes=(0, _EX_NOUSER))

    def set_password(self, password: str) -> None:
        """Rewrite the user's passwd-file; returns once Dovecot will see the change.

        Dovecot stats a passwd-file at most once per second and compares whole-second
        mtimes, so the file gets a new mtime and this waits out the current second.
        """
        if not password or any(c in password for c in ":\r\n"):
            raise ValueError("password must be non-empty without ':' or line breaks")
        config = self.dovecot.config
        path = config.users_dir / self.name
        existed = path.exists()
        previous_mtime = path.stat().st_mtime if existed else 0.0
        home = config.homes_dir / self.name
        register_secret(SecretKind.IMAP_PASSWORD, password, f"user {self.name}")
        path.write_text(f"{self.name}:{{PLAIN}}{password}::::{home}::\n")
        os.chmod(path, 0o640)
        shutil.chown(path, group=MAIL_USER)
        self.password = password
        if existed:
            written = int(time.time())
            mtime = max(written, int(previous_mtime) + 1)
            os.utime(path, (mtime, mtime))
            time.sleep(max(0.0, written + 1.05 - time.time()))


def start_dovecot(
    workdir: Path,
    *,
    condstore: bool = True,
    starttls: bool = True,
    unselect: bool = True,
    push: bool = True,
    oauth_jwt_key: bytes | None = None,
    sessions: int = 0,
) -> Dovecot:
    """Start a private Dovecot in `workdir` (keep it short: unix sockets live there).

    `sessions` raises its limits to hold that many IMAP sessions at once.

    With `oauth_jwt_key`, XOAUTH2 and OAUTHBEARER log in with HS256 JWTs signed
    with that key (claims `sub` = user name, `exp`), checked by Dovecot itself.
    """
    tls_port, plain_port = _free_ports(2)
    mechanisms: tuple[str, ...] = ("plain", "login")
    oauth_passdbs: tuple[Passdb, ...] = ()
    if oauth_jwt_key is not None:
        mechanisms += tuple(OAUTH_MECHANISMS.split())
        oauth_passdbs = (
            Passdb(driver="oauth2", args=str(workdir / "oauth2.conf"), mechanisms=OAUTH_MECHANISMS),
        )
    config = DovecotConfig(
        root=workdir,
        tls_port=tls_port,
        plain_port=plain_port,
        condstore=condstore,
        starttls=starttls,
        unselect=unselect,
        push=push,
        auth_mechanisms=mechanisms,
        extra_passdbs=oauth_passdbs,
        sessions=sessions,
    )
    _prepare_directories(config)
    if oauth_jwt_key is not None:
        _write_jwt_validation(config.root, oauth_jwt_key)
    ca_file, other_ca_file = _write_certificates(config.tls_dir)
    config.config_file.write_text(render_config(config))
    process = subprocess.Popen(
        [DOVECOT_BIN, "-F", "-c", str(config.config_file)],
        stdin=subprocess.DEVNULL,
        stdout=(config.root / "master.out").open("wb"),
        stderr=subprocess.STDOUT,
    )
    dovecot = Dovecot(
        host=HOST,
        tls_port=tls_port,
        plain_port=plain_port,
        ca_file=ca_file,
        other_ca_file=other_ca_file,
        config=config,
        process=process,
    )
    try:
        _wait_for_greeting(dovecot)
    except DovecotError:
        dovecot.stop()
        raise
    return dovecot


OAUTH_MECHANISMS = "xoauth2 oauthbearer"


def _write_jwt_validation(root: Path, key: bytes) -> None:
    """Let the oauth2 passdb validate HS256 JWTs locally (Dovecot 2.3 `introspection_mode`).

    The key dictionary holds the raw secret in standard base64 at
    `<prefix>/<azp>/<alg>/<kid>`; tokens without `azp` and `kid` use `default`.
    """
    keys = root / "oauth2-keys"
    key_file = keys / "default" / "HS256" / "default"
    key_file.parent.mkdir(parents=True)
    key_file.write_text(base64.b64encode(key).decode())
    (root / "oauth2.conf").write_text(
        "introspection_mode = local\n"
        f"local_validation_key_dict = fs:posix:prefix={keys}/\n"
        "username_attribute = sub\n"
    )
    for path in (keys, *keys.rglob("*"), root / "oauth2.conf"):
        shutil.chown(path, group=MAIL_USER)
        path.chmod(0o750 if path.is_dir() else 0o640)


class DovecotInstances:
    """Start each kind of instance once, each in its own short temporary directory.

    Unix socket paths are limited to about 100 characters, and the `dovecot` user must
    be able to reach the homes, so pytest's deep 0700 tmp paths do not fit.
    """

    def __init__(self) -> None:
        self._running: dict[tuple[bool, bool, bool, bool, bytes | None], Dovecot] = {}

    def get(
        self,
        *,
        condstore: bool = True,
        starttls: bool = True,
        unselect: bool = True,
        push: bool = True,
        oauth_jwt_key: bytes | None = None,
    ) -> Dovecot:
        """Return the running instance with these options, starting it on first use."""
        key = (condstore, starttls, unselect, push, oauth_jwt_key)
        if key not in self._running:
            workdir = Path(tempfile.mkdtemp(prefix="dv"))
            try:
                self._running[key] = start_dovecot(
                    workdir,
                    condstore=condstore,
                    starttls=starttls,
                    unselect=unselect,
                    push=push,
                    oauth_jwt_key=oauth_jwt_key,
                )
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
        return self._running[key]

    def stop_all(self) -> None:
        """Stop every instance and delete its directory."""
        running = list(self._running.values())
        self._running.clear()
        for dovecot in running:  # a master takes about a second to stop: signal all first
            dovecot.process.terminate()
        for dovecot in running:
            dovecot.stop()
            shutil.rmtree(dovecot.config.root, ignore_errors=True)


def _prepare_directories(config: DovecotConfig) -> None:
    mail_user = pwd.getpwnam(MAIL_USER)
    blocked = [
        parent
        for parent in config.root.resolve().parents
        if not _traversable(parent.stat(), mail_user.pw_uid, mail_user.pw_gid)
    ]
    if blocked:
        raise DovecotError(
            f"user {MAIL_USER!r} cannot reach {config.root} (blocked at {blocked[0]});"
            " use a directory from tempfile.mkdtemp() or DovecotInstances"
        )
    # The mail processes run as `dovecot` and must reach their homes under root.
    config.root.chmod(0o711)
    config.tls_dir.mkdir(mode=0o700)
    config.users_dir.mkdir(mode=0o750)
    shutil.chown(config.users_dir, group=MAIL_USER)
    config.homes_dir.mkdir(mode=0o700)
    shutil.chown(config.homes_dir, user=MAIL_USER, group=MAIL_USER)


def _traversable(status: os.stat_result, uid: int, gid: int) -> bool:
    if status.st_uid == uid:
        return bool(status.st_mode & stat.S_IXUSR)
    if status.st_gid == gid:
        return bool(status.st_mode & stat.S_IXGRP)
    return bool(status.st_mode & stat.S_IXOTH)


def _wait_for_greeting(dovecot: Dovecot) -> None:
    """Return once both listeners greet; raise with the log if the master exits or stalls."""
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    tls_context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    pending = {dovecot.plain_port: None, dovecot.tls_port: tls_context}
    while pending:
        if dovecot.process.poll() is not None or time.monotonic() > deadline:
            raise DovecotError(
                f"Dovecot did not start (exit code {dovecot.process.poll()}).\n"
                f"--- master output ---\n{_read_text(dovecot.config.root / 'master.out')}"
                f"--- dovecot.log ---\n{dovecot.read_log()}"
            )
        for port, context in list(pending.items()):
            if _greets(dovecot.host, port, context):
                del pending[port]
        time.sleep(0.02)


def _greets(host: str, port: int, context: ssl.SSLContext | None) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as raw:
            if context is None:
                return raw.recv(64).startswith(b"* OK")
            with context.wrap_socket(raw, server_hostname=host) as wrapped:
                return wrapped.recv(64).startswith(b"* OK")
    except OSError:
        return False


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _read_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else "(missing)\n"


def _write_certificates(tls_dir: Path) -> tuple[Path, Path]:
    """Write the server key and chain plus two CA files: the signing one and an unrelated one."""
    ca = CertificateAuthority("imap-bridge test CA", CERTIFICATE_VALIDITY)
    other_ca = CertificateAuthority("imap-bridge unrelated CA", CERTIFICATE_VALIDITY)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = ca.issue_server_certificate(server_key, HOST, "localhost")
    (tls_dir / "server.key").write_bytes(private_key_pem(server_key))
    (tls_dir / "server.pem").write_bytes(certificate_pem(server_cert))
    ca_file = tls_dir / "ca.pem"
    other_ca_file = tls_dir / "other-ca.pem"
    ca_file.write_bytes(certificate_pem(ca.certificate))
    other_ca_file.write_bytes(certificate_pem(other_ca.certificate))
    return ca_file, other_ca_file
