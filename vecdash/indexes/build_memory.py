"""Whether an HNSW graph fits in maintenance_work_mem, said before the build starts.

pgvector builds the HNSW graph in memory until maintenance_work_mem is full, then goes on
inserting on disk page by page, which is many times slower ("hnsw graph no longer fits into
maintenance_work_mem after N tuples"). At a million rows that is the difference between minutes
and hours, so the Index Lab estimates the graph's size first.

The estimate per row: the vector as pgvector stores it (8 header bytes + 4 bytes a dimension, 2
for halfvec), 2 x m level-0 neighbour slots of 16 bytes, and about 200 bytes of element
bookkeeping. Fitted to pgvector 0.8's own NOTICE (the row count at which the graph stopped
fitting, 32 to 384 dimensions, m 8 to 32, tests/test_indexes.py checks it against a real build).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vecdash.collections import Collection
from vecdash.indexes.specs import check_memory, index_target

VECTOR_HEADER_BYTES = 8
NEIGHBOUR_SLOT_BYTES = 16  # one candidate: a pointer to the element and its distance
ELEMENT_OVERHEAD_BYTES = 200
_UNIT_KB = {"kB": 1, "MB": 1024, "GB": 1024 * 1024}


def memory_bytes(maintenance_work_mem: str) -> int:
    """'512MB' -> bytes (the value checked as check_memory does)."""
    value = check_memory(maintenance_work_mem)
    unit = value[-2:]
    return int(value[:-2]) * _UNIT_KB[unit] * 1024


def hnsw_row_bytes(dimension: int, m: int, *, bytes_per_dimension: int = 4) -> int:
    """Estimated bytes one row takes in pgvector's in-memory HNSW graph."""
    vector = VECTOR_HEADER_BYTES + bytes_per_dimension * dimension
    return vector + 2 * m * NEIGHBOUR_SLOT_BYTES + ELEMENT_OVERHEAD_BYTES


def _readable(n_bytes: float) -> str:
    if n_bytes >= 1024 ** 3:
        return f"{n_bytes / 1024 ** 3:.1f} GB"
    return f"{max(1, math.ceil(n_bytes / 1024 ** 2))} MB"


def _advised(n_bytes: float) -> str:
    """A maintenance_work_mem value with room above ``n_bytes`` (rounded up: 96MB, 3GB)."""
    need = n_bytes * 1.1
    if need > 1024 ** 3:
        return f"{math.ceil(need / 1024 ** 3)}GB"
    return f"{max(1, math.ceil(need / 1024 ** 2 / 32) * 32)}MB"


@dataclass(frozen=True)
class GraphMemory:
    """An HNSW build's memory, before it runs: the graph's estimated size against the memory
    the build will have; ``message`` says what happens and what to do when it does not fit."""

    graph_bytes: int
    memory_bytes: int
    rows_that_fit: int
    advised: str  # a maintenance_work_mem that holds the graph

    @property
    def fits(self) -> bool:
        return self.graph_bytes <= self.memory_bytes

    @property
    def message(self) -> str:
        if self.fits:
            return (f"The graph needs about {_readable(self.graph_bytes)}: it fits in "
                    f"maintenance_work_mem ({_readable(self.memory_bytes)}).")
        return (f"The HNSW graph needs about {_readable(self.graph_bytes)}, more than "
                f"maintenance_work_mem ({_readable(self.memory_bytes)}): pgvector builds it in "
                f"memory for the first ~{self.rows_that_fit:,} rows, then inserts the rest on "
                "disk, many times slower. Pick maintenance_work_mem of at least "
                f"{self.advised} (the server needs that much free memory), or a smaller m.")


def hnsw_graph_memory(collection: Collection, *, rows: int, m: int,
                      maintenance_work_mem: str) -> GraphMemory:
    """Whether an HNSW index with ``m`` on ``rows`` of the collection's vectors fits in
    ``maintenance_work_mem`` (halfvec vectors, stored or cast for the index, take half)."""
    target = index_target(collection)
    per_dim = 2 if target.halfvec_expression or collection.vector_type == "halfvec" else 4
    per_row = hnsw_row_bytes(collection.dimension, m, bytes_per_dimension=per_dim)
    memory = memory_bytes(maintenance_work_mem)
    graph = per_row * max(0, rows)
    return GraphMemory(graph, memory, memory // per_row, _advised(graph))
