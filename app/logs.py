"""The process's logging: one setup for every command (API, worker, watcher, `run`, the CLI).

    a record (ours, uvicorn's, arq's, httpx's, alembic's)
      -> arq's "job started" / "job succeeded" lines: demoted to DEBUG (the job's own
         lines say what it did; the dispatcher's cron would otherwise log every 10 s)
      -> the root's one handler, on stderr, at LOG_LEVEL:
           RedactionFilter ........ secrets, URL query strings, OAuth codes (app.log_redaction)
           correlation id ......... stamped from the context (app.correlation), when bound
           LOG_FORMAT=text ........ `2026-12-08T09:15:02.042Z INFO app.worker worker.sync_done
                                     mailbox_id=3 status=succeeded correlation_id=5f0c...`
           LOG_FORMAT=json ........ one object per line: time, level, logger, message, then
                                     every `extra=` field and the correlation id, then the
                                     exception's traceback as `exception`

Our records carry a fixed event name as the message and their facts as `extra=`
fields; both formats print every field, so nothing a log call says is lost.
uvicorn's own logging configuration is not used (`log_config=None`): its lines
go through this handler like the rest. A process whose logging is already set
up (an application embedding ours, a test run) keeps its handlers; they get
the redaction and correlation filters.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from app.config import LogFormat
from app.correlation import current_correlation_id
from app.log_redaction import extra_fields, install_log_redaction

# uvicorn repeats its message with ANSI colours in this field.
_NOT_FIELDS = frozenset({"color_message"})
_TEXT_NEEDS_QUOTES = re.compile(r"[\s\"'=]|^$")
_CORE_FIELDS = ("time", "level", "logger", "message")
# arq logs "<seconds> → <job>(<args>)" and "<seconds> ← <job> ● <result>" at INFO for every job.
_ARQ_JOB_LINES = ("%6.2fs → %s(%s)%s", "%6.2fs ← %s ● %s")


class CorrelationFilter(logging.Filter):
    """Stamp the bound correlation id on a record as its `correlation_id` field."""

    def filter(self, record: logging.LogRecord) -> bool:
        correlation_id = current_correlation_id()
        if correlation_id is not None and not hasattr(record, "correlation_id"):
            record.correlation_id = correlation_id
        return True


class QuietJobLines(logging.Filter):
    """Demote arq's per-job start and success lines to DEBUG, and drop them below it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.msg in _ARQ_JOB_LINES:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


class TextFormatter(logging.Formatter):
    """`<UTC time> <LEVEL> <logger> <message> key=value ...`, then any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = " ".join(
            [
                _utc(record),
                record.levelname,
                record.name,
                record.getMessage(),
                *(f"{name}={_text_value(value)}" for name, value in _fields(record).items()),
            ]
        )
        tail = _traceback(self, record)
        return f"{line}\n{tail}" if tail else line


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in _fields(record).items():
            line[f"extra_{name}" if name in _CORE_FIELDS else name] = value
        tail = _traceback(self, record)
        if tail:
            line["exception"] = tail
        return json.dumps(line, ensure_ascii=False, default=str)


def _utc(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: value for name, value in extra_fields(record).items() if name not in _NOT_FIELDS}


def _text_value(value: object) -> str:
    text = (
        value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    )
    if isinstance(value, str) and _TEXT_NEEDS_QUOTES.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


def _traceback(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    parts = []
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts)


_STAMP_CORRELATION = CorrelationFilter()
_QUIET_JOB_LINES = QuietJobLines()


def log_handler(log_format: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    """Return a handler writing `log_format` lines to `stream` (stderr), redacted, correlated."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    _filter(handler)
    return handler


def _filter(handler: logging.Handler) -> None:
    """Put the redaction filter, then the correlation stamp, on `handler`, each once."""
    install_log_redaction(handler)
    if _STAMP_CORRELATION not in handler.filters:
        handler.addFilter(_STAMP_CORRELATION)


def configure_logging(level: int, log_format: LogFormat) -> None:
    """Set up the process's logging (see the module docstring)."""
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: logging set up elsewhere stays as it is
        root.addHandler(log_handler(log_format))
        root.setLevel(level)
    for handler in root.handlers:
        _filter(handler)
    arq = logging.getLogger("arq.worker")
    if _QUIET_JOB_LINES not in arq.filters:
        arq.addFilter(_QUIET_JOB_LINES)
