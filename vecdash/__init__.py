"""vecdash: explore vector search in PostgreSQL with pgvector. The data layer (no Streamlit here)."""

from vecdash.errors import VecdashError

__all__ = ["VecdashError"]
__version__ = "0.1.0"
