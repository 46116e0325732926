"""Small HTTP servers the browser test talks to: a local OAuth2 authorization server
(auto-consent) and the CRM's host page on another origin, each a real uvicorn.

The authorization server follows RFC 6749 + RFC 7636 with authlib's PKCE check:
`/authorize` consents at once for the `login_hint` account (an address, which is
also the account's IMAP user name, as at Gmail) and redirects with a code;
`/token` exchanges the code (client secret, redirect URI and code verifier
checked) or a refresh token; `/userinfo` names the account of an access token.
Its access tokens are the JWTs the test Dovecot accepts, so the popup flow ends
in a real XOAUTH2 login.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from tests.support.oauth_rig import id_token, sign_jwt
from tests.support.secret_watch import SecretKind, register_secret

CLIENT_ID = "imap-bridge-test-client"
CRM_USER = "crm-user-1"  # who is signed in to the CRM page
CLIENT_SECRET = register_secret(SecretKind.OAUTH_CLIENT_SECRET, "test-client-secret", "local")


@dataclass
class AuthorizationServer:
    """What the local authorization server issued, for the test to inspect."""

    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    access_tokens: dict[str, str] = field(default_factory=dict)  # token -> email
    calls: list[str] = field(default_factory=list)  # the back-channel paths asked, in order

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/authorize")
        def authorize(
            *,
            client_id: str,
            redirect_uri: str,
            state: str,
            code_challenge: str,
            code_challenge_method: str,
            login_hint: str,
            response_type: str = "code",
        ) -> Response:
            if client_id != CLIENT_ID or response_type != "code":
                return JSONResponse({"error": "unauthorized_client"}, status_code=400)
            if code_challenge_method != "S256":
                return _redirect(redirect_uri, error="invalid_request", state=state)
            code = secrets.token_urlsafe(16)
            self.codes[code] = {
                "user": login_hint,
                "redirect_uri": redirect_uri,
                "challenge": code_challenge,
            }
            return _redirect(redirect_uri, code=code, state=state)

        @app.post("/token")
        async def token(request: Request) -> JSONResponse:
            self.calls.append("/token")
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            if form.get("grant_type") == "refresh_token":
                user = self.refresh_tokens.get(form.get("refresh_token", ""))
                if user is None:
                    return JSONResponse({"error": "invalid_grant"}, status_code=400)
                return JSONResponse(self._tokens(user))
            grant = self.codes.pop(form.get("code", ""), None)
            if (
                grant is None
                or grant["redirect_uri"] != form.get("redirect_uri")
                or create_s256_code_challenge(form.get("code_verifier", "")) != grant["challenge"]
            ):
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            return JSONResponse(self._tokens(grant["user"]))

        @app.get("/userinfo")
        def userinfo(authorization: Annotated[str, Header()] = "") -> JSONResponse:
            self.calls.append("/userinfo")
            email = self.access_tokens.get(authorization.removeprefix("Bearer "))
            if email is None:
                return JSONResponse({"error": "invalid_token"}, status_code=401)
            return JSONResponse({"sub": email.partition("@")[0], "email": email})

        return app

    def _tokens(self, user: str) -> dict[str, Any]:
        email = user if "@" in user else f"{user}@example.com"
        refresh = register_secret(SecretKind.REFRESH_TOKEN, secrets.token_urlsafe(16), "local")
        self.refresh_tokens[refresh] = user
        access_token = sign_jwt(user)
        self.access_tokens[access_token] = email
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": refresh,
            "id_token": id_token({"sub": user, "email": email}),
        }


def _redirect(redirect_uri: str, **params: str) -> RedirectResponse:
    return RedirectResponse(f"{redirect_uri}?{urlencode(params)}", status_code=302)


HOST_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>CRM</title></head>
<body><button id="connect">Connect mailbox</button>
<script type="module">
import {{ connectMailbox }} from "{bridge}/static/imap-bridge-oauth.js";
document.getElementById("connect").addEventListener("click", () => {{
  const post = (path, body) => fetch(path, {{
    method: "POST", headers: {{"Content-Type": "application/json"}}, body: JSON.stringify(body),
  }}).then((r) => r.json().then((json) => r.ok ? json : Promise.reject(json)));
  const ownTokens = {{
    authorize: (provider, origin, loginHint) =>
      post("/crm/authorize", {{ provider, origin, login_hint: loginHint }}),
    exchange: (code, state) => post("/crm/token", {{ code, state }}),
  }};
  const reconnect = {reconnect};
  const reconnecting = reconnect === null ? {{}} : {{
    authorize: (provider, origin) => post(`/crm/reconnect/${{reconnect}}`, {{ origin }}),
    exchange: (code, state) => post(`/crm/reconnect/${{reconnect}}/complete`, {{ code, state }}),
  }};
  connectMailbox({{
    provider: "{provider}",
    origin: {origin},
    loginHint: "{login_hint}",
    timeoutMs: 8000,
    apiBase: "/crm/bridge",
    ...({keep_tokens} ? ownTokens : {{}}),
    ...reconnecting,
  }}).then(
    (result) => {{ window.outcome = {{ result }}; }},
    (error) => {{
      window.outcome = {{ error: error.code || String(error), problem: error.problem }};
    }},
  );
}});
</script></body></html>
"""


