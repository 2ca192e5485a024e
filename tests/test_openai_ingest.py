"""The OpenAI path against a local OpenAI-compatible HTTP server (real HTTP, the real openai
client): request limits, token counts and cost, retries with backoff, clear errors, and a whole
ingestion into a 256-dimensional text-embedding-3-small collection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.openai_server import FakeOpenAI
from vecdash.collections import drop_collection
from vecdash.embedders import (
    OPENAI_PRICES_PER_1M,
    OpenAIEmbedder,
    count_text_tokens,
    count_tokens,
    openai_tokenizer,
    plan_requests,
    truncate_to_tokens,
)
from vecdash.errors import EmbedderError, InvalidInput
from vecdash.ingest import ingest_records
from vecdash.loading import ingest_file
from vecdash.records import Record


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


def client(fake: FakeOpenAI, **kw: Any) -> OpenAIEmbedder:
    return OpenAIEmbedder(api_key="sk-test", base_url=fake.base_url, backoff=0.01, **kw)


def test_token_counts_are_exact_offline() -> None:
    assert openai_tokenizer() is not None  # bpe-openai ships cl100k_base: no download
    assert count_text_tokens("hello world, this is a test") == 7
    counted = count_tokens(["hello world", "", "a" + " a" * 8999])
    assert counted.exact and counted.texts == 3 and counted.over_limit == 1
    assert counted.tokens == 2 + 0 + 9000 and counted.longest == 9000
    assert counted.cost("text-embedding-3-small") == pytest.approx(
        counted.tokens / 1e6 * OPENAI_PRICES_PER_1M["text-embedding-3-small"])
    assert counted.cost("some-local-model") is None
    cut, n = truncate_to_tokens("word" + " word" * 9_999, 8192)
    assert n == 10_000 and count_text_tokens(cut) == 8192


def test_plan_respects_input_and_token_limits() -> None:
    assert [len(p) for p in plan_requests([1] * 5000)] == [2048, 2048, 904]
    plans = plan_requests([8000] * 100)  # 37 inputs of 8,000 tokens fit in 300,000
    assert [len(p) for p in plans] == [37, 37, 26]
    assert all(sum([8000] * len(p)) <= 300_000 for p in plans)
    assert plan_requests([]) == []


def test_requests_stay_within_limits_on_the_wire(fake: FakeOpenAI) -> None:
    long_text = "tide " * 7000  # 7,000 tokens each
    texts = [f"{i} {long_text}" for i in range(90)] + [f"short {i}" for i in range(3000)]
    e = client(fake)
    vecs = e.embed(texts)
    assert vecs.shape == (3090, 1536)
    assert all(len(r["input"]) <= 2048 for r in fake.requests)
    assert max(fake.token_counts) <= 300_000 and len(fake.requests) >= 4
    assert sum(fake.token_counts) == e.tokens == count_tokens(texts).tokens


def test_overlong_input_is_truncated_with_a_warning(fake: FakeOpenAI) -> None:
    e = client(fake)
    vecs = e.embed(["ok", "word" + " word" * 8999])
    assert vecs.shape == (2, 1536)
    assert len(e.warnings) == 1 and "9,000 tokens" in e.warnings[0]
    assert "truncated" in e.warnings[0] and "word word" in e.warnings[0]


def test_rate_limits_and_server_errors_are_retried_with_backoff(fake: FakeOpenAI) -> None:
    fake.fail_next = [429, 429, 503, 500]
    e = client(fake)
    assert e.embed(["hello"]).shape == (1, 1536)
    assert e.retries == 4 and len(fake.requests) == 5
    fake.fail_next = [500] * 10
    stubborn = client(fake, max_retries=2)
    with pytest.raises(EmbedderError, match="HTTP 500 after 2 retries"):
        stubborn.embed(["hello"])
    fake.fail_next = [429] * 10
    with pytest.raises(EmbedderError, match="429.*after 2 retries"):
        client(fake, max_retries=2).embed(["hello"])


def test_clear_errors(fake: FakeOpenAI) -> None:
    with pytest.raises(EmbedderError, match="rejected the API key \\(401\\)"):
        OpenAIEmbedder(api_key="sk-wrong", base_url=fake.base_url).embed(["x"])
    with pytest.raises(EmbedderError, match="does not know the model 'nope'"):
        client(fake, model="nope").embed(["x"])
    fake.wrong_dimension = 768
    with pytest.raises(EmbedderError, match="returned 768-dimensional vectors, expected 1536"):
        client(fake).embed(["x"])
    fake.wrong_dimension = None
    fake.extra_models["small-compatible"] = 512
    with pytest.raises(EmbedderError, match="refused.*dimensions"):
        client(fake, model="small-compatible", dimensions=1024).embed(["x"])
    down = OpenAIEmbedder(api_key="sk-test", base_url="http://127.0.0.1:9/v1", max_retries=1,
                          backoff=0.01, timeout=2)
    with pytest.raises(EmbedderError, match="Cannot reach the embeddings server"):
        down.embed(["x"])


def test_openai_ingestion_end_to_end(conn: Any, unique_name: str, fake: FakeOpenAI,
                                     tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_text("id,content\n" + "".join(f"{i},Harbour log entry {i}\n" for i in range(30))
                    + "30,\n")
    e = client(fake, dimensions=256)
    fake.fail_next = [429]
    collection, report = ingest_file(conn, path, collection=unique_name, embedder=e,
                                     batch_size=8)
    try:
        assert (collection.embedder, collection.model, collection.dimension) == \
            ("openai", "text-embedding-3-small", 256)
        assert report.inserted == 30 and report.failed_count == 1 and e.retries == 1
        assert all(r.get("dimensions") == 256 for r in fake.requests)
        # same texts again (another collection, same model and dimensions): served by the cache
        before = len(fake.requests)
        _, again = ingest_file(conn, path, collection=unique_name + "2", embedder=client(
            fake, dimensions=256))
        assert again.inserted == 30 and again.embedded == 0 and len(fake.requests) == before
        drop_collection(conn, unique_name + "2")
        # a different dimension does not fit the collection: refused before any request
        with pytest.raises(InvalidInput, match="512-dimensional"):
            ingest_records(conn, collection, [Record("x")], embedder=client(fake, dimensions=512))
        assert len(fake.requests) == before
    finally:
        drop_collection(conn, unique_name)


def test_cli_search_asks_for_the_stored_dimensions(conn: Any, unique_name: str, fake: FakeOpenAI,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`vecdash search` on an OpenAI collection stored at reduced dimensions embeds the query at
    those dimensions (as the dashboard does), so it finds what the collection holds."""
    from vecdash.cli import main

    path = tmp_path / "docs.csv"
    path.write_text("id,content\n" + "".join(f"h{i},Harbour log entry {i}\n" for i in range(5)))
    collection, _ = ingest_file(conn, path, collection=unique_name,
                                embedder=client(fake, dimensions=256))
    try:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        before = len(fake.requests)
        assert main(["search", "Harbour log entry 3", "--collection", unique_name, "-k", "2"]) == 0
        query_requests = fake.requests[before:]
        assert query_requests and all(r.get("dimensions") == 256 for r in query_requests)
        assert capsys.readouterr().out.splitlines()[0].split()[2] == "h3"
    finally:
        drop_collection(conn, unique_name)
