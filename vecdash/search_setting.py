"""A complete search setting (what the Search page's widgets hold), its spec syntax, and the one
saved per collection (``vecdash_search_defaults``) that the Search page opens with.

Specs (``parse_setting``; the eval command's ``--compare`` takes them):

    semantic | bm25 | ts_rank_cd | keyword | hybrid   then any of
    w=0.7  fusion=convex|rrf  rrf_k=60  ranker=bm25|ts_rank_cd  k1=1.2  b=0.75  depth=100

e.g. ``"hybrid w=0.7"``, ``"hybrid w=0.6 fusion=rrf rrf_k=20 k1=0.9"``, ``"bm25 b=0.5"``.
``keyword`` is ``bm25`` unless ranker= says otherwise; ``hybrid`` alone is w=0.5. A setting's
``label`` is its spec with the defaults left out, so labels parse back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from vecdash.bm25.statistics import DEFAULT_B, DEFAULT_K1, check_parameters
from vecdash.collections import Collection
from vecdash.db import relation_exists, require_writable
from vecdash.errors import InvalidInput
from vecdash.quality import Config
from vecdash.search import FUSIONS, KEYWORD_RANKERS, MAX_CANDIDATES

_SPEC_KEYS = ("w", "fusion", "rrf_k", "ranker", "k1", "b", "depth")
DEFAULTS_TABLE = "vecdash_search_defaults"
DEFAULTS_DDL = sql.SQL("""
CREATE TABLE IF NOT EXISTS {} (
    collection text PRIMARY KEY,
    settings   jsonb NOT NULL,
    note       text NOT NULL DEFAULT '',
    saved_at   timestamptz NOT NULL DEFAULT now()
)""").format(sql.Identifier(DEFAULTS_TABLE))


@dataclass(frozen=True)
class Setting:
    """One complete way to rank: what the Search page's widgets hold. weight is the semantic
    share (1 semantic only, 0 keyword only); candidates is each arm's depth."""

    weight: float
    fusion: str = "convex"
    rrf_k: int = 60
    keyword_ranker: str = "bm25"
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B
    candidates: int = 100

    def normalized(self) -> Setting:
        """The same ranking with the knobs it ignores at their defaults (semantic alone ignores
        the keyword arm; an arm alone ignores the fusion; ts_rank_cd ignores k1 and b)."""
        s = self
        if s.weight >= 1.0:
            return Setting(1.0, candidates=s.candidates)
        if s.weight <= 0.0:
            s = replace(s, weight=0.0, fusion="convex", rrf_k=60)
        if s.fusion != "rrf":
            s = replace(s, rrf_k=60)
        if s.keyword_ranker != "bm25":
            s = replace(s, k1=DEFAULT_K1, b=DEFAULT_B)
        return s

    @property
    def bm25_pair(self) -> tuple[float, float]:
        """The (k1, b) whose candidates this setting is fused from."""
        s = self.normalized()
        return (s.k1, s.b)

    @property
    def label(self) -> str:
        s = self.normalized()
        if s.weight >= 1.0:
            head = "semantic"
        elif s.weight <= 0.0:
            head = s.keyword_ranker
        else:
            head = f"hybrid w={s.weight:g}"
            if s.fusion != "convex":
                head += f" fusion={s.fusion}"
            if s.fusion == "rrf" and s.rrf_k != 60:
                head += f" rrf_k={s.rrf_k}"
            if s.keyword_ranker != "bm25":
                head += f" ranker={s.keyword_ranker}"
        if s.keyword_ranker == "bm25" and s.weight < 1.0:
            if s.k1 != DEFAULT_K1:
                head += f" k1={s.k1:g}"
            if s.b != DEFAULT_B:
                head += f" b={s.b:g}"
        if s.candidates != 100:
            head += f" depth={s.candidates}"
        return head

    def config(self) -> Config:
        s = self.normalized()
        return Config(self.label, s.weight, s.fusion, s.rrf_k, s.keyword_ranker,
                      depth=s.candidates)

    def search_state(self) -> dict[str, Any]:
        """The Search page's widget values for this setting (its session-state keys)."""
        s = self.normalized()
        mode = "semantic" if s.weight >= 1.0 else "keyword" if s.weight <= 0.0 else "hybrid"
        return {"search_mode": mode, "search_weight": float(s.weight),
                "search_fusion": s.fusion, "search_rrf_k": int(s.rrf_k),
                "search_keyword_ranker": s.keyword_ranker, "search_k1": float(s.k1),
                "search_b": float(s.b), "search_candidates": int(s.candidates)}

    def to_json(self) -> dict[str, Any]:
        return {"weight": self.weight, "fusion": self.fusion, "rrf_k": self.rrf_k,
                "keyword_ranker": self.keyword_ranker, "k1": self.k1, "b": self.b,
                "candidates": self.candidates}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Setting:
        try:
            return check_setting(cls(float(data["weight"]), str(data["fusion"]),
                                     int(data["rrf_k"]), str(data["keyword_ranker"]),
                                     float(data["k1"]), float(data["b"]),
                                     int(data["candidates"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"The saved search setting is not readable ({exc}); save the "
                               "setting again from the Quality Lab.") from None


def check_setting(s: Setting) -> Setting:
    """The setting, or InvalidInput saying which value is out of range."""
    if not 0.0 <= s.weight <= 1.0:
        raise InvalidInput(f"The semantic weight must be between 0 and 1; got {s.weight!r}.")
    if s.fusion not in FUSIONS:
        raise InvalidInput(f"Unknown fusion {s.fusion!r}; choose one of {', '.join(FUSIONS)}.")
    if s.rrf_k < 1:
        raise InvalidInput(f"The RRF k must be at least 1; got {s.rrf_k!r}.")
    if s.keyword_ranker not in KEYWORD_RANKERS:
        raise InvalidInput(f"Unknown keyword ranker {s.keyword_ranker!r}; choose one of "
                           f"{', '.join(KEYWORD_RANKERS)}.")
    check_parameters(s.k1, s.b)
    if not 1 <= s.candidates <= MAX_CANDIDATES:
        raise InvalidInput(f"The candidate depth must be between 1 and {MAX_CANDIDATES}; got "
                           f"{s.candidates!r}.")
    return s


def parse_setting(spec: str) -> Setting:
    """A setting from its spec (see the module's docstring), e.g. ``"hybrid w=0.7"``."""
    words = spec.split()
    heads = {"semantic": Setting(1.0), "bm25": Setting(0.0), "keyword": Setting(0.0),
             "ts_rank_cd": Setting(0.0, keyword_ranker="ts_rank_cd"), "hybrid": Setting(0.5)}
    if not words or words[0].lower() not in heads:
        raise InvalidInput(f"Cannot read the setting {spec!r}: start with one of "
                           f"{', '.join(heads)}, then key=value pairs ({', '.join(_SPEC_KEYS)}), "
                           "e.g. \"hybrid w=0.7 fusion=rrf\".")
    s = heads[words[0].lower()]
    for word in words[1:]:
        key, sep, value = word.partition("=")
        try:
            if not sep or key not in _SPEC_KEYS:
                raise ValueError
            if key == "w":
                s = replace(s, weight=float(value))
            elif key == "fusion":
                s = replace(s, fusion=value)
            elif key == "ranker":
                s = replace(s, keyword_ranker=value)
            elif key == "rrf_k":
                s = replace(s, rrf_k=int(value))
            elif key == "depth":
                s = replace(s, candidates=int(value))
            elif key == "k1":
                s = replace(s, k1=float(value))
            else:
                s = replace(s, b=float(value))
        except ValueError:
            raise InvalidInput(f"Cannot read {word!r} in the setting {spec!r}: use key=value with "
                               f"one of {', '.join(_SPEC_KEYS)}, e.g. w=0.7 or k1=1.2.") from None
    return check_setting(s)


@dataclass(frozen=True)
class SavedSetting:
    setting: Setting
    note: str
    saved_at: datetime


def save_search_setting(conn: psycopg.Connection[Any], collection: Collection, setting: Setting,
                        *, note: str = "") -> None:
    """Save ``setting`` as the collection's search default (one row, replaced; one
    transaction). Refused in read-only mode."""
    require_writable(conn)
    check_setting(setting)
    with conn.transaction():
        conn.execute(DEFAULTS_DDL)
        conn.execute(
            sql.SQL("INSERT INTO {} (collection, settings, note) VALUES (%s, %s::jsonb, %s) "
                    "ON CONFLICT (collection) DO UPDATE SET settings = EXCLUDED.settings, "
                    "note = EXCLUDED.note, saved_at = now()").format(
                sql.Identifier(DEFAULTS_TABLE)),
            (collection.name, json.dumps(setting.to_json()), note))


def saved_search_setting(conn: psycopg.Connection[Any],
                         collection: Collection) -> SavedSetting | None:
    """The collection's saved search default, or None (never saved, or no table yet: reading
    creates nothing, so it works in read-only mode)."""
    if not relation_exists(conn, DEFAULTS_TABLE):
        return None
    row = conn.execute(
        sql.SQL("SELECT settings, note, saved_at FROM {} WHERE collection = %s").format(
            sql.Identifier(DEFAULTS_TABLE)), (collection.name,)).fetchone()
    if row is None:
        return None
    data = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    return SavedSetting(Setting.from_json(data), str(row[1]), row[2])


def clear_search_setting(conn: psycopg.Connection[Any], collection: Collection) -> bool:
    """Forget the collection's saved search default; True when there was one."""
    require_writable(conn)
    if not relation_exists(conn, DEFAULTS_TABLE):
        return False
    cur = conn.execute(sql.SQL("DELETE FROM {} WHERE collection = %s").format(
        sql.Identifier(DEFAULTS_TABLE)), (collection.name,))
    return cur.rowcount > 0
