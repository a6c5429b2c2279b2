"""Logging for the worker: the call id on every line, JSON or text, secrets redacted.

Each call runs in its own asyncio task; :data:`current_call_id` is a context variable set in
that task, so every log line written while handling the call - in our code or a library's -
carries the call id without passing it around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from typing import Any

current_call_id: contextvars.ContextVar[str] = contextvars.ContextVar("ivr_call_id", default="-")

# Anything that looks like a credential in a message: bearer and basic credentials, JWTs,
# secrets in query strings, form bodies, headers and JSON (`"api_key": "..."`). Redacted
# even if some code logs them by mistake. A key counts as secret when its name ends in
# secret, password, token or (api-)key, or is `key`, `sig` or `signature`.
_SECRET_KEY = r"(?:[\w-]*?(?:secret|password|passwd|token|api[_-]?key|apikey)|key|sig|signature|authorization)"
_SECRET_PATTERNS = [
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[REDACTED]"),
    # Basic credentials are base64: a token with a digit, + / =, or a capital after its first letter
    (re.compile(r"\b(Basic\s+)(?=[A-Za-z0-9+/]*(?:[0-9+/=]|[a-z][A-Z]))[A-Za-z0-9+/]{6,}={0,2}"), r"\1[REDACTED]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), "[REDACTED-JWT]"),
    (re.compile(r"(?i)(?<![\w-])(" + _SECRET_KEY + r"[\"']?\s*[=:]\s*[\"']?)(?!\[REDACTED|bearer\s|basic\s)"
                r"[^\s&\"',;}\]]+"), r"\1[REDACTED]"),
]


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``[REDACTED]``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_SECRET_NAME = re.compile(r"(?i)\A" + _SECRET_KEY + r"\Z")


def redact_value(value: Any) -> Any:
    """A log field with its secrets redacted: strings by :func:`redact`, mappings by key
    (the value of a key like ``X-Api-Key`` is dropped whole) and recursively."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: "[REDACTED]" if isinstance(k, str) and _SECRET_NAME.match(k) and v not in (None, "")
                else redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


class CallContextFilter(logging.Filter):
    """Adds ``record.call_id`` from the running task's context (unless already set)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_id"):
            record.call_id = current_call_id.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s [%(call_id)s] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, call_id, msg, plus any ``extra`` fields."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "call_id"}

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "call_id": getattr(record, "call_id", "-"),
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        # redacted field by field, before encoding: inside a JSON string a secret's quotes
        # are escaped (\\"password\\": ...) and a pattern over the encoded line misses them
        return json.dumps(redact_value(data), default=lambda o: redact(str(o)))


def setup_logging(level: str = "INFO", json_logs: bool = False, stream=None) -> None:
    """Configure the root logger once for the process."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(CallContextFilter())
    handler.setFormatter(JsonFormatter() if json_logs else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("websockets", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
