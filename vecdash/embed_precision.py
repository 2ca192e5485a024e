"""How the local model runs: float32, or bfloat16 autocast where the CPU computes it natively
(AVX-512 BF16 / AMX), chosen by a short calibration that keeps the vectors.

The calibration encodes a fixed sample of demo passages with each candidate, times it (documents
per second, and one short query's latency) and compares its vectors with float32's. A candidate
whose vectors differ (mean cosine < MIN_MEAN_COSINE, or any text < MIN_TEXT_COSINE) is never
chosen. The choice is cached per machine and model in a small JSON file. No torch here: the caller
passes the function that encodes (vecdash.embedders), so the decision can be tested with timings
injected.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from vecdash.errors import EmbedderError

PRECISIONS = ("float32", "bfloat16")
CHOICES = ("auto", *PRECISIONS)  # VECDASH_EMBED_PRECISION
MIN_MEAN_COSINE = 0.9999
MIN_TEXT_COSINE = 0.999
# A candidate must beat float32 by this much: a smaller gain is within the timing noise of a
# shared machine, and float32 is the reference.
MIN_SPEEDUP = 1.1
SAMPLE_SIZE = 96  # demo passages timed per candidate (~2 s in float32 on 2 cores)
QUERY_TEXT = "how does an approximate nearest neighbour index trade recall for speed?"
QUERY_REPEATS = 7
# A call with this many texts (a search's query) runs in the query precision: the faster one for
# a short text, which is not always the faster one for batches (bf16's casts cost more than they
# save on one text). Only one, so the tail batch of a load is rarely embedded differently.
QUERY_BATCH = 1
CALIBRATION_VERSION = 1  # bump when the sample or the measurement changes: old caches are redone

Encode = Callable[[list[str], str], np.ndarray]  # (texts, precision) -> normalised float32 vectors


@dataclass(frozen=True)
class Measurement:
    """One candidate's calibration: speed (None: not measured, see ``note``) and its vectors'
    cosine with float32's over the sample."""

    precision: str
    docs_per_second: float | None
    query_ms: float | None
    mean_cosine: float = 1.0
    min_cosine: float = 1.0
    note: str = ""

    @property
    def keeps_vectors(self) -> bool:
        return self.mean_cosine >= MIN_MEAN_COSINE and self.min_cosine >= MIN_TEXT_COSINE


@dataclass(frozen=True)
class PrecisionChoice:
    """How the local model runs on this machine: ``precision`` for batches, ``query_precision``
    for a short query; ``source`` is calibrated, cached (an earlier calibration) or forced."""

    precision: str
    query_precision: str
    source: str
    machine: str = ""
    measurements: tuple[Measurement, ...] = field(default_factory=tuple)

    def measurement(self, precision: str) -> Measurement | None:
        return next((m for m in self.measurements if m.precision == precision), None)

    @property
    def speedup(self) -> float | None:
        """The chosen precision's docs/s over float32's (None when not measured)."""
        base, chosen = self.measurement("float32"), self.measurement(self.precision)
        if base is None or chosen is None or not base.docs_per_second:
            return None
        return (chosen.docs_per_second or 0.0) / base.docs_per_second

    def summary(self) -> str:
        """A short line: the precision used and, when calibrated, its speed and cosine."""
        text = self.precision if self.query_precision == self.precision else (
            f"{self.precision} for batches, {self.query_precision} for queries")
        if self.source == "forced":
            return text + " (forced by VECDASH_EMBED_PRECISION)"
        chosen, speedup = self.measurement(self.precision), self.speedup
        if self.precision != "float32" and chosen is not None and speedup is not None:
            text += (f", {speedup:.1f}x float32's speed with the same vectors (cosine with "
                     f"float32 mean {chosen.mean_cosine:.5f}, min {chosen.min_cosine:.5f})")
        return text + f" ({self.source} on this machine)"

    def describe(self) -> str:
        """One line for `vecdash info` (and the Ingest page's help): every candidate measured."""
        if self.source == "forced":
            return (f"{self.precision} (forced by VECDASH_EMBED_PRECISION; auto calibrates and "
                    "picks the fastest precision that keeps the vectors)")
        parts = [f"{self.precision} for batches"]
        if self.query_precision != self.precision:
            parts.append(f"{self.query_precision} for queries")
        figures = []
        for m in self.measurements:
            if m.docs_per_second is None:
                figures.append(f"{m.precision} not used ({m.note})")
                continue
            figure = f"{m.precision} {m.docs_per_second:.0f} docs/s, query {m.query_ms:.1f} ms"
            if m.precision != "float32":
                figure += f", cosine with float32 mean {m.mean_cosine:.5f} min {m.min_cosine:.5f}"
                if not m.keeps_vectors:
                    figure += " (changes the vectors: never used)"
            figures.append(figure)
        return (", ".join(parts) + f" ({self.source}: " + "; ".join(figures) + ")")


