"""Search quality against labeled queries (see vecdash.labels): metrics (nDCG@10, Recall@k,
MRR@10, P@k), runs, weight sweeps and per-query comparisons.

Every query's candidates are fetched once (one SQL statement: the semantic arm and both keyword
rankers with their raw scores, see ``vecdash.search.fetch_candidates``); every configuration and
every weight of a sweep is then fused and scored in numpy, without going back to the database.

The metrics follow trec_eval's definitions (graded gain for nDCG, relevance >= 1 for the binary
ones, P@k divided by k); tests cross-check them against ir-measures (pytrec_eval).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from vecdash.bm25.statistics import DEFAULT_B, DEFAULT_K1
from vecdash.collections import Collection
from vecdash.db import outside_transaction
from vecdash.embedders import Embedder
from vecdash.errors import InvalidInput
from vecdash.indexes.explain import SemanticServing, semantic_serving
from vecdash.labels import LabeledSet, LabelProblem, Qrels, Query, check_labels
from vecdash.search import (
    FUSIONS,
    Candidates,
    KeywordRanker,
    SearchFilters,
    embed_query,
    fetch_candidates,
    fuse_arrays,
    id_ranks,
    query_vector,
)

# --- metrics ----------------------------------------------------------------------------------


MAX_CUTOFF = 1000


def check_eval_parameters(*, k: Any = 10, weight: Any = 0.5, fusion: Any = "convex",
                          rrf_k: Any = 60) -> None:
    """Refuse a cutoff, weight, fusion or RRF constant that cannot give a meaningful metric,
    before any work: k a whole number from 1 to MAX_CUTOFF, weight from 0 to 1."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_CUTOFF:
        raise InvalidInput(f"The cutoff k must be a whole number from 1 to {MAX_CUTOFF}; got "
                           f"{k!r}. Recall@k and P@k count the top k results, e.g. -k 10.")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or \
            not math.isfinite(weight) or not 0.0 <= weight <= 1.0:
        raise InvalidInput(f"The semantic weight must be a number from 0 (keyword only) to 1 "
                           f"(semantic only); got {weight!r}, e.g. --weight 0.5.")
    if fusion not in FUSIONS:
        raise InvalidInput(f"Unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}.")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 1:
        raise InvalidInput(f"The RRF constant must be a whole number of at least 1; got "
                           f"{rrf_k!r} (60 is usual).")


def measure_names(k: int) -> list[str]:
    return ["nDCG@10", f"R@{k}", "RR@10", f"P@{k}"]


def query_metrics(ranking: Sequence[str], judged: dict[str, int], *, k: int = 10) -> dict[str, float]:
    """nDCG@10 (graded gain, log2 discount), Recall@k, reciprocal rank within 10 and P@k for one
    ranked list of document ids, as trec_eval defines them."""
    grades = [judged.get(d, 0) for d in ranking]
    relevant = sum(1 for g in judged.values() if g >= 1)
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(grades[:10]) if g > 0)
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    hits_k = sum(1 for g in grades[:k] if g >= 1)
    rr = next((1.0 / (i + 1) for i, g in enumerate(grades[:10]) if g >= 1), 0.0)
    return {
        "nDCG@10": dcg / idcg if idcg > 0 else 0.0,
        f"R@{k}": hits_k / relevant if relevant else 0.0,
        "RR@10": rr,
        f"P@{k}": hits_k / k,
    }


# --- running the labeled queries ---------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One way to rank: weight is the semantic share (1 semantic only, 0 keyword only)."""

    label: str
    weight: float
    fusion: str = "convex"
    rrf_k: int = 60
    keyword_ranker: str = "bm25"
    depth: int | None = None  # each arm's top ``depth`` of the fetched candidates; None: all


def standard_configs(*, weight: float = 0.5, fusion: str = "convex", rrf_k: int = 60) -> list[Config]:
    """Semantic, both keyword rankers alone, and hybrid with each keyword ranker."""
    name = "RRF" if fusion == "rrf" else "convex"
    return [
        Config("semantic", 1.0),
        Config("keyword: BM25", 0.0, keyword_ranker="bm25"),
        Config("keyword: ts_rank_cd", 0.0, keyword_ranker="ts_rank_cd"),
        Config(f"hybrid BM25 ({name}, w={weight:.2f})", weight, fusion, rrf_k, "bm25"),
        Config(f"hybrid ts_rank_cd ({name}, w={weight:.2f})", weight, fusion, rrf_k, "ts_rank_cd"),
    ]


