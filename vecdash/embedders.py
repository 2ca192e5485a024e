"""Embedding providers: the local offline model and OpenAI (or an OpenAI-compatible server).

Every embedder returns float32 numpy arrays of shape (n, dimension). The local model's vectors are
L2-normalised (cosine == inner product); OpenAI's text-embedding-3 vectors come normalised too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from vecdash.errors import EmbedderError

# The local model lives in vecdash.local_model; its names are importable from here as before.
from vecdash.local_model import (
    LOCAL_DIMENSION,
    LOCAL_MODEL,
    LocalEmbedder,
    encode_local,
    known_local_precision,
    load_local_model,
    local_precision,
    warm_up_local_model_in_background,
)

if TYPE_CHECKING:
    from vecdash.collections import Collection

__all__ = [
    "LOCAL_DIMENSION", "LOCAL_MODEL", "OPENAI_MAX_INPUTS", "OPENAI_MAX_TOKENS_PER_INPUT",
    "OPENAI_MAX_TOKENS_PER_REQUEST", "OPENAI_MODELS", "OPENAI_PRICES_PER_1M", "Embedder",
    "LocalEmbedder", "OpenAIEmbedder", "TokenCount", "count_text_tokens", "count_tokens",
    "embedder_for", "encode_local", "get_embedder", "known_local_precision", "load_local_model",
    "local_precision", "openai_tokenizer", "plan_requests", "truncate_to_tokens",
    "warm_up_local_model_in_background",
]

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


# Prices in US dollars per 1M input tokens, as published by OpenAI when this was written. Update
# here when they change; the Ingestion page shows the figure it assumes next to every estimate.
OPENAI_PRICES_PER_1M: dict[str, float] = {
    "text-embedding-3-small": 0.02,
    "text-embedding-3-large": 0.13,
    "text-embedding-ada-002": 0.10,
}
OPENAI_MAX_TOKENS_PER_REQUEST = 300_000  # summed over a request's inputs (API limit)
OPENAI_MAX_TOKENS_PER_INPUT = 8192  # per input (API limit); longer inputs are truncated
_ESTIMATE_CHARS_PER_TOKEN = 4  # OpenAI's rule of thumb, used only when the tokenizer is missing
_ENCODE_PIECE = 100_000  # characters encoded at a time (the tokenizer refuses huge single texts)


@dataclass(frozen=True)
class TokenCount:
    """Tokens in some texts for an OpenAI model. ``exact`` is False when the cl100k_base tokenizer
    (the bpe-openai package) is missing and the count is the 4-characters-per-token estimate."""

    tokens: int
    texts: int
    longest: int
    over_limit: int  # texts longer than OPENAI_MAX_TOKENS_PER_INPUT (they get truncated)
    exact: bool

    def cost(self, model: str) -> float | None:
        """Estimated US dollars for embedding these tokens with ``model`` (None: unknown price)."""
        price = OPENAI_PRICES_PER_1M.get(model)
        return None if price is None else self.tokens / 1_000_000 * price


_encoding_lock = threading.Lock()
_encoding: Any = None
_encoding_missing = False


def openai_tokenizer() -> Any:
    """The cl100k_base encoding (text-embedding-3 / ada-002) from the bpe-openai package, which
    ships its BPE table (tiktoken would download it at run time); None when it is not installed."""
    global _encoding, _encoding_missing
    with _encoding_lock:
        if _encoding is None and not _encoding_missing:
            try:
                import bpe_openai  # type: ignore[import-untyped]

                _encoding = bpe_openai.get_encoding("cl100k_base")
            except Exception:  # ImportError, or a broken install: fall back to the estimate
                _encoding_missing = True
        return _encoding


def _encode(encoding: Any, text: str) -> list[int]:
    tokens: list[int] = []
    for start in range(0, len(text), _ENCODE_PIECE):
        tokens.extend(encoding.encode_ordinary(text[start:start + _ENCODE_PIECE]))
    return tokens


def count_text_tokens(text: str) -> int:
    """Tokens in one text for OpenAI's embedding models (exact with bpe-openai, else estimated)."""
    encoding = openai_tokenizer()
    if encoding is None:
        return max(1, -(-len(text) // _ESTIMATE_CHARS_PER_TOKEN)) if text else 0
    return len(_encode(encoding, text))


def count_tokens(texts: Sequence[str]) -> TokenCount:
    """How many tokens these texts are for OpenAI's embedding models, before any request."""
    counts = [count_text_tokens(t) for t in texts]
    return TokenCount(
        tokens=sum(counts),
        texts=len(counts),
        longest=max(counts, default=0),
        over_limit=sum(1 for c in counts if c > OPENAI_MAX_TOKENS_PER_INPUT),
        exact=openai_tokenizer() is not None,
    )


def truncate_to_tokens(text: str, limit: int = OPENAI_MAX_TOKENS_PER_INPUT) -> tuple[str, int]:
    """The text cut to at most ``limit`` tokens, and its original token count."""
    encoding = openai_tokenizer()
    if encoding is None:
        n = count_text_tokens(text)
        # the estimate may undercount; keep a margin so the server does not refuse the input
        keep = int(limit * _ESTIMATE_CHARS_PER_TOKEN * 0.75)
        return (text if n <= limit else text[:keep]), n
    tokens = _encode(encoding, text)
    if len(tokens) <= limit:
        return text, len(tokens)
    keep = limit
    cut = str(encoding.decode(tokens[:keep]))
    while keep > 1 and len(_encode(encoding, cut)) > limit:  # re-encoding may merge differently
        keep -= 8
        cut = str(encoding.decode(tokens[:keep]))
    return cut, len(tokens)


def plan_requests(
    token_counts: Sequence[int],
    *,
    max_inputs: int = OPENAI_MAX_INPUTS,
    max_tokens: int = OPENAI_MAX_TOKENS_PER_REQUEST,
) -> list[range]:
    """Split inputs (given their token counts, in order) into consecutive requests that respect the
    API limits: at most ``max_inputs`` inputs and ``max_tokens`` tokens each."""
    plans: list[range] = []
    start, tokens = 0, 0
    for i, n in enumerate(token_counts):
        if i > start and (i - start >= max_inputs or tokens + n > max_tokens):
            plans.append(range(start, i))
            start, tokens = i, 0
        tokens += n
    if start < len(token_counts):
        plans.append(range(start, len(token_counts)))
    return plans


@dataclass
class OpenAIEmbedder:
    """OpenAI embeddings (text-embedding-3-small/-large, optional ``dimensions``), or any
    OpenAI-compatible server when ``base_url`` is given.

    Requests respect the API limits (``plan_requests``); an input over 8,192 tokens is truncated
    and a warning is kept in ``warnings``; 429, 5xx, timeouts and dropped connections are retried
    with exponential backoff (``backoff`` seconds, doubled per attempt, or the server's
    Retry-After), ``max_retries`` times."""

    model: str = "text-embedding-3-small"
    dimensions: int | None = None
    api_key: str = ""
    base_url: str = ""
    max_retries: int = 5
    timeout: float = 60.0
    backoff: float = 1.0
    max_backoff: float = 30.0
    provider: str = "openai"
    dimension: int = 0
    calls: int = 0
    requests: int = 0
    retries: int = 0
    tokens: int = 0
    warnings: list[str] = field(default_factory=list)
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
                max_retries=0,  # retries are ours (counted, with our backoff)
                timeout=self.timeout,
            )
        return self._client

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        prepared: list[str] = []
        counts: list[int] = []
        for text in texts:
            cut, n = truncate_to_tokens(text)
            if cut is not text:
                self.warnings.append(
                    f"The text starting {text[:40]!r} has {n:,} tokens; OpenAI embeds at most "
                    f"{OPENAI_MAX_TOKENS_PER_INPUT:,}, so it was truncated. Chunk long documents "
                    "(fixed size in tokens) to embed all of their text."
                )
                n = OPENAI_MAX_TOKENS_PER_INPUT
            prepared.append(cut)
            counts.append(n)
        out: list[np.ndarray] = []
        for plan in plan_requests(counts):
            batch = prepared[plan.start:plan.stop]
            arr = self._request(batch)
            if arr.shape[0] != len(batch):
                raise EmbedderError(
                    f"The embeddings server returned {arr.shape[0]} vectors for {len(batch)} inputs."
                )
            if self.dimension and arr.shape[1] != self.dimension:
                raise EmbedderError(
                    f"{self.model} returned {arr.shape[1]}-dimensional vectors, expected "
                    f"{self.dimension}. Check the model name and the dimensions setting (an "
                    "OpenAI-compatible server may ignore 'dimensions')."
                )
            out.append(arr)
            self.calls += len(batch)
            self.tokens += sum(counts[plan.start:plan.stop])
        if not out:
            return np.zeros((0, self.dimension), dtype=np.float32)
        result = np.vstack(out)
        self.dimension = int(result.shape[1])
        return result

    def _request(self, batch: list[str]) -> np.ndarray:
        import openai

        kwargs: dict[str, Any] = {"model": self.model, "input": batch}
        if self.dimensions is not None:
            kwargs["dimensions"] = self.dimensions
        where = self.base_url or "api.openai.com"
        attempt = 0
        while True:
            self.requests += 1
            try:
                response = self.client.embeddings.create(**kwargs)
                break
            except openai.AuthenticationError as exc:
                raise EmbedderError(
                    f"The embeddings server ({where}) rejected the API key (401). Check "
                    "OPENAI_API_KEY."
                ) from exc
            except openai.NotFoundError as exc:
                raise EmbedderError(
                    f"The embeddings server does not know the model {self.model!r} (404). Check "
                    "the model name (and OPENAI_BASE_URL for compatible servers)."
                ) from exc
            except openai.BadRequestError as exc:
                raise EmbedderError(f"The embeddings request was refused: {exc.message}") from exc
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError,
                    openai.APIStatusError) as exc:
                status = getattr(exc, "status_code", None)
                retryable = status is None or status == 429 or status >= 500
                if not retryable or attempt >= self.max_retries:
                    raise EmbedderError(self._give_up_message(exc, status, attempt, where)) from exc
                delay = min(self.max_backoff, self.backoff * 2**attempt)
                retry_after = _retry_after(exc)
                if retry_after is not None:
                    delay = min(self.max_backoff, max(delay, retry_after))
                attempt += 1
                self.retries += 1
                time.sleep(delay)
        data = sorted(response.data, key=lambda d: d.index)
        return np.asarray([d.embedding for d in data], dtype=np.float32)

    def _give_up_message(self, exc: Exception, status: int | None, attempts: int, where: str) -> str:
        tried = f" after {attempts} retries" if attempts else ""
        if status == 429:
            return (f"The embeddings server ({where}) kept answering 429 (rate limit or quota)"
                    f"{tried}. Wait and run the ingestion again: stored documents are skipped.")
        if status is None:
            return (f"Cannot reach the embeddings server ({where}){tried}: {exc}. Check the "
                    "network and OPENAI_BASE_URL.")
        return (f"The embeddings server ({where}) failed with HTTP {status}{tried}. Try again "
                "later: stored documents are skipped when you run it again.")

    def drain_warnings(self) -> list[str]:
        """The warnings collected since the last call (truncated inputs)."""
        out, self.warnings = self.warnings, []
        return out


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


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


def embedder_for(
    collection: Collection,
    *,
    local: Callable[[], Embedder] = LocalEmbedder,
    api_key: str = "",
    base_url: str = "",
) -> Embedder:
    """The embedder that produced the collection's vectors, ready to embed queries. ``local``
    makes the local model's embedder (the dashboard passes its process-wide cached one); an
    OpenAI collection stored at reduced dimensions asks the model for that many."""
    if collection.embedder == "local":
        return local()
    if collection.embedder == "openai":
        # Ask for fewer dimensions only when the collection stores fewer than the model's own
        # (an unknown model, e.g. on a compatible server, is asked for none).
        dims = collection.dimension
        native = OPENAI_MODELS.get(collection.model)
        return get_embedder(
            "openai",
            collection.model,
            dimensions=dims if native is not None and dims != native else None,
            api_key=api_key,
            base_url=base_url,
        )
    raise EmbedderError(
        f"{collection.name!r} holds vectors from an unknown model ({collection.embedder}/"
        f"{collection.model}), so text queries cannot be embedded for it."
    )
