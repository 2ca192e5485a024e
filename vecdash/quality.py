"""Search quality against labeled queries: reading queries and qrels, checking them against a
collection, metrics (nDCG@10, Recall@k, MRR@10, P@k), weight sweeps and per-query comparisons.

Every query's candidates are fetched once (one SQL statement: the semantic arm and both keyword
rankers with their raw scores, see ``vecdash.search.fetch_candidates``); every configuration and
every weight of a sweep is then fused and scored in numpy, without going back to the database.

The metrics follow trec_eval's definitions (graded gain for nDCG, relevance >= 1 for the binary
ones, P@k divided by k); tests cross-check them against ir-measures (pytrec_eval).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from vecdash.collections import Collection
from vecdash.embedders import Embedder
from vecdash.errors import InvalidInput
from vecdash.search import (
    Candidates,
    SearchFilters,
    embed_query,
    fetch_candidates,
    fuse_arrays,
    id_ranks,
    query_vector,
)

Qrels = dict[str, dict[str, int]]  # query id -> {document external id: grade}
MAX_PROBLEMS_SHOWN = 200


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    type: str = ""  # e.g. "exact" / "conceptual" in the demo; empty when unknown


@dataclass(frozen=True)
class LabelProblem:
    """One thing wrong with a labeled-query file or with how it fits the collection."""

    source: str
    line: int | None
    problem: str


@dataclass
class LabeledSet:
    queries: list[Query]
    qrels: Qrels
    source: str
    problems: list[LabelProblem] = field(default_factory=list)


# --- reading -----------------------------------------------------------------------------------


def parse_qrels(text: str, *, source: str = "qrels") -> tuple[Qrels, list[LabelProblem]]:
    """Read qrels in BEIR TSV (``query-id<TAB>corpus-id<TAB>score``, header optional) or TREC
    format (``qid iteration docid relevance``, whitespace separated). Returns the judgments and a
    report of every line that could not be used (line number and why)."""
    qrels: Qrels = {}
    problems: list[LabelProblem] = []
    lines = text.splitlines()
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [p.strip() for p in parts]
        if n == 1 and [p.lower() for p in parts[:2]] in (["query-id", "corpus-id"],
                                                        ["query_id", "corpus_id"],
                                                        ["qid", "docid"]):
            continue
        if len(parts) == 3:
            qid, doc, grade_text = parts
        elif len(parts) == 4:
            qid, _, doc, grade_text = parts
        else:
            problems.append(LabelProblem(source, n, (
                f"expected 3 columns (query-id, corpus-id, score) or 4 (TREC: qid iter docid "
                f"rel) but found {len(parts)}: {raw[:80]!r}")))
            continue
        if not qid or not doc:
            problems.append(LabelProblem(source, n, "empty query id or document id"))
            continue
        try:
            grade = int(grade_text)
        except ValueError:
            problems.append(LabelProblem(source, n, (
                f"the relevance {grade_text[:40]!r} is not a whole number (e.g. 0, 1, 2)")))
            continue
        judged = qrels.setdefault(qid, {})
        if doc in judged and judged[doc] != grade:
            problems.append(LabelProblem(source, n, (
                f"{qid!r} / {doc!r} is judged twice with different grades "
                f"({judged[doc]} and {grade}); the later one is used")))
        judged[doc] = grade
    if not qrels and not problems:
        problems.append(LabelProblem(source, None, "the file has no judgments"))
    return qrels, problems


def parse_queries(text: str, *, source: str = "queries") -> tuple[list[Query], list[LabelProblem]]:
    """Read queries as BEIR JSONL (``{"_id": ..., "text": ..., "metadata": {"type": ...}}``;
    ``id`` and a top-level ``type`` are accepted too) or TSV (``id<TAB>text[<TAB>type]``)."""
    queries: list[Query] = []
    problems: list[LabelProblem] = []
    seen: set[str] = set()
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        qid: Any
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(LabelProblem(source, n, f"not valid JSON: {exc.msg}"))
                continue
            if not isinstance(obj, dict):
                problems.append(LabelProblem(source, n, "a JSON line must be an object"))
                continue
            qid = obj.get("_id", obj.get("id"))
            qtext = obj.get("text")
            meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
            qtype = obj.get("type", meta.get("type", "")) if meta is not None else ""
        else:
            parts = line.split("\t")
            if len(parts) < 2:
                problems.append(LabelProblem(source, n, (
                    "expected a JSON object or 'id<TAB>text' but found one column")))
                continue
            qid, qtext = parts[0], parts[1]
            qtype = parts[2] if len(parts) > 2 else ""
        if qid is None or str(qid).strip() == "":
            problems.append(LabelProblem(source, n, "the query has no id (_id)"))
            continue
        if not isinstance(qtext, str) or not qtext.strip():
            problems.append(LabelProblem(source, n, f"query {qid!r} has no text"))
            continue
        qid = str(qid).strip()
        if qid in seen:
            problems.append(LabelProblem(source, n, f"query id {qid!r} appears twice; the first "
                                                    "is used"))
            continue
        seen.add(qid)
        queries.append(Query(qid, qtext.strip(), str(qtype or "")))
    if not queries and not problems:
        problems.append(LabelProblem(source, None, "the file has no queries"))
    return queries, problems


def labeled_set(queries_text: str, qrels_text: str, *, queries_name: str = "queries",
                qrels_name: str = "qrels") -> LabeledSet:
    """Queries and qrels read from uploaded files, with every row-level problem collected."""
    queries, qp = parse_queries(queries_text, source=queries_name)
    qrels, rp = parse_qrels(qrels_text, source=qrels_name)
    return LabeledSet(queries, qrels, f"{queries_name} + {qrels_name}", qp + rp)


def demo_labeled_set() -> LabeledSet:
    """The labeled queries and graded qrels that ship with the demo collection."""
    from vecdash.demo import demo_qrels, demo_queries

    return LabeledSet([Query(q.id, q.text, q.type) for q in demo_queries()], demo_qrels(),
                      "demo labeled queries")


def check_labels(
    conn: psycopg.Connection[Any], collection: Collection, labeled: LabeledSet
) -> list[LabelProblem]:
    """What does not fit the collection: judged documents that are not in it, judgments for
    queries that have no text, and queries without any judgment. Nothing is dropped: unknown
    documents still count as relevant (so they lower recall), as they would for any search."""
    c = collection
    ext = c.external_id_column or c.id_column
    judged_docs = sorted({d for docs in labeled.qrels.values() for d in docs})
    known = {
        str(r[0]) for r in conn.execute(
            sql.SQL("SELECT {}::text FROM {} WHERE {}::text = ANY(%s)").format(
                sql.Identifier(ext), c.table, sql.Identifier(ext)),
            (judged_docs,),
        ).fetchall()
    }
    problems: list[LabelProblem] = []
    for qid, docs in labeled.qrels.items():
        missing = [d for d in docs if d not in known]
        if missing:
            problems.append(LabelProblem("qrels", None, (
                f"query {qid!r}: {len(missing)} judged document(s) not in {c.name!r}: "
                + ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""))))
    query_ids = {q.id for q in labeled.queries}
    for qid in labeled.qrels:
        if qid not in query_ids:
            problems.append(LabelProblem("qrels", None, (
                f"query {qid!r} has judgments but no query text; it is not evaluated")))
    for q in labeled.queries:
        if q.id not in labeled.qrels:
            problems.append(LabelProblem("queries", None, (
                f"query {q.id!r} has no judgments; it is not evaluated")))
    return problems


# --- metrics ----------------------------------------------------------------------------------


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
        order, _ = fuse_arrays(a["sem_s"], a["sem_r"], a[f"{config.keyword_ranker}_s"],
                               a[f"{config.keyword_ranker}_r"], a["id_rank"],
                               weight=config.weight, fusion=config.fusion, rrf_k=config.rrf_k)
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


def run_labeled_queries(
    conn: psycopg.Connection[Any],
    collection: Collection,
    labeled: LabeledSet,
    *,
    embedder: Embedder,
    candidates: int = 100,
    filters: SearchFilters | None = None,
    k1: float = 1.2,
    b: float = 0.75,
    progress: ProgressFn | None = None,
    vectors: np.ndarray | None = None,
) -> EvalRun:
    """Embed every judged query (one batch) and fetch its candidates (one SQL statement per
    query: semantic, BM25 and ts_rank_cd with raw scores). ``vectors``: the judged queries'
    embeddings, in order, when they are already computed (benchmarks)."""
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
    out: dict[str, Candidates] = {}
    for i, (q, vec) in enumerate(zip(queries, vectors, strict=True)):
        # Measures are of BM25 itself: a long labeled query (ArguAna's are whole arguments) is
        # scored over all its lexemes, not by the search box's shortcut for pasted paragraphs.
        out[q.id] = fetch_candidates(conn, collection, q.text, query_vector(collection, vec),
                                     candidates=candidates,
                                     keyword_rankers=("bm25", "ts_rank_cd"),
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
                   problems, notes)


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
    run: EvalRun, a: Config, b: Config, *, measure: str = "nDCG@10", k: int = 10
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per query, ``measure`` under a and b, the difference and who wins; and a breakdown by
    query type (mean of each, wins, losses, ties)."""
    fa = per_query(run, a, k=k)
    fb = per_query(run, b, k=k)
    table = pd.DataFrame({
        "query_id": fa["query_id"], "type": fa["type"], "query": fa["query"],
        "a": fa[measure], "b": fb[measure],
    })
    table["delta (b - a)"] = table["b"] - table["a"]
    table["outcome"] = np.where(table["delta (b - a)"] > 1e-12, "b wins",
                                np.where(table["delta (b - a)"] < -1e-12, "a wins", "tie"))
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


