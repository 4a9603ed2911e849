"""The retry policy: how long to wait before trying a failed request again."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class RetryPolicy:
    """When to try a failed request again, and how long to wait first (README "What happens
    on failure" documents these bounds).

    Retry ``n`` (0, 1, ...) waits between 75 % and 100 % of ``min(base * 2**n, cap)`` seconds.
    A server's Retry-After is honoured in full: never less, at most 0.25 s more (spread, so
    the retries do not all land at once). A row waits at most ``max_wait`` seconds in all: a
    wait that would take it past that (``Retry-After: 86400``) fails the row at once, saying
    so, instead of sending early into a certain refusal or holding the run for a day.
    """

    max_retries: int = 6
    base: float = 0.5
    cap: float = 8.0
    max_wait: float = 300.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after + self.rng.random() * min(0.25, 0.1 + retry_after * 0.1)
        return min(self.base * 2**attempt, self.cap) * (1 - 0.25 * self.rng.random())
