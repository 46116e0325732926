"""The callback page the provider redirects the popup to, and the opener's JS module.

The page posts one message to `window.opener`, addressed to the exact origin
the flow was started for (so no other page can read the code), then closes:

    {"type": "imap-bridge-oauth", "provider", "state", "code"}            on success
    {"type": "imap-bridge-oauth", "provider", "state", "error", "error_description"}

A state this service never issued has no origin to trust: the page then posts
nothing and only says so.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from html import escape
from importlib.resources import files

MESSAGE_TYPE = "imap-bridge-oauth"
JS_MODULE = files("app.oauth").joinpath("static/imap-bridge-oauth.js")


@dataclass(frozen=True, slots=True)
class CallbackPage:
    """The HTML and the Content-Security-Policy that allows only its own script."""

    html: str
    content_security_policy: str


def callback_page(origin: str | None, message: dict[str, str]) -> CallbackPage:
    """Render the page; `origin` None posts nothing (the state was never issued)."""
    nonce = secrets.token_urlsafe(16)
    failed = "error" in message
    text = "Sign-in failed; you can close this window." if failed else "Signed in; closing."
    script = ""
    if origin is not None:
        payload = _script_json({"type": MESSAGE_TYPE, **message})
        script = (
            f'<script nonce="{nonce}">\n'
            "if (window.opener) {\n"
            f"  window.opener.postMessage({payload}, {_script_json(origin)});\n"
            "}\n"
            "window.close();\n"
            "</script>\n"
        )
    else:
        text = "This sign-in link is not valid (unknown state); start again from the app."
    html = (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        "<title>imap-bridge sign-in</title></head>\n"
        f"<body><p>{escape(text)}</p>\n{script}</body></html>\n"
    )
    return CallbackPage(html, f"default-src 'none'; script-src 'nonce-{nonce}'")


def js_module() -> str:
    """Return the dependency-free ES module CRM pages import to run the popup flow."""
    return JS_MODULE.read_text(encoding="utf-8")


def _script_json(value: object) -> str:
    """Encode for a <script> element: no `</script>`, `<!--` or line separators get through."""
    text = json.dumps(value)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
