"""Labeled queries for measuring search quality: reading queries and qrels (BEIR or TREC), with
every row-level problem reported, the demo collection's own set, and checking a set against a
collection."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import psycopg
from psycopg import sql

from vecdash.errors import InvalidInput
from vecdash.text_checks import text_problem

if TYPE_CHECKING:
    from vecdash.collections import Collection

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


def _lines(text: str, source: str) -> list[str]:
    if not isinstance(text, str):
        raise InvalidInput(f"{source} must be text (the file's contents), not a "
                           f"{type(text).__name__}.")
    return text.splitlines()


def parse_qrels(text: str, *, source: str = "qrels") -> tuple[Qrels, list[LabelProblem]]:
    """Read qrels in BEIR TSV (``query-id<TAB>corpus-id<TAB>score``, header optional) or TREC
    format (``qid iteration docid relevance``, whitespace separated). Returns the judgments and a
    report of every line that could not be used (line number and why)."""
    qrels: Qrels = {}
    problems: list[LabelProblem] = []
    lines = _lines(text, source)
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if bad := text_problem(line):
            problems.append(LabelProblem(source, n, f"the line {bad}; remove it"))
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
    for n, raw in enumerate(_lines(text, source), start=1):
        line = raw.strip()
        if not line:
            continue
        if bad := text_problem(line):
            problems.append(LabelProblem(source, n, f"the line {bad}; remove it"))
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
        if bad := text_problem(qtext) or text_problem(qid) or text_problem(str(qtype or "")):
            problems.append(LabelProblem(source, n, f"query {qid!r} {bad}; remove it"))
            continue
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
