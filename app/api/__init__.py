"""HTTP layer: one router per resource, problem+json errors, API-key auth."""
