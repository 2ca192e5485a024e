"""Property-based tests (hypothesis): whatever text a user types as a collection name, a query, a
filter value or a line of a qrels / queries file, only a VecdashError may come out of vecdash.

About 1,300 examples in all; the database ones reuse the session's server and the demo."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vecdash.collections import Collection, create_collection, drop_collection, get_collection
from vecdash.errors import NotFound, VecdashError
from vecdash.labels import LabeledSet, check_labels, parse_qrels, parse_queries
from vecdash.search import fetch_candidates, hybrid_search

# Any Unicode text, lone surrogates and NUL included (st.text leaves surrogates out).
ANY_CHAR = st.one_of(st.characters(codec=None), st.characters(min_codepoint=0xD800,
                                                              max_codepoint=0xDFFF),
                     st.sampled_from(["\x00", "\t", "\n", " ", "'", '"', "\\", "%", "&", "|",
                                      "!", ":", "*", "(", ")"]))
ANY_TEXT = st.text(ANY_CHAR, max_size=80)
# Derandomized (the same examples every run, no example database written): a failure is
# reproducible, and the CI budget is known.
DB = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
              derandomize=True, database=None)


def examples(n: int) -> settings:
    return settings(DB, max_examples=n)


@examples(300)
@given(name=ANY_TEXT)
def test_any_collection_name_is_found_or_refused(conn: Any, name: str) -> None:
    try:
        get_collection(conn, name)
    except VecdashError:
        pass


@examples(25)
@given(name=st.text(ANY_CHAR, min_size=1, max_size=30))
def test_any_collection_name_is_created_or_refused(conn: Any, name: str) -> None:
    name = "p " + name
    try:
        made = create_collection(conn, name, dimension=2, embedder="none", model="x")
    except VecdashError:
        return
    try:
        assert get_collection(conn, name) == made
    finally:
        drop_collection(conn, name)
    with pytest.raises(NotFound):
        get_collection(conn, name)


@pytest.fixture(scope="module")
def query_vector(demo: Collection, embedder: Any) -> np.ndarray:
    return np.asarray(embedder.embed(["sea otters"])[0], dtype=np.float32)


@examples(250)
@given(query=ANY_TEXT)
def test_any_query_searches_or_is_refused(conn: Any, demo: Collection, query_vector: np.ndarray,
                                          query: str) -> None:
    try:
        frame = hybrid_search(conn, demo, query, embedder=None,  # type: ignore[arg-type]
                              vector=query_vector, k=5)
    except VecdashError:
        return
    assert len(frame) <= 5


@examples(60)
@given(query=ANY_TEXT)
def test_any_query_embeds_or_is_refused(conn: Any, demo: Collection, embedder: Any,
                                        query: str) -> None:
    try:
        hybrid_search(conn, demo, query, embedder=embedder, k=3)
    except VecdashError:
        pass


@examples(200)
@given(categories=st.lists(ANY_TEXT, max_size=3),
       metadata=st.dictionaries(ANY_TEXT, ANY_TEXT, max_size=2))
def test_any_filter_values_filter_or_are_refused(conn: Any, demo: Collection,
                                                 query_vector: np.ndarray,
                                                 categories: list[str],
                                                 metadata: dict[str, str]) -> None:
    try:
        fetch_candidates(conn, demo, "otters kelp", query_vector, candidates=10,
                         filters={"categories": categories, "metadata": metadata})
    except VecdashError:
        pass


QRELS_LINE = st.one_of(
    ANY_TEXT,
    st.builds(lambda q, d, g: f"{q}\t{d}\t{g}", ANY_TEXT, ANY_TEXT,
              st.one_of(st.integers(-5, 5).map(str), ANY_TEXT)),
    st.builds(lambda q, d, g: f"{q} 0 {d} {g}", ANY_TEXT, ANY_TEXT, st.integers(-5, 5)),
)


@examples(300)
@given(lines=st.lists(QRELS_LINE, max_size=8), queries=st.lists(ANY_TEXT, max_size=6))
def test_any_label_file_reads_with_problems_or_is_refused(lines: list[str],
                                                          queries: list[str]) -> None:
    try:
        qrels, problems = parse_qrels("\n".join(lines))
        parsed, more = parse_queries("\n".join(queries))
    except VecdashError:
        return
    for judged in qrels.values():
        assert all(isinstance(g, int) for g in judged.values())
    assert all(p.line is None or p.line >= 1 for p in [*problems, *more])
    assert all("\x00" not in q.text and "\x00" not in q.id for q in parsed)


@examples(150)
@given(lines=st.lists(QRELS_LINE, min_size=1, max_size=5))
def test_any_qrels_check_against_a_collection(conn: Any, demo: Collection,
                                              lines: list[str]) -> None:
    qrels, _ = parse_qrels("\n".join(lines))
    try:
        check_labels(conn, demo, LabeledSet([], qrels, "qrels"))
    except VecdashError:
        pass
