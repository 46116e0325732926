"""Serve the status page: static files, no secret in them, a policy that allows only our own.

The page holds no key: the operator pastes a status key (`imap-bridge apikey
create --scope status`), which the script keeps in the tab's session storage
and sends to the health routes alone. The Content-Security-Policy lets the
page load only its own style sheet and script and talk only to this origin,
so neither an injected script nor a third-party one can read the key.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

router = APIRouter(tags=["operations"], include_in_schema=False)

_STATIC = files("app.api.status_page").joinpath("static")
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _static(name: str, media_type: str) -> Response:
    text = _STATIC.joinpath(name).read_text(encoding="utf-8")
    return Response(text, media_type=media_type, headers=_HEADERS)


@router.get("/status", response_class=HTMLResponse)
def status_page() -> Response:
    return _static("status.html", "text/html")


@router.get("/status/status.js")
def status_script() -> Response:
    return _static("status.js", "text/javascript")


@router.get("/status/status.css")
def status_style() -> Response:
    return _static("status.css", "text/css")
