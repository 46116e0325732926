"""Settings read from the environment the way an operator writes them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings


def test_oauth_allowed_origins_are_a_comma_separated_list_of_origins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OAUTH_ALLOWED_ORIGINS", " https://CRM.example.com , http://localhost:8080")

    settings = Settings(_env_file=None)

    assert settings.oauth_allowed_origins == ["https://crm.example.com", "http://localhost:8080"]


@pytest.mark.parametrize("value", ["https://crm.example.com/app", "*", "crm.example.com"])
def test_an_allowed_origin_that_is_not_an_origin_stops_the_service(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("OAUTH_ALLOWED_ORIGINS", value)

    with pytest.raises(ValidationError, match="oauth_allowed_origins"):
        Settings(_env_file=None)


def test_plain_imap_and_foreign_origins_are_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMAP_ALLOW_PLAINTEXT", "OAUTH_ALLOWED_ORIGINS"):
        monkeypatch.delenv(name, raising=False)

    settings = Settings(_env_file=None)

    assert settings.imap_allow_plaintext is False
    assert settings.oauth_allowed_origins == []