@dataclass
class EvalRun:
    """Every evaluated query's candidates, fetched once, ready to be fused any number of ways."""

    collection: str
    queries: list[Query]
    qrels: Qrels
    candidates: dict[str, Candidates]
    external_ids: dict[Any, str]  # stored id -> external id
    problems: list[LabelProblem]
    notes: list[str]
    # What served the semantic arm (index and setting, or an exact scan): the figures are its.
    serving: SemanticServing | None = None

    _arrays: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def ranking(self, query_id: str, config: Config, *, k: int) -> list[str]:
        a = self.arrays(query_id)
        order = self._order(a, config)
        return [str(x) for x in a["ext"][order[:k]]]

    def arrays(self, query_id: str) -> dict[str, Any]:
        """One query's candidates as numpy arrays, with each candidate's judged grade."""
        if query_id not in self._arrays:
            col = self.candidates[query_id].columns
            ext = np.array([self.external_ids.get(key, str(key)) for key in col["key"]],
                           dtype=object)
            judged = self.qrels[query_id]
            a: dict[str, Any] = {
                "ext": ext,
                "grades": np.array([judged.get(str(e), 0) for e in ext], dtype=np.float64),
                "id_rank": id_ranks(col["id"]),
                "sem_s": col["semantic_score"].astype(np.float64, copy=False),
                "sem_r": col["semantic_rank"].astype(np.float64, copy=False),
            }
            for ranker in self.candidates[query_id].keyword_rankers:
                a[f"{ranker}_s"] = col[f"{ranker}_score"].astype(np.float64, copy=False)
                a[f"{ranker}_r"] = col[f"{ranker}_rank"].astype(np.float64, copy=False)
            ideal = np.sort(np.array([g for g in judged.values() if g > 0], dtype=np.float64))
            ideal = ideal[::-1][:10]
            a["idcg"] = float((ideal / np.log2(np.arange(2, len(ideal) + 2))).sum())
            a["relevant"] = sum(1 for g in judged.values() if g >= 1)
            self._arrays[query_id] = a
        return self._arrays[query_id]

    @staticmethod
    def _order(a: dict[str, Any], config: Config) -> np.ndarray:
        sem_r, kw_r = a["sem_r"], a[f"{config.keyword_ranker}_r"]
        if config.depth is not None:
            # A shallower depth is a prefix of each arm's fetched ranking: fusing it needs no SQL.
            sem_r = np.where(sem_r <= config.depth, sem_r, np.nan)
            kw_r = np.where(kw_r <= config.depth, kw_r, np.nan)
        order, _ = fuse_arrays(a["sem_s"], sem_r, a[f"{config.keyword_ranker}_s"], kw_r,
                               a["id_rank"], weight=config.weight, fusion=config.fusion,
                               rrf_k=config.rrf_k)
        return order

    def scores(self, config: Config, *, k: int = 10) -> np.ndarray:
        """Every query's measures (rows in query order; columns as ``measure_names(k)``)."""
        out = np.zeros((len(self.queries), 4))
        discount = 1.0 / np.log2(np.arange(2, 12))
        for row, q in enumerate(self.queries):
            a = self.arrays(q.id)
            g = a["grades"][self._order(a, config)[:max(k, 10)]]
            top10 = g[:10]
            dcg = float((np.where(top10 > 0, top10, 0.0) * discount[:len(top10)]).sum())
            hits = np.flatnonzero(top10 >= 1)
            hits_k = int((g[:k] >= 1).sum())
            out[row] = (dcg / a["idcg"] if a["idcg"] > 0 else 0.0,
                        hits_k / a["relevant"] if a["relevant"] else 0.0,
                        1.0 / (hits[0] + 1) if hits.size else 0.0,
                        hits_k / k)
        return out


ProgressFn = Callable[[int, int], None]


@contextlib.contextmanager
def _exact_semantic(conn: psycopg.Connection[Any], exact: bool) -> Iterator[None]:
    """With ``exact``, the enclosed search runs in a transaction whose plain index scans are off
    (SET LOCAL): pgvector's indexes only serve ordered index scans, so the semantic arm becomes
    an exact scan, while the keyword arms keep their GIN and btree lookups as bitmap scans.
    Nothing is locked or altered; other sessions are not affected."""
    if not exact:
        yield
        return
    idle = outside_transaction(conn)
    with conn.transaction():
        if idle:  # a snapshot of its own, as fetch_candidates takes when it opens the transaction
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute("SELECT set_config('enable_indexscan', 'off', true), "
                     "set_config('enable_indexonlyscan', 'off', true)")
        yield


