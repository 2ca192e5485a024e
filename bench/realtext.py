"""A real-text corpus for the benchmarks, built from what this machine already has: the docstrings
of the Python standard library and of every package requirements.txt installs into .venv.

No download, no generated words: each passage is one paragraph of a docstring (whitespace
normalised; doctest and code-block paragraphs and paragraphs under 8 words or under 60% alphabetic
words left out; exact duplicates dropped), titled with the module and qualified name it documents,
its category the top-level package. With the pinned requirements this gives about 160,000
distinct passages with a vocabulary of about 40,000 words: a realistic (Zipfian) vocabulary,
unlike the demo's 365 passages, and real embeddings from the local model.

    passages = harvest()                       # parsed once, cached (a few minutes the first time)
    docs, queries = split(passages, 100_000, 200)
    vectors = embed_cached(docs, embedder)     # embedded once, cached (about 36 min on 2 cores, once)

Caches live in the user cache directory (platformdirs, "vecdash/bench") under a key of the
source files' paths, sizes and mtimes (the harvest) or of the texts and model (the vectors).
"""

from __future__ import annotations

import ast
import hashlib
import json
import multiprocessing
import re
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from vecdash.records import Record, embed_text  # noqa: E402

CACHE = Path(platformdirs.user_cache_dir("vecdash")) / "bench"
HARVEST_VERSION = 2  # part of the harvest cache's key: raise it when _paragraphs changes
HELD_OUT = 200  # passages kept out of the stored rows, to query with (shared by the benches)
_PARAGRAPH = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Passage:
    title: str
    text: str
    category: str

    def record(self, external_id: str, embedding: np.ndarray | None = None) -> Record:
        return Record(self.text, title=self.title, external_id=external_id,
                      category=self.category, embedding=embedding)


def _sources() -> list[tuple[Path, Path]]:
    """(root, file) for every .py file of the standard library and of .venv's site-packages."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found = [(purelib, p) for p in sorted(purelib.rglob("*.py"))]
    found += [(stdlib, p) for p in sorted(stdlib.rglob("*.py")) if "site-packages" not in p.parts]
    return found


def _paragraphs(item: tuple[Path, Path]) -> list[tuple[str, str, str]]:
    root, path = item
    rel = path.relative_to(root).with_suffix("")
    module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    # a package's (or a top-level module's) name; the standard library is one category
    category = rel.parts[0] if root.name == "site-packages" else "stdlib"
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return []
    out: list[tuple[str, str, str]] = []

    def visit(node: ast.AST, qualname: str) -> None:
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            for para in _PARAGRAPH.split(doc or ""):
                if ">>>" in para or "::" in para:
                    continue
                words = para.split()
                if len(words) < 8 or sum(w.isalpha() for w in words) < 0.6 * len(words):
                    continue
                out.append((qualname or module, " ".join(words), category))
        for child in ast.iter_child_nodes(node):
            name = getattr(child, "name", None)
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, f"{qualname or module}.{name}")
    visit(tree, "")
    return out


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def harvest(*, quiet: bool = False) -> list[Passage]:
    """Every distinct docstring paragraph of the standard library and .venv, in file order."""
    sources = _sources()
    listing = [(str(p), p.stat().st_size, int(p.stat().st_mtime)) for _, p in sources]
    path = CACHE / f"docstrings-{_key(HARVEST_VERSION, sys.version, listing)}.jsonl"
    if path.exists():
        with path.open(encoding="utf-8") as f:
            return [Passage(**json.loads(line)) for line in f]
    started = time.perf_counter()
    if not quiet:
        print(f"harvesting docstrings from {len(sources):,} .py files (once; cached in {CACHE})",
              flush=True)
    with multiprocessing.Pool() as pool:
        found = pool.map(_paragraphs, sources, chunksize=64)
    seen: set[str] = set()
    passages = []
    for title, text, category in (t for file in found for t in file):
        if text not in seen:
            seen.add(text)
            passages.append(Passage(title, text, category))
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for p in passages:
            f.write(json.dumps(p.__dict__) + "\n")
    tmp.replace(path)
    if not quiet:
        print(f"  {len(passages):,} distinct paragraphs in {time.perf_counter() - started:.0f} s",
              flush=True)
    return passages


def split(passages: list[Passage], rows: int, held_out: int,
          seed: int = 0) -> tuple[list[Passage], list[Passage]]:
    """A seeded sample of ``rows`` passages to store and ``held_out`` others to query with."""
    if rows + held_out > len(passages):
        raise SystemExit(f"only {len(passages):,} passages here; ask for fewer than "
                         f"{rows + held_out:,}")
    order = np.random.default_rng(seed).permutation(len(passages))
    return ([passages[i] for i in order[:rows]],
            [passages[i] for i in order[rows:rows + held_out]])


def embed_cached(passages: list[Passage], embedder: Any, *, quiet: bool = False) -> np.ndarray:
    """The local model's embeddings of the passages exactly as ingestion embeds them (title, a
    newline, the content), computed once and cached."""
    texts = [embed_text(p.record("x")) for p in passages]
    path = CACHE / f"vectors-{_key(embedder.model, texts)}.npy"
    if path.exists():
        return np.load(path)
    started = time.perf_counter()
    if not quiet:
        print(f"embedding {len(texts):,} passages with {embedder.model} (once; cached)", flush=True)
    parts = []
    step = 10_000
    for i in range(0, len(texts), step):
        parts.append(np.asarray(embedder.embed(texts[i:i + step]), dtype=np.float32))
        if not quiet:
            done = min(i + step, len(texts))
            print(f"  {done:,} / {len(texts):,} ({time.perf_counter() - started:.0f} s)",
                  flush=True)
    vectors = np.concatenate(parts)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors


def query_text(p: Passage, words: int = 8) -> str:
    """A short query from a held-out passage: its first sentence, cut to ``words`` words (the way
    someone types what they are looking for)."""
    sentence = re.split(r"(?<=[.!?])\s", p.text, maxsplit=1)[0]
    return " ".join(sentence.split()[:words]).rstrip(".,;:")


def describe(passages: list[Passage]) -> str:
    vocab: dict[str, int] = {}
    for p in passages:
        for w in set(re.findall(r"[a-z]+", p.text.lower())):
            vocab[w] = vocab.get(w, 0) + 1
    lengths = [len(p.text.split()) for p in passages]
    cats = len({p.category for p in passages})
    return (f"{len(passages):,} docstring paragraphs from {cats} packages; median "
            f"{int(np.median(lengths))} words; {len(vocab):,} distinct words, "
            f"{sum(1 for v in vocab.values() if v == 1):,} of them in one passage only")


if __name__ == "__main__":
    all_passages = harvest()
    print(describe(all_passages))
