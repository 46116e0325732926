"""OAuth2 for IMAP: provider registry, token endpoints, PKCE popup flow, token refresh."""
