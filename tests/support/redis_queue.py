"""The machine's Redis the tests and the bench queue jobs on, one queue name per user."""

from __future__ import annotations

import os
import uuid

import redis
from sqlalchemy import make_url

from tests.support.fault_proxy import FaultProxy

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def new_queue_name(prefix: str = "test") -> str:
    """Return a queue name no other test or bench run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def delete_queue(redis_url: str, queue_name: str) -> None:
    """Delete every key of the queue: its jobs, their results, the health check, cron ids."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [*client.scan_iter(f"arq:*{queue_name}*"), *client.scan_iter(f"{queue_name}*")]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def redis_url_through(proxy: FaultProxy) -> str:
    """Return the tests' Redis as reached through `proxy`, same database."""
    address = make_url(TEST_REDIS_URL)
    return f"redis://127.0.0.1:{proxy.port}/{address.database or 0}"
