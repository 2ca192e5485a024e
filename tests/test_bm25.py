"""BM25 over core PostgreSQL full-text search: SQL scores equal a plain-Python BM25 over the same
lexemes, and the trigger-kept statistics stay exact through insert, delete, update, truncate."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from psycopg import sql

from vecdash.bm25 import (
    DEFAULT_B,
    DEFAULT_K1,
    bm25_installed,
    bm25_scores,
    ensure_bm25,
    stored_stats,
)
from vecdash.collections import Collection, create_collection, drop_collection
from vecdash.discovery import attach_table
from vecdash.ingest import Record, delete_documents, ingest_records
from vecdash.search import fetch_candidates

TEXTS = [
    ("Bread basics", "Why does my bread not rise? Dead yeast, cold kitchens and old flour."),
    ("Sourdough", "Feed the sourdough starter twice a day; a lively starter makes bread rise."),
    ("Yeast", "Yeast yeast yeast: instant yeast, active dry yeast and fresh yeast compared."),
    ("C++ scope", "The C++ :: scope resolution operator and templates in C++ code."),
    ("Knots", "A bowline knot makes a fixed loop at the end of a rope."),
    ("Proofing", "Proofing dough in a warm place lets the yeast make it rise; over-proofed "
                 "dough collapses."),
    ("Kettles", "Descale the kettle with vinegar when limescale builds up."),
    ("Rope care", "Wash a climbing rope in cold water and dry it away from the sun."),
    ("Flour", "Bread flour has more protein than cake flour, so bread made with it is chewier."),
    ("Short", "Rise."),
    ("Empty-ish", "The and of a to."),
    ("Long", " ".join(["the bread and the rope and the kettle"] * 30)),
]
QUERIES = ["why does my bread not rise", "yeast", "rope knot", "C++ ::", "bread flour protein",
           "kettle limescale vinegar rope bread yeast", "the", "Rise!", "zzzz unknownword"]


def make_collection(conn: Any, name: str, texts: list[tuple[str, str]] = TEXTS) -> Collection:
    c = create_collection(conn, name, dimension=4, embedder="none", model="x")
    rng = np.random.default_rng(3)
    ingest_records(conn, c, [Record(body, title=title, external_id=f"d{i}",
                                    embedding=rng.normal(size=4))
                             for i, (title, body) in enumerate(texts)])
    return c


@pytest.fixture
def collection(conn: Any, unique_name: str) -> Iterator[Collection]:
    c = make_collection(conn, unique_name)
    yield c
    drop_collection(conn, unique_name)


def term_frequencies(conn: Any, table: sql.Composable, tsv: sql.Composable,
                     id_column: str = "id") -> dict[str, dict[str, int]]:
    """Each row's lexemes and their counts, read from the to_tsvector output."""
    rows = conn.execute(
        sql.SQL("SELECT t.{}::text, u.lexeme, coalesce(array_length(u.positions, 1), 1) "
                "FROM {} t LEFT JOIN LATERAL unnest({}) u ON true").format(
            sql.Identifier(id_column), table, tsv)
    ).fetchall()
    docs: dict[str, dict[str, int]] = {}
    for doc_id, lexeme, tf in rows:
        docs.setdefault(doc_id, {})
        if lexeme is not None:
            docs[doc_id][lexeme] = tf
    return docs


def query_lexemes(conn: Any, query: str, config: str = "english") -> list[str]:
    rows = conn.execute("SELECT lexeme FROM unnest(to_tsvector(%s::regconfig, %s))",
                        (config, query)).fetchall()
    return [r[0] for r in rows]


def check_scores(conn: Any, c: Collection, docs: dict[str, dict[str, int]], *,
                 k1: float = DEFAULT_K1, b: float = DEFAULT_B) -> int:
    compared = 0
    for q in QUERIES:
        got = fetch_candidates(conn, c, q, None, candidates=1000, keyword_rankers=("bm25",),
                               k1=k1, b=b).frame
        expected = bm25_scores(docs, query_lexemes(conn, q), k1=k1, b=b)
        sql_scores = dict(zip(got["id"], got["bm25_score"], strict=True))
        assert set(sql_scores) == set(expected), q
        for doc_id, score in expected.items():
            assert sql_scores[doc_id] == pytest.approx(score, abs=1e-6), (q, doc_id)
            compared += 1
        order = sorted(expected, key=lambda d: (-expected[d], int(d)))  # ties by id, as the SQL
        assert list(got.sort_values("bm25_rank")["id"]) == order
    return compared


