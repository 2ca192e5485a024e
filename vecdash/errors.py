"""The exception tree. Every message says what went wrong and what to do about it."""

from __future__ import annotations


class VecdashError(Exception):
    """Base class for every error vecdash raises on purpose. Pages show its message as is."""


class ConnectionFailed(VecdashError):
    """The database could not be reached or started."""


class ExtensionMissing(VecdashError):
    """pgvector is not installed in the database, or is too old."""


class InvalidInput(VecdashError):
    """A value given by the user cannot be used (name, dimension, empty text, bad file...)."""


class NotFound(VecdashError):
    """A collection, table or column that was asked for does not exist."""


class ReadOnlyError(VecdashError):
    """A write was attempted while vecdash runs in read-only mode."""


class EmbedderError(VecdashError):
    """An embedding provider is misconfigured or failed."""


class Cancelled(VecdashError):
    """Long-running work was cancelled by the user; what was committed before stays."""


class QueryTimeout(VecdashError):
    """A query ran longer than the statement timeout (VECDASH_STATEMENT_TIMEOUT) and the server
    cancelled it: the message says what was slow and what to do."""
