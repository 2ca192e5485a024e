"""Collections: what a table with a vector column is to vecdash, and the registry.

A collection vecdash creates ("managed") is a table with a fixed shape (see ``create_collection``).
An existing table with a vector column can be attached (vecdash.discovery): it is recorded in the
registry with its column names, and vecdash reads it in place without copying or altering it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from vecdash.db import relation_exists, require_writable
from vecdash.errors import InvalidInput, NotFound
from vecdash.text_checks import text_problem

Metric = Literal["cosine", "l2", "ip"]
METRICS: tuple[Metric, ...] = ("cosine", "l2", "ip")
# The closed mapping from metric to pgvector's distance operator and operator-class suffix.
DISTANCE_OPERATORS: dict[str, str] = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}
OPCLASS_SUFFIX: dict[str, str] = {"cosine": "cosine_ops", "l2": "l2_ops", "ip": "ip_ops"}
METRIC_LABELS: dict[str, str] = {
    "cosine": "cosine distance",
    "l2": "Euclidean (L2) distance",
    "ip": "negative inner product",
}
# The closed mapping from a vector column's type name to its SQL.
VECTOR_TYPES: dict[str, sql.SQL] = {"vector": sql.SQL("vector"), "halfvec": sql.SQL("halfvec")}
MAX_VECTOR_DIM = 2000  # above this, pgvector indexes need halfvec
MAX_HALFVEC_DIM = 4000  # the largest dimension pgvector can index (halfvec)
MAX_STORED_DIM = 16000
MAX_NAME_BYTES = 63


@dataclass(frozen=True)
class Collection:
    """A registered table with a vector column, and how vecdash reads it."""

    name: str
    schema_name: str
    table_name: str
    id_column: str
    content_column: str
    title_column: str | None
    category_column: str | None
    metadata_column: str | None
    created_at_column: str | None
    external_id_column: str | None
    hash_column: str | None
    tsv_column: str | None
    vector_column: str
    vector_type: str
    dimension: int
    metric: Metric
    embedder: str
    model: str
    text_config: str
    managed: bool
    data_version: int
    created_at: datetime | None = None

    @property
    def table(self) -> sql.Identifier:
        return sql.Identifier(self.schema_name, self.table_name)

    def column(self, name: str | None) -> sql.Composable:
        """A column reference, or NULL when the collection has no such column."""
        return sql.Identifier(name) if name else sql.NULL

    @property
    def distance_operator(self) -> sql.SQL:
        return sql.SQL(DISTANCE_OPERATORS[self.metric])

    @property
    def vector_cast(self) -> sql.Composable:
        """The type a query vector is cast to, so it matches the column (vector or halfvec)."""
        return sql.SQL("{}({})").format(VECTOR_TYPES[self.vector_type],
                                        sql.Literal(int(self.dimension)))


def validate_name(name: str) -> str:
    """A collection name: any text, 1 to 63 bytes, no NUL. Quoted by sql.Identifier wherever used."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("The collection name is empty. Give it a name, e.g. 'support_articles'.")
    if problem := text_problem(name):
        raise InvalidInput(f"The collection name {problem}. Remove it.")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidInput(
            f"The collection name is {len(name.encode())} bytes; PostgreSQL allows at most "
            f"{MAX_NAME_BYTES}. Choose a shorter name."
        )
    return name


def validate_metric(metric: str) -> Metric:
    if metric not in METRICS:
        raise InvalidInput(f"Unknown distance metric {metric!r}; choose one of {', '.join(METRICS)}.")
    return metric


def index_name(table: str, suffix: str) -> str:
    """An index name derived from the table name, kept within PostgreSQL's 63-byte limit."""
    full = f"{table}_{suffix}"
    if len(full.encode()) <= MAX_NAME_BYTES:
        return full
    digest = hashlib.sha1(table.encode()).hexdigest()[:8]
    room = MAX_NAME_BYTES - len(suffix) - len(digest) - 2
    head = table.encode()[:room].decode(errors="ignore")
    return f"{head}_{digest}_{suffix}"


