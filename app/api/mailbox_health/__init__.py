"""Mailbox health (`GET /v1/mailboxes/{id}/health`, `GET /v1/health/mailboxes`): status keys too."""
