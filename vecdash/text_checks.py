"""User text checked before it reaches PostgreSQL or the model: the right type, no NUL byte
(PostgreSQL text cannot hold one), no lone surrogate (it cannot be encoded as UTF-8). A leaf.

Queries, filter values, labeled-query files and collection names are refused with a message;
documents being loaded have their NUL bytes removed instead (``strip_nul``), with a warning.
"""

from __future__ import annotations

import re
from typing import Any

from vecdash.errors import InvalidInput

_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(value: Any) -> str:
    """Why ``value`` cannot be sent to PostgreSQL as text ("" when it can)."""
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not text"
    if "\x00" in value:
        return "contains a NUL character (\\x00)"
    if _SURROGATE.search(value):
        return "contains an invalid character (a lone UTF-16 surrogate)"
    return ""


def check_text(value: Any, what: str) -> str:
    """``value`` when it is usable text; InvalidInput naming ``what`` and the fix otherwise."""
    problem = text_problem(value)
    if problem:
        raise InvalidInput(f"The {what} {problem}. Remove it and try again.")
    return str(value)


def strip_nul(value: str) -> str:
    """``value`` without NUL characters and lone surrogates (what a document's text keeps)."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if _SURROGATE.search(value):
        value = _SURROGATE.sub("\ufffd", value)
    return value
