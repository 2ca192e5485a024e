"""Settings, read from the environment in one place.

Every setting is declared once in ``SETTINGS`` with its environment variable, default and a line of
help; README's settings table is generated from the same list (``python -m vecdash settings``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import platformdirs


@dataclass(frozen=True)
class SettingSpec:
    field: str
    env: str
    default: str
    help: str


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "database_url",
        "VECDASH_DATABASE_URL",
        "",
        "PostgreSQL URL (postgresql://user:pass@host:5432/db). Empty: use libpq PG* variables if "
        "PGHOST or PGDATABASE is set, else start the embedded server.",
    ),
    SettingSpec(
        "data_dir",
        "VECDASH_DATA_DIR",
        platformdirs.user_data_dir("vecdash"),
        "Directory for the embedded PostgreSQL data (pgdata/ inside it); reused on the next start.",
    ),
    SettingSpec(
        "shared_buffers",
        "VECDASH_SHARED_BUFFERS",
        "auto",
        "The embedded server's buffer cache (e.g. 1GB). auto: a quarter of the machine's memory, "
        "128MB to 4GB (memory is taken only as pages are cached). Applies when the server starts.",
    ),
    SettingSpec(
        "embedded_port",
        "VECDASH_EMBEDDED_PORT",
        "",
        "Empty: the embedded server has no TCP listener (a Unix socket only its owner can reach). "
        "A port: it also listens on 127.0.0.1 there, password login only (scram-sha-256).",
    ),
    SettingSpec(
        "read_only",
        "VECDASH_READ_ONLY",
        "0",
        "1 hides every action that writes and makes every transaction read-only (for demos).",
    ),
    SettingSpec(
        "autoload_demo",
        "VECDASH_AUTOLOAD_DEMO",
        "1",
        "1 loads the bundled demo collection on the first start when it is missing.",
    ),
    SettingSpec(
        "pool_size",
        "VECDASH_POOL_SIZE",
        "4",
        "Maximum number of pooled database connections the dashboard keeps open.",
    ),
    SettingSpec(
        "statement_timeout",
        "VECDASH_STATEMENT_TIMEOUT",
        "30s",
        "Longest one interactive query (a search, an evaluation, a page's data) may run before "
        "PostgreSQL cancels it and vecdash says what to do: a duration such as 500ms, 30s or 2min "
        "(a bare number is milliseconds); 0 turns it off. Loads, index builds and exports are "
        "never cut by it.",
    ),
    SettingSpec(
        "embed_precision",
        "VECDASH_EMBED_PRECISION",
        "auto",
        "How the local model runs: auto calibrates once per machine and picks the fastest of "
        "float32 and bfloat16 that keeps the vectors (cosine with float32 >= 0.9999); float32 or "
        "bfloat16 forces one.",
    ),
    SettingSpec(
        "openai_api_key",
        "OPENAI_API_KEY",
        "",
        "Key for the OpenAI embedding provider (or put it in .streamlit/secrets.toml).",
    ),
    SettingSpec(
        "openai_base_url",
        "OPENAI_BASE_URL",
        "",
        "Base URL of an OpenAI-compatible embeddings server; empty means api.openai.com.",
    ),
)

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    database_url: str
    data_dir: Path
    shared_buffers: str
    embedded_port: str
    read_only: bool
    autoload_demo: bool
    pool_size: int
    statement_timeout: str
    embed_precision: str
    openai_api_key: str
    openai_base_url: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        raw = {spec.field: env.get(spec.env, "") or spec.default for spec in SETTINGS}
        try:
            pool_size = max(1, int(raw["pool_size"]))
        except ValueError:
            pool_size = 4
        return cls(
            database_url=raw["database_url"].strip(),
            data_dir=Path(raw["data_dir"]).expanduser(),
            shared_buffers=raw["shared_buffers"].strip(),
            embedded_port=raw["embedded_port"].strip(),
            read_only=raw["read_only"].strip().lower() in _TRUE,
            autoload_demo=raw["autoload_demo"].strip().lower() in _TRUE,
            pool_size=pool_size,
            statement_timeout=raw["statement_timeout"].strip(),
            embed_precision=raw["embed_precision"].strip().lower(),
            openai_api_key=raw["openai_api_key"].strip(),
            openai_base_url=raw["openai_base_url"].strip(),
        )

    def uses_libpq_env(self, environ: Mapping[str, str] | None = None) -> bool:
        """True when no URL is set but libpq PG* variables point at a server."""
        env = os.environ if environ is None else environ
        return not self.database_url and bool(env.get("PGHOST") or env.get("PGDATABASE"))


assert {s.field for s in SETTINGS} == {f.name for f in fields(Settings)}


def settings_table() -> str:
    """The settings as a Markdown table (README)."""
    lines = ["| variable | default | what it does |", "|---|---|---|"]
    for spec in SETTINGS:
        default = spec.default if spec.field != "data_dir" else "user data dir/vecdash"
        lines.append(f"| `{spec.env}` | `{default}` | {spec.help} |")
    return "\n".join(lines)
