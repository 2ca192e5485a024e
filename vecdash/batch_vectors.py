"""A batch's vectors on their way to COPY: records' own (precomputed) vectors checked, and rows
packed into pgvector's binary input format."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np


def given_vectors(vectors: list[Any], dimension: int) -> tuple[np.ndarray, list[str]]:
    """The records' own vectors as a new float32 matrix (zeros where missing or bad) and a
    problem per record ("" when fine or missing), checked for the whole batch at once when they
    are all float32 arrays of the right shape (the common case for precomputed vectors)."""
    n = len(vectors)
    if n and all(isinstance(v, np.ndarray) and v.shape == (dimension,) and v.dtype == np.float32
                 for v in vectors):
        matrix = np.stack(vectors)
        finite = np.isfinite(matrix).all(axis=1)
        if not finite.all():
            matrix[~finite] = 0
        return matrix, ["" if ok else "the vector contains NaN or infinite values" for ok in finite]
    matrix = np.zeros((n, dimension), dtype=np.float32)
    problems = [""] * n
    for i, vec in enumerate(vectors):
        if vec is None:
            continue
        arr, problem = check_vector(vec, dimension)
        if arr is None:
            problems[i] = problem
        else:
            matrix[i] = arr
    return matrix, problems


def check_vector(vec: Sequence[float] | np.ndarray, dimension: int) -> tuple[np.ndarray | None, str]:
    """One record's vector as float32, or None and why not (see given_vectors for batches): a
    flat list of numbers; nested lists, booleans and numbers written as text are refused."""
    if isinstance(vec, np.ndarray):
        if vec.ndim != 1 or vec.dtype.kind not in "iuf":
            return None, (f"the vector is a {vec.ndim}-dimensional array of {vec.dtype}, not a "
                          "flat list of numbers")
        items: Any = vec
    elif isinstance(vec, (list, tuple)):
        items = vec
        if not set(map(type, items)) <= _NUMBER_TYPES:  # the loop only when something is odd
            for x in items:
                if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
                    return None, (f"the vector holds {repr(x)[:40]} ({type(x).__name__}), not a "
                                  "number: a vector is a flat list of numbers")
    else:
        return None, f"the vector is a {type(vec).__name__}, not a list of numbers"
    try:
        arr = np.asarray(items, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        return None, "the vector is not a list of numbers"
    if arr.shape[0] != dimension:
        return None, (
            f"the vector has {arr.shape[0]} dimensions but the collection stores {dimension}"
        )
    if not np.all(np.isfinite(arr)):
        return None, "the vector contains NaN or infinite values"
    return arr, ""


_NUMBER_TYPES = {float, int}


def pack_vectors(matrix: np.ndarray, vector_type: str) -> list[bytes]:
    """Rows of ``matrix`` in pgvector's binary input format, packed for a whole batch at once:
    int16 dimension, int16 zero, then big-endian float32 (vector) or float16 (halfvec) values."""
    n, dim = matrix.shape
    value = np.dtype(">f4" if vector_type == "vector" else ">f2")
    packed = np.empty((n, 4 + dim * value.itemsize), dtype=np.uint8)
    packed[:, :4] = np.frombuffer(struct.pack(">HH", dim, 0), dtype=np.uint8)
    packed[:, 4:].view(value)[:] = matrix  # converted to big-endian in place, no copy between
    blob, width = packed.tobytes(), packed.shape[1]
    return [blob[i * width:(i + 1) * width] for i in range(n)]
