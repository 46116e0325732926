"""Schemathesis hooks (loaded through SCHEMATHESIS_HOOKS) that make valid generated requests
ones the API can carry out, so positive cases reach past the checks the schema cannot state
and the stateful phase follows a created mailbox or webhook.

- A login (`imap`, `auth`) is the test Dovecot's account: a random host never logs in,
  and which OAuth providers are installed is only known at run time.
- A webhook URL is a loopback address, which the test settings allow.
- An OAuth popup's opener origin is the one the test settings list in
  OAUTH_ALLOWED_ORIGINS: which origins are allowed is a setting, not a schema rule.
- A cursor is a token only the API mints: a made-up one is a 422 naming `cursor`, which
  the negative cases check; valid cases ask for the first page.

Negative cases stay as generated.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from schemathesis import Case, GenerationMode, HookContext

LOGIN_OPERATIONS = {
    ("POST", "/v1/mailboxes"),
    ("PATCH", "/v1/mailboxes/{mailbox_id}"),
    ("POST", "/v1/connection/check"),
}
WEBHOOK_OPERATIONS = {("POST", "/v1/webhooks"), ("PATCH", "/v1/webhooks/{webhook_id}")}
WEBHOOK_URL = "http://127.0.0.1:9/hooks"
AUTHORIZE_OPERATIONS = {
    ("POST", "/v1/oauth/{provider}/authorize"),
    ("POST", "/v1/mailboxes/{mailbox_id}/reauthorize"),
}


def _dovecot_login() -> tuple[dict[str, Any], dict[str, Any]]:
    imap = {
        "host": os.environ["SCHEMATHESIS_IMAP_HOST"],
        "port": int(os.environ["SCHEMATHESIS_IMAP_PORT"]),
        "security": "ssl",
        "username": os.environ["SCHEMATHESIS_IMAP_USERNAME"],
        "tls_verify": True,
    }
    auth = {"type": "password", "password": os.environ["SCHEMATHESIS_IMAP_PASSWORD"]}
    return imap, auth


@schemathesis.hook
def map_case(context: HookContext, case: Case[Any]) -> Case[Any]:
    """Point valid cases at things that exist: the Dovecot login, a loopback webhook URL,
    an allowed opener origin."""
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return case
    operation = (case.method.upper(), case.path)
    if isinstance(case.query, dict):
        case.query.pop("cursor", None)
    if isinstance(case.body, dict):
        if operation in LOGIN_OPERATIONS:
            imap, auth = _dovecot_login()
            for field, value in (("imap", imap), ("auth", auth)):
                if case.body.get(field) is not None or case.method.upper() == "POST":
                    case.body[field] = value
        if operation in WEBHOOK_OPERATIONS and case.body.get("url") is not None:
            case.body["url"] = WEBHOOK_URL
        if operation in AUTHORIZE_OPERATIONS and "origin" in case.body:
            case.body["origin"] = os.environ["SCHEMATHESIS_OAUTH_ORIGIN"]
    return case
