"""`POST /v1/mailboxes/{id}/search`: search a folder on the IMAP server itself."""