def run_labeled_queries(
    conn: psycopg.Connection[Any],
    collection: Collection,
    labeled: LabeledSet,
    *,
    embedder: Embedder,
    candidates: int = 100,
    filters: SearchFilters | None = None,
    k1: float = DEFAULT_K1,
    b: float = DEFAULT_B,
    progress: ProgressFn | None = None,
    vectors: np.ndarray | None = None,
    keyword_rankers: Sequence[KeywordRanker] = ("bm25", "ts_rank_cd"),
    exact: bool = False,
) -> EvalRun:
    """Embed every judged query (one batch) and fetch its candidates (one SQL statement per
    query: semantic, BM25 and ts_rank_cd with raw scores). ``vectors``: the judged queries'
    embeddings, in order, when they are already computed (benchmarks, tuning). ``progress`` may
    raise (vecdash.errors.Cancelled) to stop between queries. ``exact``: the semantic arm is an
    exact scan whatever indexes exist (index scans off for each query's transaction), so the
    figures do not depend on an approximate index; the run's ``serving`` says which it was."""
    bad = [p for p in labeled.problems]
    if bad:
        shown = "; ".join(f"line {p.line}: {p.problem}" if p.line else p.problem
                          for p in bad[:5])
        raise InvalidInput(
            f"The labeled queries have {len(bad)} problem(s) — {shown}. Fix the file(s) and load "
            "them again.")
    problems = check_labels(conn, collection, labeled)
    queries = [q for q in labeled.queries if q.id in labeled.qrels]
    if not queries:
        raise InvalidInput(
            "None of the queries has judgments in the qrels, so nothing can be evaluated. Check "
            "that the query ids in both files match.")
    if vectors is None:
        embed_query(collection, queries[0].text, embedder=embedder)  # checks dimension, model
        vectors = embedder.embed([q.text for q in queries])
    if len(vectors) != len(queries):
        raise InvalidInput(f"{len(vectors)} query vectors for {len(queries)} judged queries.")
    serving = semantic_serving(conn, collection, vectors[0], candidates=candidates, exact=exact)
    out: dict[str, Candidates] = {}
    for i, (q, vec) in enumerate(zip(queries, vectors, strict=True)):
        # Measures are of BM25 itself: a long labeled query (ArguAna's are whole arguments) is
        # scored over all its lexemes, not by the search box's shortcut for pasted paragraphs.
        with _exact_semantic(conn, exact):
            out[q.id] = fetch_candidates(conn, collection, q.text, query_vector(collection, vec),
                                         candidates=candidates,
                                         keyword_rankers=keyword_rankers,
                                         filters=filters, k1=k1, b=b, max_lexemes=None)
        if progress is not None:
            progress(i + 1, len(queries))
    keys = list({key for cand in out.values() for key in cand.columns["key"]})
    ext = collection.external_id_column or collection.id_column
    rows = conn.execute(
        sql.SQL("SELECT {}, {}::text FROM {} WHERE {} = ANY(%s)").format(
            sql.Identifier(collection.id_column), sql.Identifier(ext), collection.table,
            sql.Identifier(collection.id_column)),
        (keys,),
    ).fetchall() if keys else []
    notes = sorted({n for cand in out.values() for n in cand.notes if "on the fly" in n})
    empty = [qid for qid, cand in out.items() if not cand.lexemes]
    if empty:
        notes.append(f"{len(empty)} query(ies) have no searchable words, so the keyword arm "
                     f"returns nothing for them: {', '.join(empty[:5])}")
    return EvalRun(collection.name, queries, labeled.qrels, out, {r[0]: str(r[1]) for r in rows},
                   problems, notes, serving)


def per_query(run: EvalRun, config: Config, *, k: int = 10) -> pd.DataFrame:
    """One row per query: id, type, text and every measure for this configuration."""
    frame = pd.DataFrame({"query_id": [q.id for q in run.queries],
                          "type": [q.type for q in run.queries],
                          "query": [q.text for q in run.queries]})
    values = run.scores(config, k=k)
    for i, name in enumerate(measure_names(k)):
        frame[name] = values[:, i]
    return frame


def metrics_table(run: EvalRun, configs: Iterable[Config], *, k: int = 10) -> pd.DataFrame:
    """Mean of every measure over the queries, one row per configuration."""
    rows = []
    for config in configs:
        means = run.scores(config, k=k).mean(axis=0)
        rows.append({"configuration": config.label,
                     **dict(zip(measure_names(k), map(float, means), strict=True))})
    return pd.DataFrame(rows, columns=["configuration", *measure_names(k)])


DEFAULT_WEIGHTS = tuple(round(w, 1) for w in np.linspace(0.0, 1.0, 11))


