"""Chunkers: paragraphs and token windows with overlap (the real local tokenizer); every chunk
points back to its source document and its character offsets."""

from __future__ import annotations

import pytest

from vecdash.chunking import ChunkSpec, chunk_records, local_token_offsets, split_paragraphs
from vecdash.embedders import load_local_model
from vecdash.errors import InvalidInput
from vecdash.records import Record

TEXT = ("Sourdough needs a lively starter.\n\n"
        "Feed it flour and water every day; keep it warm.\n  \n"
        "Bake at a high temperature with steam for a good crust.")


def test_paragraphs_keep_offsets() -> None:
    chunks = split_paragraphs(TEXT)
    assert [c.text for c in chunks] == [
        "Sourdough needs a lively starter.",
        "Feed it flour and water every day; keep it warm.",
        "Bake at a high temperature with steam for a good crust.",
    ]
    assert all(TEXT[c.start:c.end] == c.text for c in chunks)


def test_token_windows_overlap_with_the_local_tokenizer() -> None:
    text = " ".join(f"word{i}" for i in range(120))
    spec = ChunkSpec("tokens", size=32, overlap=8)
    records = list(chunk_records([Record(text, title="T", external_id="doc1",
                                         metadata={"lang": "en"})], spec))
    tokenizer = load_local_model().tokenizer
    total = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert len(records) == -(-(total - 8) // 24)  # windows of 32 starting every 24 tokens
    for i, rec in enumerate(records):
        m = rec.metadata
        assert rec.external_id == f"doc1#{i}" and rec.title == "T"
        assert m["source_id"] == "doc1" and m["chunk_index"] == i and m["lang"] == "en"
        assert m["chunk_count"] == len(records)
        assert text[m["char_start"]:m["char_end"]] == rec.content
        assert len(tokenizer(rec.content, add_special_tokens=False)["input_ids"]) <= 32
    # consecutive chunks share text (the overlap), and together they cover the whole text
    first, second = records[0].metadata, records[1].metadata
    assert second["char_start"] < first["char_end"]
    assert records[0].metadata["char_start"] == 0 and records[-1].metadata["char_end"] == len(text)


def test_offsets_come_from_the_tokenizer() -> None:
    spans = local_token_offsets("Hello, world")
    assert [("Hello, world")[a:b] for a, b in spans] == ["Hello", ",", "world"]


def test_none_passes_through_and_bad_specs_are_refused() -> None:
    rec = Record(TEXT, external_id="x")
    assert list(chunk_records([rec], ChunkSpec("none"))) == [rec]
    paragraphs = list(chunk_records([rec], ChunkSpec("paragraph")))
    assert [r.external_id for r in paragraphs] == ["x#0", "x#1", "x#2"]
    failed = Record("", error="line 3 is not valid JSON")
    assert list(chunk_records([failed], ChunkSpec("paragraph"))) == [failed]
    with pytest.raises(InvalidInput, match="overlap"):
        ChunkSpec("tokens", size=32, overlap=32).check()
    with pytest.raises(InvalidInput, match="too small"):
        ChunkSpec("tokens", size=2).check()
    with pytest.raises(InvalidInput, match="Unknown chunking"):
        ChunkSpec("sentences").check()  # type: ignore[arg-type]
