"""The live API of tests/api, for the browser test of the popup flow."""

from __future__ import annotations

from tests.api.conftest import live_api

__all__ = ["live_api"]
