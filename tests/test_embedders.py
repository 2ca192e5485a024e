from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.openai_server import FakeOpenAI
from vecdash.collections import Collection
from vecdash.embedders import LocalEmbedder, OpenAIEmbedder, embedder_for, get_embedder
from vecdash.errors import EmbedderError


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def test_local_model_is_offline_and_normalised(embedder: LocalEmbedder) -> None:
    vecs = embedder.embed(["a cat sat on the mat", "a kitten rested on the rug", "tax returns"])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]


def test_openai_without_key_says_what_to_do() -> None:
    with pytest.raises(EmbedderError, match="OPENAI_API_KEY"):
        get_embedder("openai", "text-embedding-3-small", api_key="")


def test_openai_dimensions_and_batches(fake_openai: FakeOpenAI) -> None:
    e = OpenAIEmbedder(model="text-embedding-3-large", dimensions=256, api_key="sk-test",
                       base_url=fake_openai.base_url)
    texts = [f"text {i}" for i in range(2050)]
    vecs = e.embed(texts)
    assert vecs.shape == (2050, 256) and e.dimension == 256
    assert [len(r["input"]) for r in fake_openai.requests] == [2048, 2]
    assert all(r["dimensions"] == 256 for r in fake_openai.requests)


def test_openai_retries_then_succeeds(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next = [429, 500]
    e = OpenAIEmbedder(api_key="sk-test", base_url=fake_openai.base_url)
    assert e.embed(["hello"]).shape == (1, 1536)
    assert len(fake_openai.requests) == 3


def test_openai_errors_are_clear(fake_openai: FakeOpenAI) -> None:
    bad_key = OpenAIEmbedder(api_key="sk-wrong", base_url=fake_openai.base_url)
    with pytest.raises(EmbedderError, match="401"):
        bad_key.embed(["x"])
    unknown = OpenAIEmbedder(model="no-such-model", api_key="sk-test", base_url=fake_openai.base_url)
    with pytest.raises(EmbedderError, match="does not know the model"):
        unknown.embed(["x"])
    with pytest.raises(EmbedderError, match="at most 1536"):
        OpenAIEmbedder(dimensions=4000, api_key="sk-test")
    with pytest.raises(EmbedderError, match="Unknown embedding provider"):
        get_embedder("cohere")


def openai_collection(model: str, dimension: int) -> Collection:
    return Collection(
        name="c", schema_name="public", table_name="c", id_column="id", content_column="content",
        title_column=None, category_column=None, metadata_column=None, created_at_column=None,
        external_id_column=None, hash_column=None, tsv_column=None, vector_column="embedding",
        vector_type="vector", dimension=dimension, metric="cosine", embedder="openai",
        model=model, text_config="english", managed=True, data_version=0)


@pytest.mark.parametrize(("model", "dimension", "asked"), [
    ("text-embedding-3-small", 1536, None),  # the model's own dimension: nothing to ask
    ("text-embedding-3-large", 3072, None),
    ("text-embedding-3-large", 1536, 1536),  # reduced, though 1536 is another model's native
    ("text-embedding-3-small", 512, 512),
    ("my-compatible-model", 1024, None),  # unknown model: its server decides
])
def test_embedder_for_asks_for_reduced_dimensions_against_the_models_own(
        model: str, dimension: int, asked: int | None) -> None:
    made = embedder_for(openai_collection(model, dimension), api_key="sk-test")
    assert isinstance(made, OpenAIEmbedder)
    assert made.dimensions == asked and made.model == model
    # an unknown model's dimension is learnt from its first answer
    assert made.dimension == (0 if model == "my-compatible-model" else dimension)