def _free_index_name(conn: psycopg.Connection[Any], schema: str, table: str, suffix: str) -> str:
    """index_name(table, suffix), or with a counter when a relation of that name exists already
    (a table called ``zz_tsv_gin`` must not stop a collection ``zz``)."""
    for n in range(1, 100):
        candidate = index_name(table, suffix if n == 1 else f"{suffix}{n}")
        if not relation_exists(conn, candidate, schema=schema):
            return candidate
    raise InvalidInput(f"Could not find a free index name for {table!r}; pick another name.")


def _lock_key(name: str) -> int:
    """The advisory lock key of a collection name (signed 64 bits, as pg_advisory_lock takes)."""
    digest = hashlib.sha256(f"vecdash collection {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def collection_lock(conn: psycopg.Connection[Any], name: str) -> Iterator[None]:
    """Hold the advisory lock on a collection name (session level) for the block: a second
    load creating the same collection waits here, then finds it made and loads into it."""
    key = _lock_key(name)
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        yield
    finally:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def require_table(conn: psycopg.Connection[Any], collection: Collection) -> Collection:
    """``collection`` when its table is there; NotFound with the way out when it was dropped
    outside vecdash."""
    if not relation_exists(conn, collection.table_name, schema=collection.schema_name):
        raise NotFound(
            f"The table {collection.schema_name}.{collection.table_name} of collection "
            f"{collection.name!r} is gone (dropped outside vecdash). Forget the collection with "
            f"`python -m vecdash drop {collection.name}` (or Drop on the Home page), then load "
            "it again."
        )
    return collection


_FIELDS = [f for f in Collection.__dataclass_fields__]


def list_collections(conn: psycopg.Connection[Any]) -> list[Collection]:
    """Every registered collection, by name."""
    query = sql.SQL("SELECT {} FROM vecdash_collections ORDER BY name").format(
        sql.SQL(", ").join(map(sql.Identifier, _FIELDS))
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return [Collection(**r) for r in cur.execute(query).fetchall()]


def get_collection(conn: psycopg.Connection[Any], name: str) -> Collection:
    """The collection called ``name``; NotFound if there is none."""
    validate_name(name)  # a NUL or a lone surrogate would reach PostgreSQL as a raw error
    query = sql.SQL("SELECT {} FROM vecdash_collections WHERE name = %s").format(
        sql.SQL(", ").join(map(sql.Identifier, _FIELDS))
    )
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query, (name,)).fetchone()
    if row is None:
        raise NotFound(
            f"There is no collection named {name!r}. Pick one from the sidebar, or create it by "
            "loading data (Home: load demo, or the ingest command)."
        )
    return Collection(**row)


def create_collection(
    conn: psycopg.Connection[Any],
    name: str,
    *,
    dimension: int,
    metric: str = "cosine",
    embedder: str = "local",
    model: str = "all-MiniLM-L6-v2",
    text_config: str = "english",
    schema: str = "public",
) -> Collection:
    """Create a managed collection: a table of that name plus its registry row, in one transaction.

    Columns: id (identity), external_id (unique), title, content (non-empty), category, metadata
    jsonb, content_hash (unique: dedupe), created_at, embedding vector(d) (halfvec(d) when d > 2000
    so it can still be indexed) and tsv, a stored tsvector with a GIN index.
    """
    require_writable(conn)
    validate_name(name)
    metric = validate_metric(metric)
    if not isinstance(dimension, int) or dimension < 1 or dimension > MAX_STORED_DIM:
        raise InvalidInput(
            f"Dimension {dimension!r} is not usable: pgvector stores 1 to {MAX_STORED_DIM} dimensions."
        )
    vector_type = "vector" if dimension <= MAX_VECTOR_DIM else "halfvec"
    cfg = conn.execute("SELECT 1 FROM pg_ts_config WHERE cfgname = %s", (text_config,)).fetchone()
    if cfg is None:
        raise InvalidInput(
            f"PostgreSQL has no text search configuration {text_config!r}; use e.g. 'english' or "
            "'simple'."
        )
    table = sql.Identifier(schema, name)
    ddl = sql.SQL("""
        CREATE TABLE {table} (
            id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            external_id  text NOT NULL UNIQUE,
            title        text NOT NULL DEFAULT '',
            content      text NOT NULL CHECK (btrim(content) <> ''),
            category     text,
            metadata     jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            content_hash text COLLATE "C" NOT NULL UNIQUE,  -- hex: bytewise is enough
            created_at   timestamptz NOT NULL DEFAULT now(),
            embedding    {vtype}({dim}) NOT NULL,
            tsv          tsvector GENERATED ALWAYS AS
                         (to_tsvector({cfg}::regconfig, title || ' ' || content)) STORED
        ) WITH (toast_tuple_target = 8160)""").format(
        table=table,
        vtype=sql.SQL(vector_type),
        dim=sql.Literal(dimension),
        cfg=sql.Literal(text_config),
    )
    with conn.transaction():
        # Two sessions creating the same name: the second waits here, then is told it exists.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(name),))
        row = conn.execute("SELECT 1 FROM vecdash_collections WHERE name = %s", (name,)).fetchone()
        if row is not None:
            raise InvalidInput(
                f"A collection named {name!r} already exists. Load into it, drop it first, or "
                "pick another name."
            )
        if relation_exists(conn, name, schema=schema):
            raise InvalidInput(
                f"A table named {schema}.{name} already exists. Attach it as a collection "
                "instead, or pick another name."
            )
        conn.execute(ddl)
        # Rows stay whole up to a page: a 384-d vector plus a few hundred characters of text is
        # over the default 2 kB at which PostgreSQL moves the vector (the largest value, storage
        # EXTERNAL) to the TOAST table, and then every write inserts twice and every search that
        # reads the vector or the tsvector looks it up there. MAIN keeps the vector in the row
        # when a row is bigger still: the text and the tsvector are moved out first.
        conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN embedding SET STORAGE MAIN").format(table))
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} USING gin (tsv)").format(
                sql.Identifier(_free_index_name(conn, schema, name, "tsv_gin")), table
            )
        )
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} (category)").format(
                sql.Identifier(_free_index_name(conn, schema, name, "category")), table
            )
        )
        conn.execute(
            """INSERT INTO vecdash_collections
               (name, schema_name, table_name, id_column, content_column, title_column,
                category_column, metadata_column, created_at_column, external_id_column,
                hash_column, tsv_column, vector_column, vector_type, dimension, metric,
                embedder, model, text_config, managed)
               VALUES (%s, %s, %s, 'id', 'content', 'title', 'category', 'metadata',
                       'created_at', 'external_id', 'content_hash', 'tsv', 'embedding',
                       %s, %s, %s, %s, %s, %s, true)""",
            (name, schema, name, vector_type, dimension, metric, embedder, model, text_config),
        )
        from vecdash.bm25.statistics import install_bm25  # BM25 statistics kept by triggers from row one

        install_bm25(conn, get_collection(conn, name))
    return get_collection(conn, name)