def problems_frame(problems: Sequence[LabelProblem]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"file": p.source, "line": p.line, "problem": p.problem}
         for p in problems[:MAX_PROBLEMS_SHOWN]],
        columns=["file", "line", "problem"],
    )


def qrels_tsv(qrels: Qrels) -> str:
    """Qrels as BEIR TSV text (with header)."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(["query-id", "corpus-id", "score"])
    for qid, docs in qrels.items():
        for doc, grade in docs.items():
            writer.writerow([qid, doc, grade])
    return buf.getvalue()


def load_labeled_files(
    queries_path: str | None, qrels_path: str | None, *, collection: Collection
) -> LabeledSet:
    """Labeled queries from files (either may be omitted for the demo collection, whose own
    queries / qrels then fill in)."""
    from vecdash.demo import DEMO_COLLECTION

    if queries_path is None and qrels_path is None:
        if collection.name != DEMO_COLLECTION:
            raise InvalidInput(
                f"{collection.name!r} has no bundled labeled queries. Give --queries FILE "
                "(BEIR JSONL or id<TAB>text) and --qrels FILE (BEIR TSV or TREC qrels).")
        return demo_labeled_set()
    demo = demo_labeled_set() if collection.name == DEMO_COLLECTION else None

    def read(path: str) -> str:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"Could not read {path}: {exc}.") from exc

    if queries_path is not None:
        queries, qp = parse_queries(read(queries_path), source=queries_path)
    elif demo is not None:
        queries, qp = demo.queries, []
    else:
        raise InvalidInput("Give --queries FILE along with --qrels for this collection.")
    if qrels_path is not None:
        qrels, rp = parse_qrels(read(qrels_path), source=qrels_path)
    elif demo is not None:
        qrels, rp = demo.qrels, []
    else:
        raise InvalidInput("Give --qrels FILE along with --queries for this collection.")
    return LabeledSet(queries, qrels, f"{queries_path or 'demo'} + {qrels_path or 'demo'}",
                      qp + rp)


def evaluation_report(
    run: EvalRun, *, k: int = 10, weight: float = 0.5, fusion: str = "convex", rrf_k: int = 60
) -> str:
    """The metrics table, the best swept setting and any label problems, as plain text."""
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
