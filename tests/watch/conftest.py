"""Fixtures of the watcher tests: leases, refreshes and polls short enough to watch happen."""

from __future__ import annotations

import pytest

from app.config import Settings


@pytest.fixture
def watch_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "watch_refresh_seconds": 0.2,
            "watch_lease_seconds": 2.0,
            "watch_poll_seconds": 0.5,
            "watch_connect_rate": 50.0,
        }
    )