def cpu_has_fast_bf16(flags: str | None = None) -> bool:
    """True when the CPU computes bfloat16 natively (AVX-512 BF16 or AMX); elsewhere torch
    emulates it, slower than float32. ``flags``: /proc/cpuinfo's text (read when None)."""
    if flags is None:
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False  # not Linux: unknown, so float32 (the safe reference)
    words = set(flags.split())
    return bool(words & {"avx512_bf16", "amx_bf16"})


def machine_key(model: str) -> str:
    """What a cached choice is valid for: the model, the CPU, the cores and torch's version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        torch_version = version("torch")
    except Exception:  # PackageNotFoundError, or a broken install
        torch_version = "?"
    return f"{model} | {cpu} | {os.cpu_count()} cores | torch {torch_version}"


def choose(measurements: Sequence[Measurement]) -> tuple[str, str]:
    """(batch precision, query precision): the fastest measured candidate that keeps the vectors,
    float32 unless another beats it by MIN_SPEEDUP."""
    base = next((m for m in measurements if m.precision == "float32"), None)
    if base is None or base.docs_per_second is None or base.query_ms is None:
        return "float32", "float32"
    usable = [m for m in measurements if m.keeps_vectors and m.docs_per_second is not None
              and m.query_ms is not None and m.precision != "float32"]
    batch, query = base, base
    for m in usable:
        if (m.docs_per_second or 0.0) >= MIN_SPEEDUP * (batch.docs_per_second or 0.0):
            batch = m
        if (m.query_ms or 0.0) * MIN_SPEEDUP <= (query.query_ms or 0.0):
            query = m
    return batch.precision, query.precision


def sample_texts(n: int = SAMPLE_SIZE) -> list[str]:
    """The calibration's fixed sample: the first ``n`` demo passages, as they are embedded."""
    path = resources.files("vecdash.data") / "demo_docs.jsonl"
    docs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [f"{d['title']}\n{d['content']}" for d in docs[:n]]


def measure(encode: Encode, texts: list[str], *, fast_bf16: bool,
            clock: Callable[[], float] = time.perf_counter) -> list[Measurement]:
    """Each candidate timed on ``texts`` (best of two runs, after a warm-up) and on one short
    query (median), and its vectors compared with float32's."""
    out: list[Measurement] = []
    reference: np.ndarray | None = None
    for precision in PRECISIONS:
        if precision == "bfloat16" and not fast_bf16:
            out.append(Measurement(precision, None, None,
                                   note="this CPU has no AVX-512 BF16 or AMX, so bfloat16 is "
                                        "emulated and slower"))
            continue
        encode(texts[:8], precision)  # warm-up: first-call allocations, kernel selection
        seconds = []
        vectors: np.ndarray = np.zeros((0, 0), dtype=np.float32)
        for _ in range(2):
            start = clock()
            vectors = np.asarray(encode(texts, precision), dtype=np.float32)
            seconds.append(clock() - start)
        query_seconds = []
        for _ in range(QUERY_REPEATS):
            start = clock()
            encode([QUERY_TEXT], precision)
            query_seconds.append(clock() - start)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
        if reference is None:
            reference = vectors
        cosines = np.sum(reference * vectors, axis=1)
        out.append(Measurement(precision, len(texts) / max(min(seconds), 1e-9),
                               1000 * statistics.median(query_seconds),
                               float(cosines.mean()), float(cosines.min())))
    return out


