"""imap-bridge: a local, always-current SQL copy of IMAP mailboxes for a host CRM."""
