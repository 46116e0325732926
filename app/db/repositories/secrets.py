"""Every encrypted column of the schema, and re-encrypting them under the newest key."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session

from app.db.models import Mailbox, Model, OAuthFlow, OAuthProviderSettings, WebhookEndpoint
from app.security import SecretBox

ENCRYPTED_COLUMNS: tuple[tuple[type[Model], str], ...] = (
    (Mailbox, "password_enc"),
    (Mailbox, "access_token_enc"),
    (Mailbox, "refresh_token_enc"),
    (OAuthProviderSettings, "client_secret_enc"),
    (WebhookEndpoint, "secret_enc"),
    (WebhookEndpoint, "previous_secret_enc"),
    (OAuthFlow, "code_verifier_enc"),
)


def rotate_secrets(session: Session, secrets: SecretBox) -> dict[str, int]:
    """Re-encrypt every stored secret under the newest key; return counts per column.

    A token no configured key opens raises `SecretDecryptionError`: the caller's
    transaction then rolls back, so no column is left half rotated.
    """
    counts: dict[str, int] = {}
    for model, name in ENCRYPTED_COLUMNS:
        table = model.__table__  # type: ignore[attr-defined]
        key = table.primary_key.columns.values()[0]
        column = table.c[name]
        rows = session.execute(sa.select(key, column).where(column.is_not(None))).all()
        for row_key, token in rows:
            session.execute(
                sa.update(table).where(key == row_key).values({name: secrets.rotate(token)})
            )
        counts[f"{table.name}.{name}"] = len(rows)
    return counts
