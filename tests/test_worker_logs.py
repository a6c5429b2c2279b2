"""Secret redaction in the worker's logs, text and JSON modes, through the real handlers."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from ivr.worker.logs import redact, setup_logging

SECRET = "s3cr3tV4lue"
B64 = "dXNlcjpzM2NyM3RWNGx1ZQ=="  # user:s3cr3tV4lue


@pytest.fixture(params=["text", "json"])
def log_output(request: pytest.FixtureRequest) -> Iterator[tuple[str, io.StringIO]]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buf = io.StringIO()
    setup_logging("DEBUG", json_logs=request.param == "json", stream=buf)
    try:
        yield request.param, buf
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


LEAKS = [
    f'request body {{"password": "{SECRET}", "user": "ann"}}',
    f"{{'api_key': '{SECRET}'}}",
    f"headers {{'X-Api-Key': '{SECRET}', 'Accept': 'text/plain'}}",
    f"X-Api-Key: {SECRET}",
    f"Authorization: Basic {B64}",
    f"GET https://api.example/x?q=1&token={SECRET}&page=2",
    f"POST form client_secret={SECRET}&grant_type=client_credentials",
    f'{{"access_token":"{SECRET}","expires_in":3600}}',
    f"Authorization: Bearer {SECRET}",
]


@pytest.mark.parametrize("message", LEAKS)
def test_secrets_are_redacted_in_both_log_modes(log_output: tuple[str, io.StringIO], message: str) -> None:
    mode, buf = log_output
    logging.getLogger("ivr.test").warning("%s", message)
    logging.getLogger("ivr.test").info("with fields", extra={"headers": {"X-Api-Key": SECRET, "Accept": "a/b"},
                                                             "url": f"https://h/x?token={SECRET}"})
    out = buf.getvalue()
    assert SECRET not in out and B64 not in out, out
    assert "[REDACTED]" in out
    if mode == "json":
        lines = [json.loads(line) for line in out.splitlines()]  # still one JSON object a line
        assert lines[1]["headers"] == {"X-Api-Key": "[REDACTED]", "Accept": "a/b"}


def test_ordinary_text_is_left_alone() -> None:
    for text in ("max_tokens: 200", "monkey=3", "Basic settings loaded", "tokens=5", "key press 1",
                 "call from +4930123 to 800", "http GET failed: api.example: timed out"):
        assert redact(text) == text
