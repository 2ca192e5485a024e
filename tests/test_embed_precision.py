"""The local model's precision: the choice (timings injected), the cache, the real bf16 path's
vectors against float32's, and the precision recorded with stored vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vecdash import embed_precision as ep
from vecdash.collections import create_collection, drop_collection
from vecdash.embed_precision import Measurement, PrecisionChoice, choose
from vecdash.embedders import LocalEmbedder, encode_local
from vecdash.errors import EmbedderError
from vecdash.ingest import ingest_records
from vecdash.records import Record
from vecdash.vector_precisions import vector_precisions


class FakeModel:
    """An encode function with injected timings: each text costs ``seconds_per_text`` of a fake
    clock per precision; bfloat16's vectors are float32's plus ``noise``."""

    def __init__(self, seconds_per_text: dict[str, float], noise: float = 0.0,
                 one_text_noise: float = 0.0):
        self.now = 0.0
        self.seconds_per_text = seconds_per_text
        self.noise = noise
        self.one_text_noise = one_text_noise
        self.calls: list[str] = []

    def clock(self) -> float:
        return self.now

    def encode(self, texts: list[str], precision: str) -> np.ndarray:
        self.calls.append(precision)
        self.now += self.seconds_per_text[precision] * len(texts)
        rng = np.random.default_rng([len(t) for t in texts])
        vectors = rng.normal(size=(len(texts), 16)).astype(np.float32)
        if precision != "float32":
            vectors += self.noise * np.random.default_rng(7).normal(size=vectors.shape).astype(
                np.float32)
            vectors[0] += self.one_text_noise
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


TEXTS = [f"passage {i} " * (1 + i % 7) for i in range(32)]


def measured(model: FakeModel, *, fast_bf16: bool) -> list[Measurement]:
    return ep.measure(model.encode, TEXTS, fast_bf16=fast_bf16, clock=model.clock)


def test_without_fast_bf16_float32_is_chosen_and_bf16_never_run() -> None:
    model = FakeModel({"float32": 0.02, "bfloat16": 0.005})
    found = measured(model, fast_bf16=False)
    assert choose(found) == ("float32", "float32")
    assert "bfloat16" not in model.calls  # emulated bf16 is not even timed
    assert found[1].docs_per_second is None and "AVX-512 BF16" in found[1].note
    assert not ep.cpu_has_fast_bf16("fpu sse avx2 avx512f avx512_vnni")
    assert ep.cpu_has_fast_bf16("fpu avx512f avx512_bf16") and ep.cpu_has_fast_bf16("amx_bf16")


def test_emulated_bf16_measured_slower_picks_float32() -> None:
    found = measured(FakeModel({"float32": 0.02, "bfloat16": 0.05}), fast_bf16=True)
    assert found[0].docs_per_second == pytest.approx(50.0)
    assert found[1].docs_per_second == pytest.approx(20.0)
    assert choose(found) == ("float32", "float32")
    # a gain within the timing noise keeps the reference
    assert choose(measured(FakeModel({"float32": 0.02, "bfloat16": 0.019}), fast_bf16=True)) \
        == ("float32", "float32")


def test_fast_bf16_with_the_same_vectors_is_chosen() -> None:
    found = measured(FakeModel({"float32": 0.02, "bfloat16": 0.007}, noise=1e-4), fast_bf16=True)
    assert found[1].keeps_vectors and found[1].mean_cosine > 0.9999
    assert choose(found)[0] == "bfloat16"


@pytest.mark.parametrize(("noise", "one_text_noise"), [(0.02, 0.0), (1e-4, 0.3)])
def test_bf16_that_changes_the_vectors_is_never_chosen(noise: float,
                                                      one_text_noise: float) -> None:
    found = measured(FakeModel({"float32": 0.02, "bfloat16": 0.002}, noise, one_text_noise),
                     fast_bf16=True)
    bf16 = found[1]
    assert bf16.mean_cosine < ep.MIN_MEAN_COSINE or bf16.min_cosine < ep.MIN_TEXT_COSINE
    assert choose(found) == ("float32", "float32")  # 10x faster, still refused


def test_boundaries_of_the_vector_check() -> None:
    def bf16(mean: float, low: float) -> list[Measurement]:
        return [Measurement("float32", 50.0, 8.0), Measurement("bfloat16", 150.0, 5.0, mean, low)]

    assert choose(bf16(0.9999, 0.999)) == ("bfloat16", "bfloat16")
    assert choose(bf16(0.99989, 0.9995)) == ("float32", "float32")
    assert choose(bf16(0.99995, 0.9989)) == ("float32", "float32")
    # faster for batches, slower for one short query: each path gets its own precision
    slow_query = [Measurement("float32", 50.0, 8.0),
                  Measurement("bfloat16", 150.0, 12.0, 0.99999, 0.99997)]
    assert choose(slow_query) == ("bfloat16", "float32")


def test_calibration_is_cached_per_machine_and_model(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    model = FakeModel({"float32": 0.02, "bfloat16": 0.007}, noise=1e-4)
    cache = tmp_path / "embed_precision.json"
    real_measure = ep.measure

    def measure_on_fake_clock(encode: Any, texts: list[str], *, fast_bf16: bool) -> Any:
        return real_measure(encode, texts, fast_bf16=fast_bf16, clock=model.clock)

    monkeypatch.setattr(ep, "measure", measure_on_fake_clock)
    first = ep.calibrate(model.encode, model="m1", cache_path=cache, fast_bf16=True)
    calls = len(model.calls)
    again = ep.calibrate(model.encode, model="m1", cache_path=cache, fast_bf16=True)
    other = ep.calibrate(model.encode, model="m2", cache_path=cache, fast_bf16=False)
    assert (first.source, first.precision) == ("calibrated", "bfloat16")
    assert (again.source, again.precision, again.measurements) == (
        "cached", "bfloat16", first.measurements)
    assert other.precision == "float32" and len(model.calls) > calls  # another model: measured
    assert "bfloat16" in first.summary() and "x float32's speed" in first.summary()


def test_forced_precision_and_a_bad_setting() -> None:
    forced = ep.forced("BFloat16")
    assert forced is not None and (forced.precision, forced.source) == ("bfloat16", "forced")
    assert ep.forced("auto") is None
    with pytest.raises(EmbedderError, match="auto, float32, bfloat16"):
        ep.forced("int8")


def test_mixed_precisions_note() -> None:
    choice = PrecisionChoice("bfloat16", "float32", "cached", measurements=(
        Measurement("float32", 50.0, 8.0), Measurement("bfloat16", 150.0, 12.0, 0.99999, 0.99997)))
    assert ep.mixed_precisions_note({"bfloat16": 10}, choice) is None
    note = ep.mixed_precisions_note({"float32": 300, "bfloat16": 65}, choice)
    assert note is not None and "65 in bfloat16" in note and "300 in float32" in note
    assert "compatible" in note and "0.99999" in note


def test_chosen_path_keeps_the_float32_vectors(embedder: LocalEmbedder) -> None:
    texts = ep.sample_texts(24)
    reference = encode_local(texts, "float32")
    for vectors in (encode_local(texts, "bfloat16"), embedder.embed(texts)):
        assert vectors.dtype == np.float32 and vectors.shape == (24, 384)
        cosines = np.sum(reference * vectors, axis=1)
        assert cosines.mean() >= ep.MIN_MEAN_COSINE and cosines.min() >= ep.MIN_TEXT_COSINE
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    choice = embedder.precision_choice
    assert choice.precision in ep.PRECISIONS and choice.source in ("calibrated", "cached")
    query = embedder.calls_by_precision.get(choice.query_precision, 0)
    embedder.embed(["one short query"])
    assert embedder.calls_by_precision[choice.query_precision] == query + 1


def test_precision_recorded_with_the_stored_vectors(conn: Any, unique_name: str,
                                                    embedder: LocalEmbedder) -> None:
    c = create_collection(conn, unique_name, dimension=384)
    try:
        first = [Record(f"Tide pool note {i}: anemones and crabs.", external_id=f"a{i}")
                 for i in range(12)]
        ingest_records(conn, c, first, embedder=embedder, batch_size=5)
        chosen = embedder.precision_choice.precision
        assert vector_precisions(conn, c) == {chosen: 12}
        ingest_records(conn, c, first, embedder=embedder, batch_size=5)  # all stored: no change
        assert vector_precisions(conn, c) == {chosen: 12}
        other = "float32" if chosen == "bfloat16" else "bfloat16"
        forced = LocalEmbedder(precision=other)
        more = [Record(f"Kelp forest note {i}: otters and urchins.") for i in range(7)]
        ingest_records(conn, c, more, embedder=forced, batch_size=5)
        assert vector_precisions(conn, c) == {chosen: 12, other: 7}
        drop_collection(conn, unique_name)
        c = create_collection(conn, unique_name, dimension=384)  # a new table starts from nothing
        assert vector_precisions(conn, c) == {}
    finally:
        drop_collection(conn, unique_name)


def test_ingest_page_shows_the_precision_and_a_mixed_collection(
        conn: Any, unique_name: str, embedder: LocalEmbedder, open_page: Any) -> None:
    c = create_collection(conn, unique_name, dimension=384)
    try:
        for precision in ep.PRECISIONS:
            records = [Record(f"Note {i} on {precision} tide pools.") for i in range(3)]
            ingest_records(conn, c, records, embedder=LocalEmbedder(precision=precision))
        at = open_page("app_pages/ingest.py", collection=unique_name)
        captions = " ".join(x.value for x in at.caption)
        assert f"Local model: {embedder.precision_choice.precision}" in captions
        infos = " ".join(x.value for x in at.info)
        assert "3 in bfloat16, 3 in float32" in infos and "compatible" in infos
    finally:
        drop_collection(conn, unique_name)
