"""Quality: readers with row-level problems, metrics cross-checked against ir-measures
(pytrec_eval), the demo evaluation, sweeps fused without SQL, and the eval command."""

from __future__ import annotations

from typing import Any

import ir_measures
import numpy as np
import pytest
from ir_measures import RR, P, R, ScoredDoc, nDCG
from psycopg import sql

from vecdash.cli import main
from vecdash.collections import Collection
from vecdash.embedders import LocalEmbedder
from vecdash.errors import InvalidInput
from vecdash.labels import (
    LabeledSet,
    Query,
    check_labels,
    demo_labeled_set,
    labeled_set,
    parse_qrels,
    parse_queries,
)
from vecdash.quality import (
    Config,
    best_setting,
    compare_configs,
    metrics_table,
    per_query,
    query_metrics,
    run_labeled_queries,
    standard_configs,
    sweep,
)


def test_metrics_match_ir_measures() -> None:
    rng = np.random.default_rng(0)
    qrels: dict[str, dict[str, int]] = {}
    runs: dict[str, list[str]] = {}
    for q in range(60):
        docs = [f"d{i}" for i in range(40)]
        judged = rng.choice(40, size=int(rng.integers(1, 12)), replace=False)
        qrels[f"q{q}"] = {docs[i]: int(rng.integers(0, 3)) for i in judged}
        qrels[f"q{q}"][docs[int(judged[0])]] = 2  # at least one relevant
        runs[f"q{q}"] = list(rng.permutation(docs)[: int(rng.integers(3, 30))])
    for k in (5, 10, 20):
        measures = [nDCG @ 10, R @ k, RR @ 10, P @ k]
        run = [ScoredDoc(q, d, float(100 - i)) for q, ranked in runs.items()
               for i, d in enumerate(ranked)]
        qrel_rows = [ir_measures.Qrel(q, d, g) for q, docs in qrels.items() for d, g in docs.items()]
        expected: dict[tuple[str, str], float] = {}
        for m in ir_measures.iter_calc(measures, qrel_rows, run):
            expected[(m.query_id, str(m.measure))] = m.value
        for q, ranked in runs.items():
            got = query_metrics(ranked, qrels[q], k=k)
            assert got["nDCG@10"] == pytest.approx(expected[(q, "nDCG@10")], abs=1e-9)
            assert got[f"R@{k}"] == pytest.approx(expected[(q, f"R@{k}")], abs=1e-9)
            assert got["RR@10"] == pytest.approx(expected[(q, "RR@10")], abs=1e-9)
            assert got[f"P@{k}"] == pytest.approx(expected[(q, f"P@{k}")], abs=1e-9)


def test_parse_qrels_formats_and_row_level_problems() -> None:
    beir, problems = parse_qrels("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq2\td3\t0\n")
    assert beir == {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 0}} and problems == []
    trec, problems = parse_qrels("q1 0 d1 1\nq1 0 d9 2\n")
    assert trec == {"q1": {"d1": 1, "d9": 2}} and problems == []
    bad = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\n\nq2\td3\thigh\nq3\t\t1\nq1\td1\t1\n"
    qrels, problems = parse_qrels(bad, source="my.tsv")
    assert qrels["q1"] == {"d1": 1}
    lines = {p.line: p.problem for p in problems}
    assert set(lines) == {3, 5, 6, 7}
    assert "found 2" in lines[3] and "'high'" in lines[5] and "empty" in lines[6]
    assert "judged twice" in lines[7]
    assert all(p.source == "my.tsv" for p in problems)
    assert parse_qrels("")[1][0].problem == "the file has no judgments"


def test_parse_queries_and_problems() -> None:
    text = ('{"_id": "q1", "text": "bread", "metadata": {"type": "exact"}}\n'
            '{"id": "q2", "text": "rope", "type": "conceptual"}\n'
            '{"_id": "q3"}\n{not json\nq4\tkettle\tconceptual\n'
            '{"_id": "q1", "text": "again"}\nonlyonecolumn\n')
    queries, problems = parse_queries(text)
    assert queries == [Query("q1", "bread", "exact"), Query("q2", "rope", "conceptual"),
                       Query("q4", "kettle", "conceptual")]
    assert [p.line for p in problems] == [3, 4, 6, 7]


def test_run_refuses_malformed_labels(conn: Any, demo: Collection,
                                      embedder: LocalEmbedder) -> None:
    labeled = labeled_set('{"_id": "q1", "text": "bread"}\n', "q1\td1\tlots\n")
    assert labeled.problems and labeled.problems[0].line == 1
    with pytest.raises(InvalidInput, match="line 1"):
        run_labeled_queries(conn, demo, labeled, embedder=embedder)


def test_unknown_ids_are_reported_not_dropped(conn: Any, demo: Collection,
                                              embedder: LocalEmbedder) -> None:
    real = demo_labeled_set()
    q = real.queries[0]
    labeled = LabeledSet(
        [q, Query("orphan", "a query nobody judged")],
        {q.id: {**real.qrels[q.id], "no-such-doc": 2}, "ghost": {"no-such-doc": 1}},
        "test",
    )
    problems = [p.problem for p in check_labels(conn, demo, labeled)]
    assert any("no-such-doc" in p and q.id in p for p in problems)
    assert any("'ghost'" in p and "no query text" in p for p in problems)
    assert any("'orphan'" in p and "no judgments" in p for p in problems)
    run = run_labeled_queries(conn, demo, labeled, embedder=embedder)
    assert [x.id for x in run.queries] == [q.id]
    assert len(run.problems) == 4  # ghost's judged document is unknown too
    # the unknown document stays in the judgments, so perfect recall is impossible
    assert per_query(run, Config("semantic", 1.0), k=100)["R@100"].iloc[0] < 1.0


