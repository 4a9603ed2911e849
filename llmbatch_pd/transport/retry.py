"""The retry rules: whether a failed request is tried again, and how long to wait first.

One set of rules for every request sent (``transport.http``): a real-time row in the engine,
a batch job's upload, creation, poll or cancel.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic

from ..core import errors
from ..core.defaults import MAX_RETRIES


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

    max_retries: int = MAX_RETRIES
    base: float = 0.5
    cap: float = 8.0
    max_wait: float = 300.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after + self.rng.random() * min(0.25, 0.1 + retry_after * 0.1)
        return min(self.base * 2**attempt, self.cap) * (1 - 0.25 * self.rng.random())


def may_have_taken_effect(exc: errors.ProviderError) -> bool:
    """A failure after which the request may have reached the server and done its work (a
    timeout, a dropped connection, an unreadable answer), unlike a clear refusal (429, 5xx)."""
    return isinstance(exc, (errors.RequestTimeout, errors.TransportError, errors.MalformedResponse))


class Tries:
    """One request's failures so far, and the rules for sending it again.

    Retryable failures are tried again up to ``max_retries`` times; a 429 is the limit's
    doing, not the request's, so it does not use them up: the wait alone bounds it
    (``max_wait`` from the first failure). ``resend=False`` (a request that must not take
    effect twice, such as creating a batch job) is sent again only after a clear refusal.
    """

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self.attempt = 0  # the backoff's step
        self.retries = 0  # what counts against max_retries
        self.first_failed: float | None = None
        self.note: str | None = None  # why the last failure is not tried again, if it is the wait

    def wait(self, exc: errors.ProviderError, *, resend: bool = True) -> float | None:
        """Seconds to wait before sending again after ``exc``, or None: give up."""
        self.note = None
        limited = isinstance(exc, errors.RateLimitError)
        if not exc.retryable or (not resend and may_have_taken_effect(exc)):
            return None
        if self.retries >= self.policy.max_retries and not limited:
            return None
        now = self.clock()
        self.first_failed = now if self.first_failed is None else self.first_failed
        delay = self.policy.delay(self.attempt, exc.retry_after)
        if now - self.first_failed + delay > self.policy.max_wait:
            self.note = (
                f"not retried: the server asked to wait {exc.retry_after:g} s "
                f"(Retry-After), and a row waits at most {self.policy.max_wait:g} s"
            ) if exc.retry_after is not None else (
                f"not retried: waits would pass {self.policy.max_wait:g} s")
            return None
        self.attempt += 1
        self.retries += not limited
        return delay