@pytest.mark.parametrize(("k1", "b"), [(DEFAULT_K1, DEFAULT_B), (2.0, 0.3), (0.5, 1.0), (1.2, 0.0)])
def test_bm25_sql_equals_python(conn: Any, collection: Collection, k1: float, b: float) -> None:
    docs = term_frequencies(conn, collection.table, sql.SQL("t.tsv"))
    assert check_scores(conn, collection, docs, k1=k1, b=b) > 20


def test_bm25_on_demo_equals_python(conn: Any, demo: Collection) -> None:
    docs = term_frequencies(conn, demo.table, sql.SQL("t.tsv"))
    assert len(docs) > 100
    compared = 0
    from vecdash.demo import demo_queries

    for q in [x.text for x in demo_queries()]:
        got = fetch_candidates(conn, demo, q, None, candidates=1000,
                               keyword_rankers=("bm25",)).frame
        expected = bm25_scores(docs, query_lexemes(conn, q))
        assert set(got["id"]) == set(expected), q
        for doc_id, score in zip(got["id"], got["bm25_score"], strict=True):
            assert score == pytest.approx(expected[doc_id], abs=1e-6)
            compared += 1
    assert compared > 100


def recomputed(conn: Any, c: Collection) -> tuple[int, int, dict[str, int]]:
    docs = term_frequencies(conn, c.table, sql.SQL("t.tsv"))
    df: Counter[str] = Counter()
    for tf in docs.values():
        df.update(tf.keys())
    return len(docs), sum(sum(tf.values()) for tf in docs.values()), dict(df)


def assert_stats_exact(conn: Any, c: Collection, *, tight_bounds: bool = False) -> None:
    relid = bm25_installed(conn, c)
    assert relid is not None
    stats = stored_stats(conn, relid)
    n, total, df = recomputed(conn, c)
    assert (stats.docs, stats.total_length) == (n, total)
    assert stats.df == df
    # max_tf / min_len bound every lexeme's term frequency and the length of the documents that
    # hold it (exactly so before any delete or update: those leave them as valid upper bounds)
    docs = term_frequencies(conn, c.table, sql.SQL("t.tsv"))
    assert set(stats.bounds) == set(df)
    for lexeme, (max_tf, min_len) in stats.bounds.items():
        holding = [tf for tf in docs.values() if lexeme in tf]
        actual = (max(tf[lexeme] for tf in holding), min(sum(tf.values()) for tf in holding))
        if tight_bounds:
            assert (max_tf, min_len) == actual, lexeme
        else:
            assert max_tf >= actual[0] and min_len <= actual[1], lexeme


def test_statistics_follow_insert_delete_update_truncate(conn: Any, collection: Collection) -> None:
    assert_stats_exact(conn, collection, tight_bounds=True)
    rng = np.random.default_rng(5)
    ingest_records(conn, collection, [
        Record("Brand new yeast water recipe for bread", external_id="n1",
               embedding=rng.normal(size=4)),
        Record("Another rope: a static rope for caving", external_id="n2",
               embedding=rng.normal(size=4)),
    ])
    assert_stats_exact(conn, collection, tight_bounds=True)
    assert delete_documents(conn, collection, ["d2", "n1", "d11"]) == 3
    assert_stats_exact(conn, collection)
    conn.execute(sql.SQL("UPDATE {} SET content = 'kettle kettle kettle descaling' "
                         "WHERE external_id IN ('d0', 'd4')").format(collection.table))
    assert_stats_exact(conn, collection)
    # a failed write rolls the statistics back with it
    with pytest.raises(Exception, match="content_hash|duplicate"):
        with conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {} WHERE external_id = 'd1'").format(
                collection.table))
            conn.execute(sql.SQL("INSERT INTO {} (external_id, content, content_hash, embedding) "
                                 "SELECT 'x', content, content_hash, embedding FROM {} "
                                 "WHERE external_id = 'd3'").format(collection.table,
                                                                  collection.table))
    assert_stats_exact(conn, collection)
    conn.execute(sql.SQL("TRUNCATE {}").format(collection.table))
    relid = bm25_installed(conn, collection)
    assert relid is not None
    stats = stored_stats(conn, relid)
    assert (stats.docs, stats.total_length, stats.df) == (0, 0, {})
    assert fetch_candidates(conn, collection, "bread", None, keyword_rankers=("bm25",)).frame.empty