def drop_collection(conn: psycopg.Connection[Any], name: str) -> None:
    """Drop a collection. A managed collection's table goes too; an attached table is only
    unregistered, never dropped."""
    require_writable(conn)
    collection = get_collection(conn, name)
    with conn.transaction():
        if collection.managed:
            _forget_table(conn, collection)
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(collection.table))
        conn.execute("DELETE FROM vecdash_collections WHERE name = %s", (name,))
        # What vecdash keeps about it elsewhere would come back with a new collection of the
        # same name: its saved search setting, its maps, its precision counts.
        for side in ("vecdash_search_defaults", "vecdash_projections",
                     "vecdash_vector_precisions"):
            if relation_exists(conn, side):
                conn.execute(sql.SQL("DELETE FROM {} WHERE collection = %s").format(
                    sql.Identifier(side)), (name,))


def _forget_table(conn: psycopg.Connection[Any], collection: Collection) -> None:
    """Remove the BM25 statistics and index build records of a managed table about to go."""
    table = collection.table.as_string(conn)
    if not relation_exists(conn, collection.table_name, schema=collection.schema_name):
        return
    from vecdash.bm25.postings import drop_postings_of_table  # its postings table and functions

    drop_postings_of_table(conn, collection)
    from vecdash.bm25.packed import forget_packed

    forget_packed(conn, collection)
    for side in ("vecdash_bm25_terms", "vecdash_bm25_totals"):
        if relation_exists(conn, side):
            conn.execute(sql.SQL("DELETE FROM {} WHERE relid = %s::regclass").format(
                sql.Identifier(side)), (table,))
    if relation_exists(conn, "vecdash_index_builds"):
        conn.execute("DELETE FROM vecdash_index_builds WHERE schema_name = %s AND table_name = %s",
                     (collection.schema_name, collection.table_name))


