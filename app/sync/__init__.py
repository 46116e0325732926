"""The synchronization engine and the other services that need a live IMAP server."""