def sweep(
    run: EvalRun,
    *,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    fusions: Sequence[str] = ("convex", "rrf"),
    rrf_k: int = 60,
    keyword_ranker: str = "bm25",
    k: int = 10,
) -> pd.DataFrame:
    """Every measure's mean for each (fusion, weight), fused in numpy from the fetched
    candidates (no SQL). Columns: fusion, weight, the measures."""
    rows = []
    for fusion in fusions:
        for w in weights:
            config = Config(f"{fusion} w={w:.2f}", float(w), fusion, rrf_k, keyword_ranker)
            means = run.scores(config, k=k).mean(axis=0)
            rows.append({"fusion": fusion, "weight": float(w),
                         **dict(zip(measure_names(k), map(float, means), strict=True))})
    return pd.DataFrame(rows, columns=["fusion", "weight", *measure_names(k)])


def best_setting(sweep_frame: pd.DataFrame, measure: str = "nDCG@10") -> dict[str, Any]:
    """The (fusion, weight) with the highest mean of ``measure``; ties go to the first."""
    if sweep_frame.empty:
        raise InvalidInput("The sweep is empty; run the labeled queries first.")
    row = sweep_frame.iloc[int(np.argmax(sweep_frame[measure].to_numpy(dtype=float)))]
    return {"fusion": str(row["fusion"]), "weight": float(row["weight"]),
            "value": float(row[measure]), "measure": measure}


def compare_configs(
    run: EvalRun, a: Config, b: Config, *, measure: str = "nDCG@10", k: int = 10,
    run_b: EvalRun | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per query, ``measure`` under a and b, the difference, who wins and how many documents
    their top 10s share; and a breakdown by query type (mean of each, wins, losses, ties).
    ``run_b``: b's candidates when they differ from a's (another BM25 k1 / b)."""
    other = run_b or run
    if [q.id for q in other.queries] != [q.id for q in run.queries]:
        raise InvalidInput("The two configurations were run on different labeled queries; "
                           "run both on the same set.")
    fa = per_query(run, a, k=k)
    fb = per_query(other, b, k=k)
    table = pd.DataFrame({
        "query_id": fa["query_id"], "type": fa["type"], "query": fa["query"],
        "a": fa[measure], "b": fb[measure],
    })
    table["delta (b - a)"] = table["b"] - table["a"]
    table["outcome"] = np.where(table["delta (b - a)"] > 1e-12, "b wins",
                                np.where(table["delta (b - a)"] < -1e-12, "a wins", "tie"))
    table["shared top-10"] = [
        len(set(run.ranking(q.id, a, k=10)) & set(other.ranking(q.id, b, k=10)))
        for q in run.queries]
    table = table.sort_values("delta (b - a)", ascending=False).reset_index(drop=True)
    groups = []
    for qtype, part in [("all", table), *table.groupby("type", sort=True)]:
        groups.append({
            "type": qtype or "(none)", "queries": len(part),
            "a mean": float(part["a"].mean()), "b mean": float(part["b"].mean()),
            "b wins": int((part["outcome"] == "b wins").sum()),
            "a wins": int((part["outcome"] == "a wins").sum()),
            "ties": int((part["outcome"] == "tie").sum()),
        })
    return table, pd.DataFrame(groups)


def disagreements(table: pd.DataFrame, *, n: int = 10) -> pd.DataFrame:
    """The ``n`` queries of a ``compare_configs`` table where a and b disagree most: the largest
    difference first, then the fewest shared top-10 documents."""
    order = table.assign(_gap=-table["delta (b - a)"].abs()).sort_values(
        ["_gap", "shared top-10"], kind="stable")
    return order.drop(columns="_gap").head(n).reset_index(drop=True)


def evaluation_report(
    run: EvalRun, *, k: int = 10, weight: float = 0.5, fusion: str = "convex", rrf_k: int = 60
) -> str:
    """The metrics table, the best swept setting and any label problems, as plain text."""
    check_eval_parameters(k=k, weight=weight, fusion=fusion, rrf_k=rrf_k)
    table = metrics_table(run, standard_configs(weight=weight, fusion=fusion, rrf_k=rrf_k), k=k)
    swept = sweep(run, rrf_k=rrf_k, k=k)
    best = best_setting(swept)
    names = measure_names(k)
    width = max(len("configuration"), *(len(x) for x in table["configuration"]))
    lines = [f"{run.collection}: {len(run.queries)} labeled queries, top-{k}", "",
             f"{'configuration':<{width}}  " + "  ".join(f"{m:>8}" for m in names)]
    for row in table.itertuples(index=False):
        lines.append(f"{row[0]:<{width}}  " + "  ".join(f"{v:>8.4f}" for v in row[1:]))
    lines += ["", f"best of the sweep (weights 0..1 step 0.1, convex and RRF k={rrf_k}) by "
                  f"nDCG@10: {best['fusion']} w={best['weight']:.1f} -> {best['value']:.4f}"]
    for note in run.notes:
        lines.append(f"note: {note}")
    for p in run.problems:
        lines.append(f"label problem: {p.problem}")
    return "\n".join(lines)