def test_older_collection_gets_statistics_lazily(conn: Any, collection: Collection) -> None:
    """A collection created before the triggers existed: search installs them and backfills."""
    for trigger in ("vecdash_bm25_ins", "vecdash_bm25_del", "vecdash_bm25_upd",
                    "vecdash_bm25_trunc"):
        conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(trigger),
                                                               collection.table))
    conn.execute(sql.SQL("DELETE FROM {} WHERE external_id = 'd0'").format(collection.table))
    assert bm25_installed(conn, collection) is None
    docs = term_frequencies(conn, collection.table, sql.SQL("t.tsv"))
    check_scores(conn, collection, docs)  # installs and backfills on the first search
    assert_stats_exact(conn, collection)
    assert ensure_bm25(conn, collection) == bm25_installed(conn, collection)


def test_attached_table_scores_on_the_fly(conn: Any, unique_name: str) -> None:
    table = sql.Identifier(unique_name)
    conn.execute(sql.SQL("CREATE TABLE {} (doc_id int PRIMARY KEY, title text, body text, "
                         "embedding vector(4))").format(table))
    try:
        for i, (title, body) in enumerate(TEXTS):
            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s)").format(table),
                         (i, title if i % 3 else None, body, np.ones(4) * (i + 1)))
        c = attach_table(conn, unique_name, schema="public", table=unique_name,
                         vector_column="embedding", content_column="body", title_column="title")
        assert c.tsv_column is None
        docs = term_frequencies(
            conn, c.table,
            sql.SQL("to_tsvector('english', coalesce(t.title, '') || ' ' || coalesce(t.body, ''))"),
            id_column="doc_id")
        assert check_scores(conn, c, docs) > 20
        got = fetch_candidates(conn, c, "yeast", None, keyword_rankers=("bm25",))
        assert any("on the fly" in n for n in got.notes)
        # a long query is ranked by its first lexemes (no statistics to pick the rarest)
        words = "rope yeast kettle flour bread starter knot loop vinegar protein".split()
        capped = fetch_candidates(conn, c, " ".join(words), None, max_lexemes=3,
                                  keyword_rankers=("bm25", "ts_rank_cd"))
        assert capped.lexemes == sorted(query_lexemes(conn, "rope yeast kettle"))
        assert any("10 distinct words" in n and "first 3" in n for n in capped.notes)
        expected = bm25_scores(docs, capped.lexemes)
        assert dict(zip(capped.frame["id"], capped.frame["bm25_score"], strict=True)) == \
            pytest.approx(expected, abs=1e-6)
        cols = conn.execute(sql.SQL("SELECT count(*) FROM pg_trigger WHERE tgrelid = {}::regclass"
                                    ).format(sql.Literal(unique_name))).fetchone()
        assert cols[0] == 0  # the attached table is never altered
    finally:
        drop_collection(conn, unique_name)
        conn.execute(sql.SQL("DROP TABLE {}").format(table))


def test_ts_rank_cd_arm_matches_postgres(conn: Any, collection: Collection) -> None:
    got = fetch_candidates(conn, collection, "bread yeast", None,
                           keyword_rankers=("ts_rank_cd",)).frame
    expected = dict(conn.execute(sql.SQL(
        "SELECT id::text, ts_rank_cd(tsv, to_tsquery('english', 'bread | yeast')) FROM {} "
        "WHERE tsv @@ to_tsquery('english', 'bread | yeast')").format(collection.table)).fetchall())
    assert dict(zip(got["id"], got["ts_rank_cd_score"], strict=True)) == pytest.approx(expected)


