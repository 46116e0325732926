"""Start the demo, keep new mail coming, and take everything down again at Ctrl-C.

    make a directory (TMPDIR) ........... imap/ for Dovecot, service/ for imap-bridge
    start Dovecot, APPEND the history ... app.demo.dovecot, app.demo.mail
    create the database and an API key .. as `imap-bridge run` does on a first start
    start `imap-bridge run` ............. app.demo.service; wait for /healthz
    register the mailbox ................ through the API; wait for the first sync
    print the summary ................... app.demo.summary
    every --arrival-seconds ............. APPEND one message to INBOX, say so
    Ctrl-C or SIGTERM ................... stop the service (SIGINT, as on `make run`),
                                          then Dovecot; remove the directory; exit 0
    the service or Dovecot fails ........ say why, the same clean-up, exit 1

Every step is undone in reverse order whatever stops the demo (a second Ctrl-C
is ignored until the clean-up is over), so the next `make demo` starts from
nothing. The service and Dovecot run in process groups of their own: a
terminal's Ctrl-C reaches only `make` and the demo, which stops them in order.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import httpx
from imapclient import IMAPClient

from app.demo.dovecot import (
    HOST,
    DemoDovecot,
    DemoServerError,
    free_loopback_port,
    start_demo_dovecot,
)
from app.demo.mail import DemoMail
from app.demo.mailbox import register_demo_mailbox
from app.demo.service import (
    DemoService,
    DemoServiceError,
    create_demo_api_key,
    service_environment,
)
from app.demo.summary import DemoFacts, summary

_API_TIMEOUT_SECONDS = 60.0
# What stops the demo with a message rather than a traceback: a part that would not start,
# a server that went away, an API call that failed.
_FAILURES = (DemoServerError, DemoServiceError, IMAPClient.Error, OSError, httpx.HTTPError)


def run_demo(port: int, arrival_seconds: float, out: TextIO) -> int:
    """Run the demo until Ctrl-C (0) or until a part of it fails (1)."""
    previous_sigint = signal.getsignal(signal.SIGINT)
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    directory = Path(tempfile.mkdtemp(prefix="imap-bridge-demo-"))
    directory.chmod(0o711)  # Dovecot's mail processes run as `dovecot` and must reach imap/
    started = ExitStack()
    try:
        _say(out, f"starting the demo in {directory} ...")
        server = start_demo_dovecot(_subdirectory(directory, "imap"))
        started.callback(server.stop)
        mail = DemoMail(datetime.now(UTC))
        server.append(mail.history)
        _say(out, f"Dovecot is up on {HOST}:{server.port}, {len(mail.history)} messages stored")
        service_dir = _subdirectory(directory, "service")
        env = service_environment(server.ca_file, service_dir)
        api_key = create_demo_api_key(service_dir)
        service = DemoService.start(service_dir, env, HOST, port or free_loopback_port())
        started.callback(service.stop)
        _say(out, f"imap-bridge run is up on {service.base_url}; registering the demo mailbox ...")
        with httpx.Client(
            base_url=service.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=_API_TIMEOUT_SECONDS,
        ) as api:
            mailbox = register_demo_mailbox(api, server)
        facts = DemoFacts(
            directory=directory,
            imap_port=server.port,
            ca_file=server.ca_file,
            history=mail.history,
            base_url=service.base_url,
            service_log=service.log,
            api_key=api_key,
            mailbox=mailbox,
            arrival_seconds=arrival_seconds,
        )
        _say(out, summary(facts))
        return _deliver_until_stopped(server, service, mail, arrival_seconds, out)
    except KeyboardInterrupt:
        return 0
    except _FAILURES as exc:
        _say(out, f"make demo: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        _say(out, "stopping ...")
        started.close()  # the service first, then Dovecot
        shutil.rmtree(directory, ignore_errors=True)
        _say(out, f"stopped; removed {directory}")
        signal.signal(signal.SIGINT, previous_sigint)
        signal.signal(signal.SIGTERM, previous_sigterm)


def _deliver_until_stopped(
    server: DemoDovecot, service: DemoService, mail: DemoMail, every: float, out: TextIO
) -> int:
    """APPEND a new message every `every` seconds while the service runs; 1 once it ends."""
    while True:
        try:
            status = service.process.wait(timeout=every)
        except subprocess.TimeoutExpired:
            message = mail.arrival(datetime.now(UTC))
            server.append([message])
            _say(
                out,
                f"{message.date.astimezone():%H:%M:%S}  new mail in INBOX from {message.sender}:"
                f" {message.subject}",
            )
            continue
        _say(out, f"make demo: imap-bridge run exited ({status}):\n{service.log_tail()}")
        return 1


def _subdirectory(directory: Path, name: str) -> Path:
    path = directory / name
    path.mkdir(mode=0o700)
    return path


def _say(out: TextIO, text: str) -> None:
    """Print at once: the output is often a pipe (`make demo | tee`), read while it runs."""
    print(text, file=out, flush=True)
