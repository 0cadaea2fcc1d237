"""Process logging for `modelreg server` and `modelreg agent`: text or JSON lines.

`configure(level, fmt)` sets up the root logger once at start-up; `fmt` is `text` (the
default: `time LEVEL logger: message`) or `json`, and MODELREG_LOG_FORMAT supplies it when
the flag is absent. A JSON line is one object:

    {"time": "2026-12-01T09:30:00.123Z", "level": "INFO", "logger": "modelreg.server",
     "message": "...", "trace_id": "...", "span_id": "...", "principal": "alice"}

`trace_id`/`span_id` appear when tracing is on and a span is current; `principal` appears
on audited actions, which log with `extra={"principal": actor}`; `exception` carries a
traceback. Standard library only (the formatter is a few lines; python-json-logger would add
a dependency to both extras for no behaviour we need).

`redact(secrets)` is the second guard against secrets in logs (the messages are written
without them): every handler's formatter replaces each secret of 4 characters or more with
`****` in the final line, text or JSON.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

from modelreg_runtime import tracing

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for the keys)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids = tracing.current_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        principal = getattr(record, "principal", None)
        if principal:
            entry["principal"] = str(principal)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class RedactingFormatter(logging.Formatter):
    """Wraps a formatter; masks the secrets in what it returns."""

    def __init__(self, inner: logging.Formatter, secrets: list[str]):
        super().__init__()
        self.inner = inner
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = self.inner.format(record)
        for secret in self.secrets:
            line = line.replace(secret, "****")
        return line


def resolve_format(fmt: str | None) -> str:
    """The flag's value, else MODELREG_LOG_FORMAT, else text. Raises ValueError naming the
    choices for anything else."""
    value = (fmt or os.environ.get("MODELREG_LOG_FORMAT") or "text").strip().lower()
    if value not in FORMATS:
        source = "--log-format" if fmt else "MODELREG_LOG_FORMAT"
        raise ValueError(f"{source}={value!r} is not a log format: use text or json")
    return value


def configure(level: str, fmt: str | None = None) -> None:
    """Logs records at `level` and above to stderr as text or JSON lines (the root logger's
    handlers are replaced). Raises ValueError for an unknown format or level."""
    name = resolve_format(fmt)
    numeric = logging.getLevelName(level.strip().upper())
    if not isinstance(numeric, int):
        raise ValueError(f"--log-level {level!r} is not a level: use DEBUG, INFO, WARNING or ERROR")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if name == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)


def redact(secrets: list[str]) -> None:
    """Masks `secrets` in every line the root logger's handlers write from now on."""
    for handler in logging.getLogger().handlers:
        inner = handler.formatter or logging.Formatter(TEXT_FORMAT)
        if isinstance(inner, RedactingFormatter):
            inner = inner.inner
        handler.setFormatter(RedactingFormatter(inner, secrets))