def test_pruned_bm25_keeps_the_exact_top(conn: Any, demo: Collection,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Pruned BM25 (only the combinations of lexemes whose score bounds reach a threshold are
    scored) returns the same top rows and scores as scoring every matching row; forced on for
    the small demo, including first thresholds too high (a second pass) and too low."""
    import vecdash.bm25.pruning as pruning
    import vecdash.search.candidates as candidates
    from vecdash.demo import demo_queries

    monkeypatch.setattr(pruning, "MAXSCORE_MIN_MATCHES", 0)
    relid = bm25_installed(conn, demo)
    assert relid is not None
    real_guess, real_rows = candidates.prune_threshold, candidates.arm_rows
    scale = 1.0
    calls = 0

    def guess(t: Any, *, candidates: int, k1: float, b: float) -> float | None:
        theta = real_guess(t, candidates=candidates, k1=k1, b=b)
        return None if theta is None else theta * scale

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real_rows(*args, **kwargs)

    monkeypatch.setattr(candidates, "prune_threshold", guess)
    monkeypatch.setattr(candidates, "arm_rows", counting)
    pruned = passes = long_pruned = 0
    texts = [x.text for x in demo_queries()]
    # and pasted paragraphs: more lexemes than combinations are enumerated for (MaxScore only)
    long = [" ".join(texts[i:i + 4]) for i in range(0, 40, 4)]
    for q in texts + long:
        terms = pruning.term_stats(conn, demo, relid, q)
        for depth in (3, 10):
            full = fetch_candidates(conn, demo, q, None, candidates=depth,
                                    keyword_rankers=("bm25",), prune=False).frame
            full = full.sort_values("bm25_rank")
            for scale in (1.0, 3.0, 0.3):
                calls = 0
                fast = fetch_candidates(conn, demo, q, None, candidates=depth,
                                        keyword_rankers=("bm25",)).frame
                fast = fast.sort_values("bm25_rank")
                assert list(fast["id"]) == list(full["id"]), (q, depth, scale)
                assert np.allclose(fast["bm25_score"], full["bm25_score"], atol=1e-9)
                passes += calls > 1
            theta = terms and real_guess(terms, candidates=depth, k1=DEFAULT_K1, b=DEFAULT_B)
            if terms and theta and pruning.match_query(terms, theta, k1=DEFAULT_K1, b=DEFAULT_B):
                pruned += 1
                long_pruned += len(terms.lexemes) > pruning.PRUNE_MAX_TERMS
    assert pruned > 5  # the test exercises pruning, not only the fallback
    assert long_pruned > 3  # including MaxScore over long queries
    assert passes > 5  # and second passes after a threshold that was too high


def test_long_query_ranks_by_its_rarest_lexemes(conn: Any, demo: Collection) -> None:
    """A pasted paragraph (more distinct lexemes than MAX_QUERY_LEXEMES) is scored by BM25 over
    its rarest lexemes in the collection, exactly, by both keyword rankers, and the notes say so;
    a query at the limit is scored over all of its lexemes."""
    from vecdash.demo import demo_documents
    from vecdash.search.candidates import MAX_QUERY_LEXEMES

    docs = term_frequencies(conn, demo.table, sql.SQL("t.tsv"))
    df: Counter[str] = Counter()
    for tf in docs.values():
        df.update(tf.keys())
    paragraph = " ".join(d["content"] for d in demo_documents()[:12])
    in_demo = sorted(set(query_lexemes(conn, paragraph)) & set(df))
    n = MAX_QUERY_LEXEMES
    assert len(in_demo) > 3 * n
    rarest = sorted(sorted(in_demo, key=lambda x: (df[x], x))[:n])
    got = fetch_candidates(conn, demo, paragraph, None, candidates=1000,
                           keyword_rankers=("bm25", "ts_rank_cd"))
    assert got.lexemes == rarest
    assert any(f"{len(in_demo)} distinct words" in x and f"{n} rarest" in x for x in got.notes)
    expected = bm25_scores(docs, rarest)
    frame = got.frame.dropna(subset=["bm25_score"])
    assert set(frame["id"]) == set(expected)
    for doc_id, score in zip(frame["id"], frame["bm25_score"], strict=True):
        assert score == pytest.approx(expected[doc_id], abs=1e-6)
    ranked = got.frame.dropna(subset=["ts_rank_cd_score"])
    assert set(ranked["id"]) == set(expected)  # the same lexemes for ts_rank_cd

    whole = fetch_candidates(conn, demo, paragraph, None, candidates=1000, max_lexemes=None)
    assert len(whole.lexemes) > n and not any("rarest" in x for x in whole.notes)
    short = " ".join(in_demo[:n])
    at_limit = fetch_candidates(conn, demo, short, None, candidates=1000)
    assert len(at_limit.lexemes) == n and not any("rarest" in x for x in at_limit.notes)


def test_search_reads_one_snapshot(conn: Any, collection: Collection,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows another connection commits between reading the statistics and scoring are not seen:
    the statistics, the bounds and the rows come from one snapshot, so scores stay exact."""
    import vecdash.search.candidates as candidates
    from vecdash.db import sibling_connection

    docs = term_frequencies(conn, collection.table, sql.SQL("t.tsv"))
    real_rows = candidates.arm_rows
    other = sibling_connection(conn)

    def load_first(*args: Any, **kwargs: Any) -> Any:
        ingest_records(other, collection, [Record("Yeast yeast yeast, and more yeast.",
                                                  external_id="late", embedding=np.ones(4))])
        monkeypatch.setattr(candidates, "arm_rows", real_rows)
        return real_rows(*args, **kwargs)

    monkeypatch.setattr(candidates, "arm_rows", load_first)
    try:
        got = fetch_candidates(conn, collection, "yeast", None, candidates=1000).frame
    finally:
        other.close()
    expected = bm25_scores(docs, ["yeast"])
    assert dict(zip(got["id"], got["bm25_score"], strict=True)) == pytest.approx(expected, abs=1e-6)
    after = fetch_candidates(conn, collection, "yeast", None, candidates=1000).frame
    assert len(after) == len(expected) + 1  # committed, and seen by the next search


def test_pruning_tsquery_quotes_lexemes(conn: Any) -> None:
    """Lexemes with quotes, backslashes and tsquery operators in them match themselves."""
    from vecdash.bm25.pruning import tsquery_lexeme

    for lexeme in ["o'neil", "back\\slash", "c++", "a:b", "it's:*", "x & y", "'", "!(a|b)"]:
        row = conn.execute("SELECT array_to_tsvector(ARRAY[%s]) @@ %s::tsquery, "
                           "array_to_tsvector(ARRAY[%s || 'z']) @@ %s::tsquery",
                           (lexeme, tsquery_lexeme(lexeme),
                            lexeme, tsquery_lexeme(lexeme))).fetchone()
        assert row == (True, False), lexeme


def test_term_frequency_and_length_from_ranks(conn: Any) -> None:
    """Search reads a lexeme's frequency and a document's length from ts_rank: both equal what
    unnesting the tsvector gives, for every frequency a tsvector can hold (it keeps 255 positions
    of a lexeme) and for absent lexemes."""
    from vecdash.bm25 import TSV_LENGTH, doc_length, term_frequency

    rank = sql.SQL("ts_rank(v, 'foo'::tsquery)")
    rows = conn.execute(sql.SQL(
        "SELECT n, coalesce((SELECT cardinality(x.positions) FROM unnest(v) x "
        "WHERE x.lexeme = 'foo'), 0), {tf}, {length}, {len} FROM (SELECT n, to_tsvector('simple', "
        "'bar ' || repeat('foo bar baz ', n) || repeat('qux ', n % 7)) AS v "
        "FROM generate_series(0, 300) n) s").format(
            tf=term_frequency(rank), length=sql.SQL(TSV_LENGTH).format(sql.SQL("v")),
            len=doc_length(sql.SQL("v"), sql.SQL("'foo | bar'::tsquery")))).fetchall()
    for n, expected_tf, tf, length, from_ranks in rows:
        assert tf == expected_tf == min(n, 255), n
        assert from_ranks == length, n


def test_statistics_of_an_earlier_version_are_upgraded(
    conn: Any, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Statistics tables as an earlier vecdash left them (no bounds, a per-document length
    table): the first search upgrades them; other collections keep exact counts with the loosest
    bounds, so their pruned searches stay exact."""
    import vecdash.bm25.pruning as pruning
    import vecdash.bm25.statistics as statistics

    a = make_collection(conn, unique_name + "_a")
    b = make_collection(conn, unique_name + "_b")
    try:
        conn.execute("ALTER TABLE vecdash_bm25_terms DROP COLUMN max_tf, DROP COLUMN min_len")
        conn.execute("CREATE TABLE vecdash_bm25_docs (relid oid, doc_id bigint, length integer)")
        assert bm25_installed(conn, a) is None and bm25_installed(conn, b) is None
        monkeypatch.setattr(statistics, "_seen_installed", {})
        ensure_bm25(conn, b)  # what the first search does
        assert conn.execute("SELECT to_regclass('vecdash_bm25_docs')").fetchone() == (None,)
        assert_stats_exact(conn, b, tight_bounds=True)
        relid_a = bm25_installed(conn, a)
        assert relid_a is not None
        stats_a = stored_stats(conn, relid_a)
        assert set(stats_a.bounds.values()) == {(statistics.UNKNOWN_MAX_TF, statistics.UNKNOWN_MIN_LEN)}
        assert_stats_exact(conn, a)
        monkeypatch.setattr(pruning, "MAXSCORE_MIN_MATCHES", 0)
        for q in QUERIES:
            full = fetch_candidates(conn, a, q, None, candidates=2, prune=False).frame
            fast = fetch_candidates(conn, a, q, None, candidates=2).frame
            assert list(fast.sort_values("bm25_rank")["id"]) == list(
                full.sort_values("bm25_rank")["id"]), q
    finally:
        drop_collection(conn, unique_name + "_a")
        drop_collection(conn, unique_name + "_b")
