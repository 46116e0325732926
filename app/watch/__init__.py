"""Real time: watch mailboxes over long-lived IMAP sessions and say which folders changed."""
