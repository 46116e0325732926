"""`make demo`: the whole service at work on this machine, for someone without an IMAP server.

A private Dovecot on 127.0.0.1 serves a made-up mailbox over TLS; `imap-bridge
run` (what `make run` starts) syncs it, and new mail arrives every few seconds
so the watcher and the event stream have something to show. Nothing here is
part of the service: the demo only drives it from outside, through its
command line and its API. See `runner.py` for the steps.
"""
