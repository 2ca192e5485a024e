"""What a load reports: rows inserted, skipped and failed (with reasons), and where vectors came
from; progress callbacks receive it as batches commit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Failure:
    external_id: str
    reason: str


@dataclass
class IngestReport:
    inserted: int = 0
    skipped_duplicates: int = 0
    failed: list[Failure] = field(default_factory=list)
    processed: int = 0
    batches: int = 0
    embedded: int = 0  # texts sent to the model
    cached: int = 0  # texts whose vector came from the embedding cache
    warnings: list[str] = field(default_factory=list)

    @property
    def failed_count(self) -> int:
        return len(self.failed)


ProgressCallback = Callable[[IngestReport], None]