@pytest.fixture(scope="module")
def demo_run(pool: Any, demo: Collection, embedder: LocalEmbedder) -> Any:
    with pool.connection() as conn:
        return run_labeled_queries(conn, demo, demo_labeled_set(), embedder=embedder)


def test_demo_evaluation(demo_run: Any) -> None:
    table = metrics_table(demo_run, standard_configs(weight=0.5), k=10).set_index("configuration")
    for column in ("nDCG@10", "R@10", "RR@10", "P@10"):
        assert table[column].between(0, 1).all()
    assert table.loc["semantic", "nDCG@10"] > 0.4
    assert table.loc["keyword: BM25", "nDCG@10"] > 0.3
    # the sweep's ends are the single arms (sweep fuses in numpy: the connection is closed now)
    swept = sweep(demo_run, k=10)
    assert len(swept) == 22
    convex = swept[swept["fusion"] == "convex"].set_index("weight")
    assert convex.loc[1.0, "nDCG@10"] == pytest.approx(table.loc["semantic", "nDCG@10"])
    assert convex.loc[0.0, "nDCG@10"] == pytest.approx(table.loc["keyword: BM25", "nDCG@10"])
    best = best_setting(swept)
    assert best["value"] == pytest.approx(swept["nDCG@10"].max())
    assert best["value"] >= table.loc["semantic", "nDCG@10"]


def test_per_query_comparison_with_type_breakdown(demo_run: Any) -> None:
    a, b = Config("semantic", 1.0), Config("bm25", 0.0)
    rows, by_type = compare_configs(demo_run, a, b)
    assert len(rows) == len(demo_run.queries)
    assert set(rows["outcome"]) <= {"a wins", "b wins", "tie"}
    overall = by_type.set_index("type").loc["all"]
    assert overall["b wins"] + overall["a wins"] + overall["ties"] == len(rows)
    kinds = by_type.set_index("type")
    assert {"exact", "conceptual"} <= set(kinds.index)
    # the demo is built so that keywords win on exact queries and meaning on conceptual ones
    assert kinds.loc["exact", "b mean"] > kinds.loc["conceptual", "b mean"]
    assert kinds.loc["conceptual", "a mean"] > kinds.loc["conceptual", "b mean"]


def test_eval_command_prints_the_table(demo: Collection, capsys: pytest.CaptureFixture[str],
                                       tmp_path: Any) -> None:
    assert main(["eval", "--collection", "demo"]) == 0
    out = capsys.readouterr().out
    assert "nDCG@10" in out and "keyword: BM25" in out and "best of the sweep" in out
    bad = tmp_path / "bad.tsv"
    bad.write_text("q1\tdoc\tnot-a-number\n")
    assert main(["eval", "--collection", "demo", "--qrels", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.tsv:1:" in err and "not a whole number" in err


def test_exact_evaluation_ignores_an_approximate_index_and_says_which_served(
        conn: Any, demo: Collection, embedder: LocalEmbedder, unique_name: str,
        tmp_path: Any) -> None:
    from vecdash import indexes as ix
    from vecdash.collections import drop_collection
    from vecdash.export import export_collection
    from vecdash.loading import ingest_file

    path = tmp_path / "demo.parquet"
    export_collection(conn, demo, path)
    copy, _ = ingest_file(conn, path, collection=unique_name)
    try:
        # 365 rows are read faster than any index (the planner scans them): add rows of random
        # vectors, far from every query, so an index pays.
        conn.execute(sql.SQL(
            "INSERT INTO {} (external_id, title, content, content_hash, embedding) "
            "SELECT 'filler-' || g, 'filler', 'filler row ' || g, md5('filler-' || g), "
            "(SELECT array_agg(random() - 0.5) FROM generate_series(1, 384) d WHERE g > 0)::vector "
            "FROM generate_series(1, 6000) g").format(copy.table))
        conn.execute(sql.SQL("ANALYZE {}").format(copy.table))
        labeled = demo_labeled_set()
        plain = run_labeled_queries(conn, copy, labeled, embedder=embedder, candidates=100)
        assert plain.serving is not None and plain.serving.index is None
        assert "no vector index" in plain.serving.sentence
        # A deliberately poor graph (m=2): the approximate arm misses some true neighbours.
        built = ix.build_index(conn, copy, ix.IndexSpec("hnsw", m=2, ef_construction=4))
        approx = run_labeled_queries(conn, copy, labeled, embedder=embedder, candidates=100)
        assert approx.serving is not None and approx.serving.index is not None
        assert built.index in approx.serving.index and approx.serving.setting == "ef_search=100"
        assert "approximate" in approx.serving.sentence
        exact = run_labeled_queries(conn, copy, labeled, embedder=embedder, candidates=100,
                                    exact=True)
        assert exact.serving is not None and exact.serving.exact_forced
        assert "switched off" in exact.serving.sentence

        def neighbours(run: Any) -> list[set[Any]]:
            out = []
            for q in run.queries:
                col = run.candidates[q.id].columns
                out.append(set(col["key"][np.isfinite(col["semantic_rank"])].tolist()))
            return out

        assert neighbours(exact) == neighbours(plain)  # exact: as if there were no index
        assert neighbours(approx) != neighbours(plain)  # through the poor graph: not
        semantic = Config("semantic", 1.0)
        assert metrics_table(exact, [semantic]).equals(metrics_table(plain, [semantic]))
        # Nothing was changed: the index is still there and valid, and the session's settings
        # are back (SET LOCAL ended with each transaction).
        assert [i.valid for i in ix.list_vector_indexes(conn, copy)] == [True]
        assert conn.execute("SHOW enable_indexscan").fetchone() == ("on",)
    finally:
        drop_collection(conn, unique_name)
