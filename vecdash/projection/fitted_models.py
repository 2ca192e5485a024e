"""The in-process registry of fitted UMAP models, kept so that new points can be placed with
``UMAP.transform``; keyed by (collection, params key, data version), least recently used dropped."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

MODELS_KEPT = 4  # fitted UMAP models kept in memory per process (for transform)

_models_lock = threading.Lock()
_models: OrderedDict[tuple[str, str, str], Any] = OrderedDict()


def _model_get(key: tuple[str, str, str]) -> Any:
    with _models_lock:
        model = _models.get(key)
        if model is not None:
            _models.move_to_end(key)
        return model


def _model_put(key: tuple[str, str, str], model: Any) -> None:
    with _models_lock:
        _models[key] = model
        _models.move_to_end(key)
        while len(_models) > MODELS_KEPT:
            _models.popitem(last=False)
