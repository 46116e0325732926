"""The operator's read-only status page (`/status`): static HTML, a style sheet and a script."""