def bump_data_version(conn: psycopg.Connection[Any], name: str) -> None:
    """Mark a collection's data as changed (caches keyed by data_version become stale)."""
    conn.execute(
        "UPDATE vecdash_collections SET data_version = data_version + 1 WHERE name = %s", (name,)
    )


# Above this many rows (the planner's estimate) counts come from the catalog: an exact count(*)
# reads the whole table, about a second per million rows of 384-d vectors, on every page load.
EXACT_COUNT_MAX = 200_000


def estimated_rows(conn: psycopg.Connection[Any], collection: Collection) -> int:
    """The planner's row estimate for the collection's table, read without touching its rows:
    reltuples scaled to the table's current size once analyzed, else guessed from its pages
    (partitions summed). Any relation the role can SELECT from, attached tables included."""
    row = conn.execute(
        sql.SQL("EXPLAIN (FORMAT JSON) SELECT FROM {}").format(collection.table)
    ).fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return int(plan[0]["Plan"]["Plan Rows"])


# A load that adds more than this share of a table's analyzed rows refreshes its statistics.
STALE_STATISTICS_SHARE = 0.1


def refresh_statistics_after_load(conn: psycopg.Connection[Any], collection: Collection,
                                  added: int) -> bool:
    """ANALYZE a collection's table after a load added ``added`` rows, when it was never
    analyzed or the load added over STALE_STATISTICS_SHARE of its analyzed rows; whether it
    ran. Without it the planner guesses a fresh table's rows from its pages (a 210,000-row table
    of 384-d vectors was estimated at 1.4M rows: the Index Lab showed that, sized the HNSW graph
    by it and priced its ground truth by it) until autovacuum gets to it. ANALYZE reads a
    sample (30,000 rows) and blocks neither reads nor writes. A role that may not analyze the
    table only loses the estimate."""
    if added <= 0:
        return False
    row = conn.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
                       (collection.table.as_string(conn),)).fetchone()
    if row is None or (0 <= row[0] and added <= STALE_STATISTICS_SHARE * row[0]):
        return False
    try:
        with conn.transaction():
            conn.execute(sql.SQL("ANALYZE {}").format(collection.table))
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


def row_count(conn: psycopg.Connection[Any], collection: Collection, *,
              exact_below: int = EXACT_COUNT_MAX) -> tuple[int, bool]:
    """(rows, estimated): an exact count when the estimate is under ``exact_below``, else the
    estimate (True: shown as "about")."""
    estimate = estimated_rows(conn, collection)
    if estimate >= exact_below:
        return estimate, True
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(collection.table)).fetchone()
    assert row is not None
    return int(row[0]), False


