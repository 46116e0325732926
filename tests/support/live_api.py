"""A real uvicorn serving the app on loopback, and what tests need to talk to it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from sqlalchemy import Engine
from starlette.applications import Starlette

from app.config import Settings
from app.db import session_scope
from app.db.models import ApiKey
from app.main import create_app
from app.security import generate_api_key
from tests.support.secret_watch import SecretKind, register_secret


@dataclass(frozen=True)
class LiveApi:
    """The running service: its URL, a client authenticated with a fresh API key, the key."""

    base_url: str
    client: httpx.Client
    api_key: str


def create_api_key(engine: Engine, name: str = "tests") -> str:
    key, prefix, key_hash = generate_api_key()
    with session_scope(engine) as session:
        session.add(ApiKey(name=name, prefix=prefix, key_hash=key_hash))
    return register_secret(SecretKind.API_KEY, key, f"key {name!r}")


@contextmanager
def serving(app: Starlette, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` under a real uvicorn on `port` (0: a free one) of `host`; yield its base URL.

    uvicorn logs at INFO, as in production, into the root logger (no handlers of its
    own): the secret watch reads every access and error line.
    """
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_config=None, log_level="info")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def running_api(engine: Engine, settings: Settings) -> Iterator[LiveApi]:
    """Serve the app built from `settings`, with a client holding a fresh API key."""
    key = create_api_key(engine)
    headers = {"Authorization": f"Bearer {key}"}
    with (
        serving(create_app(settings)) as base_url,
        httpx.Client(base_url=base_url, headers=headers, timeout=30) as client,
    ):
        yield LiveApi(base_url, client, key)
