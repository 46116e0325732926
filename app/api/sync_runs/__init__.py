"""Sync on demand (`POST /v1/mailboxes/{id}/sync`), the run history, and the job queue."""
