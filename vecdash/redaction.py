"""Secrets taken out of any text before it is shown or logged: the one function every error path
uses (the CLI, the dashboard's error boxes, every log record of the dashboard's process).

Redacted: the secrets of the current environment wherever they appear (the password of
VECDASH_DATABASE_URL raw and percent-decoded, PGPASSWORD, OPENAI_API_KEY), a URL's password
(``scheme://user:password@``, even in a URL too broken to parse), ``password=`` in a conninfo string,
and anything shaped like an OpenAI key (``sk-...``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

MASK = "***"
SECRET_ENV = ("VECDASH_DATABASE_URL", "PGPASSWORD", "OPENAI_API_KEY")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^\s]*)@")
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\b(?:password|passwd|api_key)\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)",
                               re.IGNORECASE)
_OPENAI_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")


def url_password(url: str) -> str:
    """The password part of a URL (up to its last ``@``), even when the URL does not parse."""
    match = _URL_PASSWORD.search(url)
    return match.group("pw") if match else ""


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The secret values of the environment, each as written and percent-decoded."""
    env = os.environ if environ is None else environ
    found = [url_password(env.get("VECDASH_DATABASE_URL", "")), env.get("PGPASSWORD", ""),
             env.get("OPENAI_API_KEY", "")]
    out: list[str] = []
    for value in found:
        for form in (value, unquote(value)):
            if len(form) >= 3 and form not in out:
                out.append(form)
    return out


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known or recognisable secret replaced by ***."""
    for secret in sorted({*environment_secrets(), *(s for s in secrets if len(s) >= 3)},
                         key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)
    text = _KEYWORD_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _OPENAI_KEY.sub("sk-" + MASK, text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message (arguments merged first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


def _redact_record(record: logging.LogRecord) -> None:
    """Redact a record in place: its message (arguments merged), its traceback and stack."""
    record.msg = redact(record.getMessage())
    record.args = None
    if record.exc_info and not record.exc_text:
        # Formatters use exc_text when it is set, so the traceback is printed redacted.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def redact_every_log_record() -> None:
    """Redact every log record the process makes, whichever logger and handler it reaches.

    Streamlit gives each of its loggers its own console handler (not propagating to the root)
    and replaces those handlers when its configuration changes, so a filter on handlers would
    miss some; the record factory sees every record once, as it is made. Idempotent.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "vecdash_redacting", False):
        return

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        _redact_record(record)
        return record

    redacting_factory.vecdash_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)


def redact_logs(logger_name: str = "vecdash") -> None:
    """Redact every record vecdash's loggers emit (a logger's filters do not apply to its
    children's records, so the filter goes on each handler that receives them)."""
    for handler in logging.getLogger().handlers + logging.getLogger(logger_name).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
