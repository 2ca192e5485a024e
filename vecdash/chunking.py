"""Chunking: split long documents before embedding. Each chunk keeps a pointer to its source
document in its metadata (``source_id``, ``chunk_index``, ``chunk_count``, ``char_start``,
``char_end``: ``source content[char_start:char_end]`` is the chunk's text).

Modes: ``none`` (a document is one record), ``paragraph`` (split on blank lines) and ``tokens``
(fixed windows of ``size`` tokens with ``overlap`` tokens shared between neighbours, counted with
the local model's tokenizer, which is available offline).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

from vecdash.errors import InvalidInput
from vecdash.records import Record, content_hash

ChunkMode = Literal["none", "paragraph", "tokens"]
CHUNK_MODES: tuple[ChunkMode, ...] = ("none", "paragraph", "tokens")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")

# text -> (start, end) character offsets of its tokens, in order
TokenOffsets = Callable[[str], list[tuple[int, int]]]


@dataclass(frozen=True)
class ChunkSpec:
    mode: ChunkMode = "none"
    size: int = 200  # tokens per chunk (mode "tokens")
    overlap: int = 40  # tokens shared by consecutive chunks (mode "tokens")

    def check(self) -> ChunkSpec:
        if self.mode not in CHUNK_MODES:
            raise InvalidInput(f"Unknown chunking {self.mode!r}; use one of {', '.join(CHUNK_MODES)}.")
        if self.mode == "tokens":
            if self.size < 8:
                raise InvalidInput(f"A chunk of {self.size} tokens is too small; use at least 8.")
            if not 0 <= self.overlap < self.size:
                raise InvalidInput(
                    f"The overlap ({self.overlap}) must be at least 0 and smaller than the chunk "
                    f"size ({self.size})."
                )
        return self


@dataclass(frozen=True)
class Chunk:
    text: str
    index: int
    start: int  # character offsets in the source text
    end: int


def local_token_offsets(text: str) -> list[tuple[int, int]]:
    """Token character offsets from the local model's (fast, offline) tokenizer."""
    from vecdash.embedders import load_local_model

    tokenizer = load_local_model().tokenizer
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                        truncation=False, verbose=False)
    return [(int(a), int(b)) for a, b in encoded["offset_mapping"]]


def split_paragraphs(text: str) -> list[Chunk]:
    """Paragraphs (separated by blank lines), stripped, with their offsets; empty ones dropped."""
    chunks: list[Chunk] = []
    pos = 0
    bounds = []
    for m in _PARAGRAPH_BREAK.finditer(text):
        bounds.append((pos, m.start()))
        pos = m.end()
    bounds.append((pos, len(text)))
    for start, end in bounds:
        part = text[start:end]
        stripped = part.strip()
        if not stripped:
            continue
        lead = len(part) - len(part.lstrip())
        s = start + lead
        chunks.append(Chunk(stripped, len(chunks), s, s + len(stripped)))
    return chunks


def split_tokens(text: str, size: int, overlap: int,
                 offsets: TokenOffsets | None = None) -> list[Chunk]:
    """Windows of ``size`` tokens, each starting ``size - overlap`` tokens after the previous one.
    A chunk's text is the source text between its first and last token (whitespace kept)."""
    spans = (offsets or local_token_offsets)(text)
    if not spans:
        return [Chunk(text.strip(), 0, 0, len(text))] if text.strip() else []
    step = size - overlap
    chunks: list[Chunk] = []
    for first in range(0, len(spans), step):
        window = spans[first:first + size]
        start, end = window[0][0], window[-1][1]
        chunks.append(Chunk(text[start:end], len(chunks), start, end))
        if first + size >= len(spans):
            break
    return chunks


def chunk_text(text: str, spec: ChunkSpec, *, offsets: TokenOffsets | None = None) -> list[Chunk]:
    spec.check()
    if spec.mode == "none":
        return [Chunk(text, 0, 0, len(text))]
    if spec.mode == "paragraph":
        return split_paragraphs(text)
    return split_tokens(text, spec.size, spec.overlap, offsets)


def chunk_records(records: Iterable[Record], spec: ChunkSpec, *,
                  offsets: TokenOffsets | None = None) -> Iterator[Record]:
    """Records split into chunk records. A chunk's id is ``<source id>#<index>``; its metadata is
    the source's plus the pointer back to the source. Mode "none" passes records through."""
    spec.check()
    for rec in records:
        if spec.mode == "none" or rec.error or rec.embedding is not None or not rec.content.strip():
            yield rec  # nothing to split (or a failure / precomputed vector to report as is)
            continue
        source_id = str(rec.external_id) if rec.external_id else content_hash(rec.content)[:16]
        pieces = chunk_text(rec.content, spec, offsets=offsets)
        for piece in pieces:
            metadata: dict[str, Any] = {
                **(rec.metadata or {}),
                "source_id": source_id,
                "chunk_index": piece.index,
                "chunk_count": len(pieces),
                "char_start": piece.start,
                "char_end": piece.end,
            }
            yield replace(rec, content=piece.text, external_id=f"{source_id}#{piece.index}",
                          metadata=metadata)
