"""The deduplication key of a message within one mailbox.

Gmail gives every message a stable X-GM-MSGID across labels; elsewhere the
Message-ID is the best key a message carries. A message without one is
keyed by a hash of what its sender wrote (date, from, subject) and its size.
The key only proposes a merge: the sync never merges two UIDs of one folder.
"""

from __future__ import annotations

import hashlib

from app.imap.message import ParsedMessage

# Longer keys are hashed, so pathological Message-IDs still fit an index.
_MAX_KEY_LENGTH = 200


def message_identity(message: ParsedMessage) -> str:
    """Return `gm:<X-GM-MSGID>`, else `mid:<Message-ID>`, else `h:<sha256 of the envelope>`."""
    if message.gm_msgid is not None:
        return f"gm:{message.gm_msgid}"
    if message.message_id:
        key = f"mid:{message.message_id}"
        if len(key) <= _MAX_KEY_LENGTH:
            return key
        return "mid#" + hashlib.sha256(message.message_id.encode()).hexdigest()
    sender = message.sender.email.lower() if message.sender else ""
    sent = message.date.isoformat() if message.date else ""
    envelope = "\x1f".join((sent, sender, message.subject, str(message.size)))
    return "h:" + hashlib.sha256(envelope.encode("utf-8", "replace")).hexdigest()
