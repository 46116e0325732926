"""Local mail: `/v1/mailboxes/{id}/emails` and `/v1/emails/{id}` with its source and attachments."""
