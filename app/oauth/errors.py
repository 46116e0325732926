"""Errors of the OAuth layer; each has a stable `code` the API turns into a problem.

OAuthError
  UnknownProviderError          no provider of that name is installed
  ProviderDisabledError         the provider is not configured or not enabled
  InvalidProviderSettingsError  a setting is missing or malformed (names its field)
  InvalidClientError            the provider refused the client id or secret
  InvalidGrantError             the code or refresh token is expired, used or revoked
  FlowStateError                the popup's `state`: unknown, expired or already used
  OriginNotAllowedError         the opener's origin is not one OAUTH_ALLOWED_ORIGINS lists
  AccountUnknownError           the provider did not say which address the tokens open
  ProviderUnavailableError      the provider's endpoint failed or could not be reached
    ProviderHostBlockedError    the endpoint's host resolves inside our network (SSRF guard)
"""

from __future__ import annotations


class OAuthError(Exception):
    """Base of the OAuth layer's errors; `code` is stable and safe to show.

    `field` names the request field a client can fix, when there is one.
    """

    code = "oauth_error"
    field: str | None = None


class UnknownProviderError(OAuthError):
    code = "not_found"


class ProviderDisabledError(OAuthError):
    code = "provider_disabled"


class InvalidProviderSettingsError(OAuthError):
    code = "invalid_provider_settings"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidClientError(OAuthError):
    code = "invalid_client"
    field = "client_secret"


class InvalidGrantError(OAuthError):
    code = "invalid_grant"


class FlowStateError(OAuthError):
    """The `state` is not one this service issued for this provider."""

    code = "invalid_state"
    field = "state"


class FlowStateExpiredError(FlowStateError):
    code = "state_expired"


class FlowStateUsedError(FlowStateError):
    code = "state_used"


class OriginNotAllowedError(OAuthError):
    """A flow may post its result only to an origin the operator allowed."""

    code = "origin_not_allowed"
    field = "origin"


class AccountUnknownError(OAuthError):
    code = "account_unknown"


class ProviderUnavailableError(OAuthError):
    code = "provider_unavailable"


class ProviderHostBlockedError(ProviderUnavailableError):
    """An endpoint's host resolves to a loopback, private or link-local address."""
