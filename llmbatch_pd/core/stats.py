"""Live counters of a run, read by progress displays without any callback on the hot path.

Kept apart from the engine so that reading them never imports the HTTP stack.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from time import monotonic

from . import errors

RECENT_ERRORS = 5
RATE_SECONDS = 600  # 1-second buckets kept for the rate series (older ones are dropped)
RECENT_COSTS = 20  # answered requests whose cost is "the current cost per request"


class _Kinds(Counter):
    """Failed attempts by kind; a 429 also marks its second in the rate series."""

    def __init__(self, *args, on_429=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.on_429 = on_429

    def __setitem__(self, key, value) -> None:
        if key == "429" and self.on_429 is not None and value > self.get(key, 0):
            self.on_429()
        super().__setitem__(key, value)


class RateSeries:
    """Answered rows per 1-second bucket and whether the second saw a 429: a bounded deque
    of [second, rows, had_429] (``RATE_SECONDS`` buckets at most), written from the run's
    loop, read by displays."""

    def __init__(self, keep: int = RATE_SECONDS) -> None:
        self.buckets: deque[list] = deque(maxlen=keep)

    def _bucket(self, second: int) -> list:
        if not self.buckets or self.buckets[-1][0] != second:
            self.buckets.append([second, 0, False])
        return self.buckets[-1]

    def add(self, second: int, rows: int = 0, had_429: bool = False) -> None:
        if self.buckets and second < self.buckets[-1][0]:
            second = self.buckets[-1][0]  # a clock read late: it counts in the newest second
        bucket = self._bucket(second)
        bucket[1] += rows
        bucket[2] = bucket[2] or had_429

    def series(self, now_second: int, window_s: int) -> list[tuple[int, float, bool]]:
        """(second since the start, rows in that second, 429 seen) for every second of the
        last ``window_s`` up to ``now_second`` (excluded: it is not over), gaps as 0."""
        start = max(0, now_second - window_s)
        seen = {b[0]: b for b in list(self.buckets) if start <= b[0] < now_second}
        return [(t, float(seen[t][1]) if t in seen else 0.0, bool(seen[t][2]) if t in seen else False)
                for t in range(start, now_second)]


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
    by_kind: Counter = field(default_factory=_Kinds)
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
    rates: RateSeries = field(default_factory=RateSeries, repr=False, compare=False)
    # dollars of each of the last RECENT_COSTS answered requests (answers can grow mid-run)
    recent_costs: deque = field(default_factory=lambda: deque(maxlen=RECENT_COSTS), repr=False,
                                compare=False)
    _cost_seen: float = field(default=0.0, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.by_kind, _Kinds):
            self.by_kind.on_429 = self._note_429

    def _second(self) -> int:
        return int(monotonic() - self.started) if self.started is not None else 0

    def note_answered(self, rows: int) -> None:
        """``rows`` rows got their answer now (for the rate series)."""
        self.rates.add(self._second(), rows)

    def note_cost(self) -> None:
        """An answered request was just settled: what ``cost`` grew by since the last one is
        its cost (a re-asked invalid answer included) for ``recent_costs``."""
        self.recent_costs.append(self.cost - self._cost_seen)
        self._cost_seen = self.cost

    @property
    def recent_cost(self) -> float | None:
        """Mean dollars of the last answered requests (up to ``RECENT_COSTS``), or None."""
        costs = list(self.recent_costs)
        return sum(costs) / len(costs) if costs else None

    def _note_429(self) -> None:
        self.rates.add(self._second(), 0, True)

    def rate_series(self, window_s: int = 60) -> list[tuple[int, float, bool]]:
        """The last ``window_s`` seconds of the run as (seconds since it started, answered
        rows per second, a 429 seen in that second), one per whole second: for a sparkline.
        While the run goes the current second is left out (it is not over); at the end the
        last, partial second counts."""
        if self.started is None:
            return []
        now = self.elapsed
        end = int(now) + (1 if self.finished is not None and now > int(now) else 0)
        return self.rates.series(end, window_s)

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
