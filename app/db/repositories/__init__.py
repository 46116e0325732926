"""Every query of the service, grouped by table; callers own the transaction."""
