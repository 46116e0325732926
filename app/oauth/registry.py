"""Find the installed OAuth providers: the built-ins, then the entry-point plug-ins.

A distribution adds a provider without touching this service by declaring

    [project.entry-points."imap_bridge.oauth_providers"]
    acme = "acme_mail.oauth:AcmeProvider"

where `AcmeProvider` subclasses `app.oauth.providers.OAuthProvider`. A broken
plug-in is logged and skipped, so it cannot take the service down; a plug-in
cannot replace a built-in provider of the same name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import lru_cache
from importlib.metadata import entry_points

from app.oauth.errors import UnknownProviderError
from app.oauth.providers import GmailProvider, MicrosoftProvider, OAuthProvider

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "imap_bridge.oauth_providers"
BUILT_IN_PROVIDERS: tuple[type[OAuthProvider], ...] = (GmailProvider, MicrosoftProvider)


class ProviderRegistry:
    """The providers of this process, by name."""

    def __init__(self, providers: list[OAuthProvider]) -> None:
        self._by_name = {provider.name: provider for provider in providers}

    def get(self, name: str) -> OAuthProvider:
        """Return the provider called `name`, else raise `UnknownProviderError`."""
        provider = self._by_name.get(name)
        if provider is None:
            raise UnknownProviderError(f"oauth provider {name} does not exist")
        return provider

    def __iter__(self) -> Iterator[OAuthProvider]:
        return iter(sorted(self._by_name.values(), key=lambda provider: provider.name))


def load_providers() -> ProviderRegistry:
    """Instantiate the built-ins and every provider class the entry points name."""
    providers = [cls() for cls in BUILT_IN_PROVIDERS]
    taken = {provider.name for provider in providers}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
        except Exception:
            log.exception("oauth.provider_unloadable", extra={"entry_point": entry_point.name})
            continue
        if not (isinstance(loaded, type) and issubclass(loaded, OAuthProvider)):
            log.error("oauth.provider_not_a_provider", extra={"entry_point": entry_point.name})
            continue
        provider = loaded()
        if provider.name in taken:
            log.error("oauth.provider_name_taken", extra={"provider": provider.name})
            continue
        taken.add(provider.name)
        providers.append(provider)
    return ProviderRegistry(providers)


@lru_cache(maxsize=1)
def installed_providers() -> ProviderRegistry:
    """Return the providers of this process, looked up once."""
    return load_providers()
