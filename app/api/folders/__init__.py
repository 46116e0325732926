"""`/v1/mailboxes/{id}/folders`: the folder tree and which folders are synced."""
