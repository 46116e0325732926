"""`/v1/mailboxes`: register, list, read, change and delete the mailboxes the service syncs."""
