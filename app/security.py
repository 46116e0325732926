"""Secrets at rest and API keys.

Passwords, OAuth tokens, client and webhook secrets are stored as Fernet
tokens (AES-128-CBC + HMAC-SHA256). `SECRET_KEYS` lists keys newest first:
the newest encrypts, every one decrypts, so a key is rotated by prepending a
new one, re-encrypting stored tokens with `SecretBox.rotate`, then dropping
the old key. With no key configured, one is generated once into
`var/secret.key` (mode 0600), which is fine for a single machine and must be
backed up with the database.

API keys look like `ib_<prefix>_<secret>`; only the SHA-256 of the whole key
is stored (the key is 256 random bits, so a slow hash would add nothing), and
the prefix finds the row.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.config import DATA_DIR, Settings

API_KEY_SCHEME = "ib"
SECRET_KEY_FILE = DATA_DIR / "secret.key"


class SecretError(Exception):
    """Base of the secret-handling errors; `code` is stable and safe to show."""

    code = "secret_error"


class SecretDecryptionError(SecretError):
    """The token was tampered with, or none of the configured keys made it."""

    code = "secret_undecryptable"


class InvalidSecretKeyError(SecretError):
    """A configured key is not a Fernet key (32 url-safe base64-encoded bytes)."""

    code = "invalid_secret_key"


class SecretBox:
    """Encrypt with the newest key, decrypt with any of them."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise InvalidSecretKeyError("at least one key is needed")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError as exc:
            raise InvalidSecretKeyError(str(exc)) from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """Use `SECRET_KEYS`, else the key in `var/secret.key`, created on first use."""
        keys = [key.get_secret_value() for key in settings.secret_keys]
        return cls(keys or [load_or_create_key_file(SECRET_KEY_FILE)])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        return self._open(token, self._fernet.decrypt).decode()

    def rotate(self, token: str) -> str:
        """Re-encrypt `token` under the newest key, keeping its original timestamp."""
        return self._open(token, self._fernet.rotate).decode("ascii")

    @staticmethod
    def _open(token: str, operation: Callable[[bytes], bytes]) -> bytes:
        try:
            return operation(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError) as exc:
            raise SecretDecryptionError("cannot decrypt with the configured keys") from exc


def load_or_create_key_file(path: Path) -> str:
    """Return the key stored at `path`, generating it (mode 0600) if there is none yet.

    The key is written to a private temporary file and hard-linked into place,
    so processes starting together all end up reading the same complete key.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret-")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(Fernet.generate_key())
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process won the race; use its key
        finally:
            os.unlink(temporary)
    return path.read_text(encoding="ascii").strip()


def generate_api_key() -> tuple[str, str, str]:
    """Return a new key as `(full key shown once, prefix, sha256 hex to store)`."""
    prefix = secrets.token_hex(4)
    key = f"{API_KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, hash_api_key(key)


def api_key_prefix(key: str) -> str | None:
    """Return the prefix of a well-formed key, None for anything else."""
    scheme, _, rest = key.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != API_KEY_SCHEME or not prefix or not secret:
        return None
    return prefix


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def verify_api_key(key: str, stored_hash: str) -> bool:
    """Compare in constant time, so response timing says nothing about the stored hash."""
    return hmac.compare_digest(hash_api_key(key), stored_hash)
