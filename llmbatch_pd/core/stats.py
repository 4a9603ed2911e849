"""Live counters of a run, read by progress displays without any callback on the hot path.

Kept apart from the engine so that reading them never imports the HTTP stack.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from time import monotonic

from . import errors

RECENT_ERRORS = 5


@dataclass
class EngineStats:
    """Live counters, read by progress displays without any callback on the hot path."""

    total: int = 0
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    retrying: int = 0
    sent: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    by_kind: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    latency_total: float = 0.0  # seconds spent waiting for successful answers
    started: float | None = None
    finished: float | None = None
    stop_reason: str | None = None
    # mode="batch": the provider's job status (several jobs: "completed 1, in_progress 2") and
    # their request counts summed (keys: types.BATCH_COUNTS); None and empty in real time.
    batch_status: str | None = None
    batch_counts: dict[str, int] = field(default_factory=dict)
    batch_ids: list[str] = field(default_factory=list)

    @property
    def finished_count(self) -> int:
        return self.done + self.failed

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or monotonic()) - self.started

    def note_error(self, exc: errors.ProviderError) -> None:
        self.errors[str(exc)[:200]] += 1
        if len(self.errors) > 50:  # keep the most common; a run of unique errors stays small
            self.errors = Counter(dict(self.errors.most_common(RECENT_ERRORS * 2)))