def forced(setting: str) -> PrecisionChoice | None:
    """The choice VECDASH_EMBED_PRECISION forces (None for auto); an unknown value is refused."""
    value = (setting or "auto").strip().lower()
    if value not in CHOICES:
        raise EmbedderError(
            f"VECDASH_EMBED_PRECISION is {setting!r}; use one of {', '.join(CHOICES)} (auto "
            "measures which is fastest on this machine without changing the vectors)."
        )
    return None if value == "auto" else PrecisionChoice(value, value, "forced")


def calibrate(encode: Encode, *, model: str, cache_path: Path | None,
              fast_bf16: bool | None = None) -> PrecisionChoice:
    """The cached choice for this machine and model, else a new calibration (then cached)."""
    key = machine_key(model)
    cached = read_cache(cache_path, key)
    if cached is not None:
        return cached
    measurements = measure(encode, sample_texts(),
                           fast_bf16=cpu_has_fast_bf16() if fast_bf16 is None else fast_bf16)
    precision, query_precision = choose(measurements)
    choice = PrecisionChoice(precision, query_precision, "calibrated", key, tuple(measurements))
    write_cache(cache_path, choice)
    return choice


def read_cache(path: Path | None, key: str) -> PrecisionChoice | None:
    """The choice cached for ``key``, or None (no file, another machine, an older format)."""
    if path is None:
        return None
    try:
        entry = json.loads(path.read_text()).get(key)
        if not entry or entry.get("version") != CALIBRATION_VERSION:
            return None
        return PrecisionChoice(
            entry["precision"], entry["query_precision"], "cached", key,
            tuple(Measurement(**m) for m in entry["measurements"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # a missing or damaged cache only costs a new calibration


def write_cache(path: Path | None, choice: PrecisionChoice) -> None:
    if path is None:
        return
    try:
        entries = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(entries, dict):
            entries = {}
    except (OSError, ValueError):
        entries = {}
    entries[choice.machine] = {
        "version": CALIBRATION_VERSION,
        "precision": choice.precision,
        "query_precision": choice.query_precision,
        "measurements": [asdict(m) for m in choice.measurements],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        tmp.replace(path)  # atomic: a concurrent reader sees the old file or the new one
    except OSError:
        pass  # a read-only directory: the choice holds for this process only


def mixed_precisions_note(rows_by_precision: dict[str, int], choice: PrecisionChoice) -> str | None:
    """What to tell when a collection's vectors were embedded in more than one precision (None
    when they were not): they are compatible, with the cosine this machine measured."""
    used = {p: n for p, n in rows_by_precision.items() if n > 0}
    if len(used) < 2:
        return None
    parts = ", ".join(f"{n:,} in {p}" for p, n in sorted(used.items()))
    measured = next((m for m in choice.measurements if m.precision != "float32"
                     and m.docs_per_second is not None), None)
    cosine = (f"measured here: cosine with float32 mean {measured.mean_cosine:.5f}, min "
              f"{measured.min_cosine:.5f}" if measured is not None else
              f"a precision is only used when its cosine with float32 is >= {MIN_MEAN_COSINE} "
              f"on average and >= {MIN_TEXT_COSINE} for every text")
    return (f"This collection's vectors were embedded in more than one precision ({parts}). "
            f"They are compatible and can be searched together ({cosine}); nothing needs "
            "re-embedding.")
