"""`POST /v1/connection/check`: try IMAP settings and credentials without saving them."""
