"""Keep secrets out of log lines: URL query strings, OAuth codes, tokens, passwords.

    a record is made (ours, uvicorn's access or error log, httpx's request log)
      -> RedactionFilter, in place, before any handler writes it:
           message and each argument: the query string of every URL or path
             (`/oauth/gmail/callback?code=...&state=...` -> `...callback?[redacted]`)
             and `name=value` pairs whose name says secret (`password=...`)
           exception text: the same
           `extra=` fields named like a secret (password, token, secret, code,
             state, authorization ...): dropped; the others' text redacted as
             above, inside lists and mappings too (whose secret-named keys go)
      -> handlers

Where it sits: on the loggers of uvicorn and httpx (their records are made
there: the access log line holds the request's query string, httpx's holds the
URL it posted to, a webhook URL's token included), and on the handler the
process's logging setup (app.logs) gives the root logger, which every record of
`app.*` reaches. Redacting replaces arguments by text only where something was taken
out, so formatters that read the arguments (uvicorn's access formatter) keep
working. It scans in linear time: log lines can hold a peer's input.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"
# Loggers of libraries that log request URLs; the filter goes on them directly.
URL_LOGGERS = ("uvicorn.access", "uvicorn.error", "httpx")
SECRET_NAMES = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "authorization",
        "client_secret",
        "code",
        "code_verifier",
        "id_token",
        "key",
        "passwd",
        "password",
        "refresh_token",
        "secret",
        "state",
        "token",
    }
)
_SECRET_SUFFIXES = ("_password", "_secret", "_token", "_key")
# `name=value` with a secret name, anywhere in a line (a form body, a query quoted alone).
_SECRET_PAIR = re.compile(
    r"\b(?P<name>" + "|".join(sorted(SECRET_NAMES, key=len, reverse=True)) + r")=[^&\s\"'<>]*",
    re.IGNORECASE,
)
# What separates the words of a line: a URL or path never contains these.
_WORD_BOUNDARY = re.compile(r"([\s\"'<>]+)")
# Attributes every LogRecord has; anything else came in through `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Return the fields that came into `record` through `extra=` (or a filter), in order."""
    return {
        name: value for name, value in record.__dict__.items() if name not in _RECORD_ATTRIBUTES
    }


def is_secret_name(name: str) -> bool:
    """Say whether a field or parameter named `name` holds a secret."""
    lowered = name.lower()
    return lowered in SECRET_NAMES or lowered.endswith(_SECRET_SUFFIXES)


def redact_text(text: str) -> str:
    """Return `text` without URL query strings and without secret `name=value` values."""
    if "?" in text:
        words = _WORD_BOUNDARY.split(text)
        text = "".join(_without_query(word) for word in words)
    if "=" in text:
        text = _SECRET_PAIR.sub(lambda match: f"{match['name']}={REDACTED}", text)
    return text


def _without_query(word: str) -> str:
    path, mark, query = word.partition("?")
    if not mark or "/" not in path or not query:
        return word
    _, hash_mark, fragment = query.partition("#")
    return f"{path}?{REDACTED}{hash_mark}{fragment}"


class RedactionFilter(logging.Filter):
    """Redact a record in place (see the module docstring); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _redacted_arg(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {key: _redacted_arg(value) for key, value in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_redacted_arg(value) for value in record.args)
        for name, value in extra_fields(record).items():
            if is_secret_name(name):
                delattr(record, name)
            else:
                setattr(record, name, _redacted_field(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def _redacted_field(value: object) -> object:
    """Redact an `extra=` value: text, and the text inside lists and mappings."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            key: _redacted_field(item)
            for key, item in value.items()
            if not (isinstance(key, str) and is_secret_name(key))
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted_field(item) for item in value]
    return value


def _redacted_arg(value: object) -> object:
    """Keep an argument as it is unless redacting its text takes something out."""
    if isinstance(value, int | float | bool) or value is None:
        return value
    text = str(value)
    redacted = redact_text(text)
    return value if redacted == text else redacted


_FILTER = RedactionFilter()


def install_log_redaction(*handlers: logging.Handler) -> None:
    """Put the redaction filter on URL_LOGGERS and on `handlers`, each once."""
    targets: list[logging.Filterer] = [logging.getLogger(name) for name in URL_LOGGERS]
    for target in [*targets, *handlers]:
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
