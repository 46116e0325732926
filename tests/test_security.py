"""Secrets survive a round trip and key rotation, and nothing else decrypts them."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from app.config import Settings
from app.security import (
    InvalidSecretKeyError,
    SecretBox,
    SecretDecryptionError,
    api_key_prefix,
    generate_api_key,
    hash_api_key,
    verify_api_key,
)


def new_key() -> str:
    return Fernet.generate_key().decode()


def test_a_secret_round_trips_and_is_not_stored_in_clear() -> None:
    box = SecretBox([new_key()])
    token = box.encrypt("hunter2 ünïcode")
    assert "hunter2" not in token
    assert box.decrypt(token) == "hunter2 ünïcode"


def test_rotation_keeps_old_tokens_readable_and_moves_them_to_the_new_key() -> None:
    old, new = new_key(), new_key()
    token = SecretBox([old]).encrypt("password")
    rotating = SecretBox([new, old])

    assert rotating.decrypt(token) == "password"
    rotated = rotating.rotate(token)
    assert SecretBox([new]).decrypt(rotated) == "password"
    with pytest.raises(SecretDecryptionError):
        SecretBox([old]).decrypt(rotated)


def test_a_tampered_token_or_an_unknown_key_is_refused() -> None:
    box = SecretBox([new_key()])
    token = box.encrypt("password")
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]

    with pytest.raises(SecretDecryptionError):
        box.decrypt(tampered)
    with pytest.raises(SecretDecryptionError):
        SecretBox([new_key()]).decrypt(token)
    with pytest.raises(SecretDecryptionError):
        box.rotate("not a token ✗")


def test_a_configured_key_that_is_not_a_fernet_key_is_refused() -> None:
    with pytest.raises(InvalidSecretKeyError):
        SecretBox.from_settings(Settings(secret_keys=[SecretStr("too-short")]))


def test_configured_keys_are_used_newest_first() -> None:
    newest, older = new_key(), new_key()
    box = SecretBox.from_settings(Settings(secret_keys=[SecretStr(newest), SecretStr(older)]))
    assert SecretBox([newest]).decrypt(box.encrypt("password")) == "password"


def test_without_configured_keys_a_private_key_file_is_made_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    token = SecretBox.from_settings(Settings(secret_keys=[])).encrypt("password")

    key_file = tmp_path / "var" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert SecretBox.from_settings(Settings(secret_keys=[])).decrypt(token) == "password"
    assert [path.name for path in key_file.parent.iterdir()] == ["secret.key"]


def test_an_api_key_verifies_against_its_hash_and_nothing_else() -> None:
    key, prefix, key_hash = generate_api_key()
    other_key, _, _ = generate_api_key()

    assert key.startswith(f"ib_{prefix}_")
    assert api_key_prefix(key) == prefix
    assert key_hash == hash_api_key(key)
    assert verify_api_key(key, key_hash)
    assert not verify_api_key(other_key, key_hash)
    assert not verify_api_key(key[:-1], key_hash)


@pytest.mark.parametrize("malformed", ["", "ib_", "ib_abcd", "ib__secret", "xx_abcd_secret"])
def test_a_malformed_api_key_has_no_prefix(malformed: str) -> None:
    assert api_key_prefix(malformed) is None