@dataclass
class CrmHost:
    """The CRM: a page that imports the JS module, and a backend holding the API key.

    By default the page lets the module finish the flow through the backend's
    `/crm/bridge/...` routes, which add the signed-in user as the owner; with
    `keep_tokens` it passes its own `authorize` and `exchange` (get-token); with
    `reconnect` (a mailbox id) they reconnect that mailbox.
    """

    bridge_url: str
    api_key: str
    provider: str
    exchanges: list[dict[str, Any]] = field(default_factory=list)
    # Called with the service's answer to authorize, before the popup goes on.
    after_authorize: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()
        headers = {"Authorization": f"Bearer {self.api_key}"}

        @app.get("/", response_class=HTMLResponse)
        def page(
            login_hint: str,
            bind_origin: Annotated[str | None, Query()] = None,
            keep_tokens: bool = False,
            reconnect: int | None = None,
        ) -> HTMLResponse:
            origin = f'"{bind_origin}"' if bind_origin else "window.location.origin"
            return HTMLResponse(
                HOST_PAGE.format(
                    bridge=self.bridge_url,
                    provider=self.provider,
                    origin=origin,
                    login_hint=login_hint,
                    keep_tokens="true" if keep_tokens else "false",
                    reconnect="null" if reconnect is None else reconnect,
                )
            )

        async def forward(path: str, body: Any, *, exchange: bool = False) -> JSONResponse:
            """POST `body` to the service with the API key; an exchange is also recorded."""
            async with httpx.AsyncClient(base_url=self.bridge_url, headers=headers) as bridge:
                answer = await bridge.post(path, json=body)
            if exchange:
                self.exchanges.append({"request": body, "status": answer.status_code})
            return JSONResponse(answer.json(), status_code=answer.status_code)

        @app.post("/crm/authorize")
        async def authorize(request: Request) -> JSONResponse:
            body = await request.json()
            answer = await forward(
                f"/v1/oauth/{body['provider']}/authorize",
                {"origin": body["origin"], "login_hint": body["login_hint"]},
            )
            for hook in self.after_authorize:
                hook(json.loads(bytes(answer.body)))
            return answer

        @app.post("/crm/bridge/oauth/{provider}/authorize")
        async def bridge_authorize(provider: str, request: Request) -> JSONResponse:
            return await forward(f"/v1/oauth/{provider}/authorize", await request.json())

        @app.post("/crm/bridge/oauth/{provider}/complete")
        async def bridge_complete(provider: str, request: Request) -> JSONResponse:
            body = await request.json() | {"owner": {"user_id": CRM_USER}}  # from the session
            return await forward(f"/v1/oauth/{provider}/complete", body, exchange=True)

        @app.post("/crm/reconnect/{mailbox_id}")
        async def reconnect_start(mailbox_id: int, request: Request) -> JSONResponse:
            return await forward(f"/v1/mailboxes/{mailbox_id}/reauthorize", await request.json())

        @app.post("/crm/reconnect/{mailbox_id}/complete")
        async def reconnect_complete(mailbox_id: int, request: Request) -> JSONResponse:
            path = f"/v1/mailboxes/{mailbox_id}/reauthorize/complete"
            return await forward(path, await request.json(), exchange=True)

        @app.post("/crm/token")
        async def token(request: Request) -> JSONResponse:
            path = f"/v1/oauth/{self.provider}/token"
            return await forward(path, await request.json(), exchange=True)

        return app
