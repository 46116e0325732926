"""Built-in providers, and plug-in providers found through the entry-point group."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from app.oauth.errors import InvalidProviderSettingsError, UnknownProviderError
from app.oauth.providers import ClientSettings, TokenGrant, id_token_claims
from app.oauth.registry import ENTRY_POINT_GROUP, load_providers
from tests.support.oauth_rig import GOOGLE_CLIENT_ID, MICROSOFT_CLIENT_ID, id_token

PLUGIN_SOURCE = """
from app.oauth.providers import OAuthProvider


class AcmeProvider(OAuthProvider):
    name = "{name}"
    display_name = "Acme Mail"
    authorize_url = "https://login.acme.test/authorize"
    token_url = "https://login.acme.test/token"
    scopes = ("imap",)
    imap_host = "imap.acme.test"


NOT_A_PROVIDER = 42
"""


def install_distribution(root: Path, entry_points: str, name: str) -> None:
    """Write a module and an installed distribution's metadata, as pip would."""
    (root / f"{name}.py").write_text(PLUGIN_SOURCE.format(name=name.replace("_", "-")))
    dist_info = root / f"{name}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_points}")


def test_built_in_providers_are_gmail_and_microsoft_with_imap_scopes() -> None:
    registry = load_providers()

    gmail = registry.get("gmail")
    microsoft = registry.get("microsoft")
    assert "https://mail.google.com/" in gmail.scopes
    assert (gmail.imap_host, gmail.imap_port) == ("imap.gmail.com", 993)
    assert {"offline_access", "https://outlook.office.com/IMAP.AccessAsUser.All"} <= set(
        microsoft.scopes
    )
    assert (microsoft.imap_host, microsoft.imap_port) == ("outlook.office365.com", 993)


def test_microsoft_endpoints_follow_the_tenant() -> None:
    microsoft = load_providers().get("microsoft")
    tenant = ClientSettings(MICROSOFT_CLIENT_ID, SecretStr("s"), tenant="contoso.onmicrosoft.com")
    default = ClientSettings(MICROSOFT_CLIENT_ID, SecretStr("s"))

    assert microsoft.token_endpoint(tenant) == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )
    assert microsoft.authorization_endpoint(default) == (
        "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"
    )


@pytest.mark.parametrize(
    ("provider", "client_id", "tenant", "field"),
    [
        ("gmail", "not-a-google-id", None, "client_id"),
        ("microsoft", "not-a-guid", None, "client_id"),
        ("microsoft", MICROSOFT_CLIENT_ID, "../../evil.example/x", "tenant"),
    ],
)
def test_settings_a_provider_cannot_accept_name_the_field(
    provider: str, client_id: str, tenant: str | None, field: str
) -> None:
    with pytest.raises(InvalidProviderSettingsError) as refused:
        load_providers().get(provider).validate_settings(client_id, tenant)
    assert refused.value.field == field


def test_valid_settings_pass() -> None:
    registry = load_providers()
    registry.get("gmail").validate_settings(GOOGLE_CLIENT_ID, None)
    registry.get("microsoft").validate_settings(MICROSOFT_CLIENT_ID, "organizations")


def test_microsoft_address_comes_from_preferred_username() -> None:
    grant = TokenGrant(
        access_token=SecretStr("a"),
        refresh_token=None,
        expires_in=3599,
        id_token_claims=id_token_claims(id_token({"preferred_username": "Ann@Contoso.com"})),
    )
    with httpx.Client() as http:
        assert load_providers().get("microsoft").email_address(grant, http) == "ann@contoso.com"


def test_an_entry_point_plugin_appears_in_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"acme_oauth_{uuid.uuid4().hex[:8]}"
    install_distribution(
        tmp_path,
        f"acme = {name}:AcmeProvider\nbroken = {name}:NOT_A_PROVIDER\n"
        f"missing = {name}_missing:Nothing\n",
        name,
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    registry = load_providers()

    plugin = registry.get(name.replace("_", "-"))
    assert plugin.display_name == "Acme Mail"
    assert plugin.imap_host == "imap.acme.test"
    assert {"gmail", "microsoft"} <= {p.name for p in registry}
    with pytest.raises(UnknownProviderError):
        registry.get("broken")