def data_version(conn: psycopg.Connection[Any], collection: Collection, *,
                 exact_below: int = EXACT_COUNT_MAX) -> str:
    """A key that changes whenever the collection's rows change: the registry counter bumped by
    vecdash's writes, plus what catches writes made outside vecdash: the row count on a small
    table; on a large one (no count: it would scan the table) the statistics collector's
    inserted / updated / deleted counters of the table and its partitions, which PostgreSQL
    publishes within about a second of another session's commit."""
    version = conn.execute("SELECT data_version FROM vecdash_collections WHERE name = %s",
                           (collection.name,)).fetchone()
    registered = version[0] if version else None
    rows, estimated = row_count(conn, collection, exact_below=exact_below)
    if not estimated:
        return f"{registered}:{rows}"
    row = conn.execute(
        "SELECT sum(pg_stat_get_tuples_inserted(relid)), sum(pg_stat_get_tuples_updated(relid)), "
        "sum(pg_stat_get_tuples_deleted(relid)) FROM (SELECT %s::regclass AS relid UNION "
        "SELECT relid FROM pg_partition_tree(%s::regclass)) tree",  # no rows for a plain table
        (collection.table.as_string(conn),) * 2,
    ).fetchone()
    assert row is not None
    return f"{registered}:~{row[0]}/{row[1]}/{row[2]}"


@dataclass(frozen=True)
class IndexInfo:
    name: str
    method: str  # hnsw, ivfflat, gin, btree...
    column: str
    definition: str
    size_bytes: int
    valid: bool


def list_indexes(conn: psycopg.Connection[Any], collection: Collection) -> list[IndexInfo]:
    """Every index on the collection's table, with method, definition, size and validity."""
    rows = conn.execute(
        """SELECT i.relname, am.amname,
                  coalesce(pg_get_indexdef(ix.indexrelid, 1, true), ''),
                  pg_get_indexdef(ix.indexrelid), pg_relation_size(ix.indexrelid), ix.indisvalid
           FROM pg_index ix
           JOIN pg_class i ON i.oid = ix.indexrelid
           JOIN pg_class t ON t.oid = ix.indrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
           JOIN pg_am am ON am.oid = i.relam
           WHERE n.nspname = %s AND t.relname = %s
           ORDER BY i.relname""",
        (collection.schema_name, collection.table_name),
    ).fetchall()
    return [IndexInfo(r[0], r[1], r[2], r[3], int(r[4]), bool(r[5])) for r in rows]


@dataclass(frozen=True)
class CollectionSummary:
    name: str
    table: str
    rows: int
    dimension: int
    vector_type: str
    embedder: str
    model: str
    metric: str
    indexes: str
    size_bytes: int
    managed: bool
    rows_estimated: bool = False  # rows is the planner's estimate (a large table is not counted)


def describe_collections(conn: psycopg.Connection[Any], *,
                         exact_below: int = EXACT_COUNT_MAX) -> list[CollectionSummary]:
    """One summary per collection: rows (estimated above ``exact_below``), dimension,
    embedder/model, metric, indexes, size on disk. Reads no table's rows past that size."""
    out = []
    for c in list_collections(conn):
        if not relation_exists(conn, c.table_name, schema=c.schema_name):
            out.append(
                CollectionSummary(c.name, f"{c.schema_name}.{c.table_name} (missing!)", 0,
                                  c.dimension, c.vector_type, c.embedder, c.model, c.metric,
                                  "", 0, c.managed)
            )
            continue
        rows, estimated = row_count(conn, c, exact_below=exact_below)
        size = conn.execute("SELECT pg_total_relation_size(%s::regclass)",
                            (c.table.as_string(conn),)).fetchone()
        assert size is not None
        vector_indexes = [
            f"{i.method}" + ("" if i.valid else " (invalid)")
            for i in list_indexes(conn, c)
            if i.method in ("hnsw", "ivfflat")
        ]
        out.append(
            CollectionSummary(
                name=c.name,
                table=f"{c.schema_name}.{c.table_name}",
                rows=rows,
                dimension=c.dimension,
                vector_type=c.vector_type,
                embedder=c.embedder,
                model=c.model,
                metric=c.metric,
                indexes=", ".join(vector_indexes) or "none (exact scan)",
                size_bytes=int(size[0]),
                managed=c.managed,
                rows_estimated=estimated,
            )
        )
    return out
