"""The event envelope as the API documents it (the SSE `data:` of `GET /v1/events`)."""

from __future__ import annotations

from app.notify.envelope import EventEnvelope, EventType

__all__ = ["EventEnvelope", "EventType"]
