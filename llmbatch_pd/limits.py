"""Request and token pacing that follows what the provider tells us.

Each limit is a GCRA pacer: a reservation moves a "theoretical arrival time" forward by
cost / rate, and the caller sleeps until its slot. Reservations are taken in call order, so
workers are served first come, first served, with no polling loop and O(1) work per send.

Limits come from the user (``rpm=``, ``tpm=``), from the provider's rate-limit headers, or,
when neither says anything, from 429s: each 429 halves the pace we had reached, and every
success earns a little back (additive increase, multiplicative decrease).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .types import RateLimitInfo

Clock = Callable[[], float]

# A pacer lets this many seconds' worth of sends go out at once. Providers enforce per-minute
# limits over much shorter windows (OpenAI: "60,000 RPM may be enforced as 1,000 per second"),
# so a small burst keeps us inside their bucket while losing nothing at steady state.
BURST_SECONDS = 0.1
# When we learn a limit from headers, aim this close to it.
LEARNED_SHARE = 0.98


class Pacer:
    """Spaces out units (requests or tokens) at ``rate`` per second."""

    def __init__(self, rate: float | None, clock: Clock, burst_seconds: float = BURST_SECONDS):
        self.rate = rate
        self.burst_seconds = burst_seconds
        self._clock = clock
        self._tat = clock()

    def reserve(self, cost: float = 1.0) -> float:
        """Take a slot for ``cost`` units; returns how many seconds to wait before sending."""
        if not self.rate:
            return 0.0
        now = self._clock()
        tat = max(self._tat, now)
        self._tat = tat + cost / self.rate
        return max(0.0, tat - self.burst_seconds - now)

    def hold_until(self, when: float) -> None:
        """Send nothing more before ``when`` (a server's Retry-After)."""
        self._tat = max(self._tat, when + self.burst_seconds)

    def __repr__(self) -> str:
        if not self.rate:
            return "Pacer(unlimited)"
        backlog = max(0.0, self._tat - self._clock())
        return f"Pacer(rate={self.rate:.2f}/s, backlog={backlog:.3f}s)"


class RateLimiter:
    """Paces requests and tokens, adapting to headers and 429s."""

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._clock = clock
        self.told_rpm, self.told_tpm = rpm, tpm
        self.requests = Pacer(rpm / 60.0 if rpm else None, clock)
        self.tokens = Pacer(tpm / 60.0 if tpm else None, clock, burst_seconds=1.0)
        self.learned_from: str | None = "you" if rpm or tpm else None

    def reserve(self, tokens: int) -> float:
        """Seconds to wait before sending a request expected to use ``tokens``."""
        wait = self.requests.reserve(1.0)
        if self.tokens.rate:
            wait = max(wait, self.tokens.reserve(float(tokens)))
        return wait

    def observe(self, info: RateLimitInfo | None) -> None:
        """Learn from a response's rate-limit headers: they are the authority."""
        if info is None:
            return
        now = self._clock()
        if info.limit_requests:
            rate = info.limit_requests / 60.0
            rate = min(rate, self.told_rpm / 60.0) if self.told_rpm else rate * LEARNED_SHARE
            self.requests.rate = rate
            if self.learned_from != "you":
                self.learned_from = "headers"
            if info.remaining_requests is not None and info.remaining_requests < 1:
                self.requests.hold_until(now + 1.0 / rate)
        if info.limit_tokens:
            rate = info.limit_tokens / 60.0
            rate = min(rate, self.told_tpm / 60.0) if self.told_tpm else rate * LEARNED_SHARE
            self.tokens.rate = rate
            if info.remaining_tokens is not None and info.remaining_tokens <= 0 and info.reset_tokens:
                self.tokens.hold_until(now + min(info.reset_tokens, 60.0))

    def on_rate_limited(self, retry_after: float | None, recent_rate: float | None) -> None:
        """A 429: pause until the server's hint, and slow down if we had no limit to follow."""
        now = self._clock()
        pause = retry_after if retry_after is not None else 1.0
        self.requests.hold_until(now + min(pause, 60.0))
        if self.learned_from in (None, "429s"):
            base = self.requests.rate or recent_rate or 1.0
            self.requests.rate = max(base * 0.5, 0.1)
            self.learned_from = "429s"

    def on_success(self) -> None:
        """Additive increase while the pace was only guessed from 429s."""
        if self.learned_from == "429s" and self.requests.rate:
            self.requests.rate += 0.02 + self.requests.rate * 0.002

    def __repr__(self) -> str:
        return f"RateLimiter(requests={self.requests!r}, tokens={self.tokens!r}, from={self.learned_from})"
