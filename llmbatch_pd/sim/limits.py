"""The simulated provider's rate limiter: one refilling bucket per limit, like OpenAI.

OpenAI states its per-minute limits "may be enforced over shorter periods": 60,000 RPM may
act as 1,000 requests per second. So each bucket holds ``limit * burst_seconds / 60`` and
refills continuously at ``limit / 60`` per second. Time is always passed in (``now``,
from ``loop.time()``), so tests can drive the clock without sleeping.

Gateways count differently: LiteLLM's proxy (``rpm:`` on a model) counts requests per calendar
minute, a counter reset at each boundary. ``FixedWindow`` does that for any window length, its
boundaries aligned to the wall clock (every process in the world agrees where a minute starts).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


class Bucket:
    """A continuously refilling bucket that may go into debt.

    A request asking for more than the bucket can ever hold (a 4,000-token request
    against a 1,666-token second's worth) is let through when the bucket is full and
    leaves it negative; otherwise it could never pass, although the provider serves it.
    """

    def __init__(self, limit: int, burst_seconds: float, now: float) -> None:
        self.limit = limit
        self.capacity = limit * burst_seconds / 60.0
        self.rate = limit / 60.0
        self.level = self.capacity
        self._last = now

    def _refill(self, now: float) -> None:
        if now > self._last:
            self.level = min(self.capacity, self.level + (now - self._last) * self.rate)
            self._last = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` may be taken (0.0 if it may be taken now)."""
        self._refill(now)
        need = min(amount, self.capacity) - self.level
        if need <= 1e-9:
            return 0.0
        return math.inf if self.rate == 0 else need / self.rate

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= amount

    def remaining(self, now: float) -> int:
        self._refill(now)
        return max(0, math.floor(self.level + 1e-9))

    def reset_after(self, now: float) -> float:
        """Seconds until the bucket is full again."""
        self._refill(now)
        if self.level >= self.capacity:
            return 0.0
        return math.inf if self.rate == 0 else (self.capacity - self.level) / self.rate

    def __repr__(self) -> str:
        return f"Bucket(limit={self.limit}, level={self.level:.1f}/{self.capacity:.1f})"


class FixedWindow:
    """``limit`` per minute, counted per calendar window of ``window_s`` seconds: each window
    allows ``limit * window_s / 60``, and the count starts again at the next boundary."""

    def __init__(self, limit: int, window_s: float, now: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.capacity = limit * window_s / 60.0
        self._wall = time.time() - now  # ``now`` is monotonic; windows follow the wall clock
        self._index: int | None = None
        self.used = 0.0

    def _roll(self, now: float) -> None:
        index = math.floor((now + self._wall) / self.window_s)
        if index != self._index:
            self._index, self.used = index, 0.0

    def _to_boundary(self, now: float) -> float:
        return (self._index + 1) * self.window_s - (now + self._wall)

    def wait_for(self, amount: float, now: float) -> float:
        self._roll(now)
        if self.used + min(amount, self.capacity) <= self.capacity + 1e-9:
            return 0.0
        return max(self._to_boundary(now), 1e-3)

    def take(self, amount: float, now: float) -> None:
        self._roll(now)
        self.used += amount

    def remaining(self, now: float) -> int:
        self._roll(now)
        return max(0, math.floor(self.capacity - self.used + 1e-9))

    def reset_after(self, now: float) -> float:
        self._roll(now)
        return self._to_boundary(now) if self.used else 0.0

    def __repr__(self) -> str:
        return f"FixedWindow(limit={self.limit}, used={self.used:.0f}/{self.capacity:.0f})"


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused: which limit, a message, and when to retry."""

    kind: str  # "requests" or "tokens"
    message: str
    retry_after: float


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets; a limit of None is unlimited."""

    def __init__(self, rpm: int | None, tpm: int | None, burst_seconds: float, now: float,
                 window_s: float = 0.0) -> None:
        def limit(n: int | None) -> Bucket | FixedWindow | None:
            if n is None:
                return None
            return FixedWindow(n, window_s, now) if window_s > 0 else Bucket(n, burst_seconds, now)

        self.requests = limit(rpm)
        self.tokens = limit(tpm)

    def acquire(self, tokens: int, now: float, model: str = "the model") -> Refusal | None:
        """Take one request and ``tokens`` tokens, or take nothing and say why not."""
        if self.tokens is not None and tokens > self.tokens.limit:
            return Refusal(
                "tokens",
                f"Request too large for {model} on tokens per min (TPM): "
                f"Limit {self.tokens.limit}, Requested {tokens}. "
                "The input or output tokens must be reduced in order to run successfully.",
                math.inf,
            )
        for kind, bucket, amount in (
            ("requests", self.requests, 1),
            ("tokens", self.tokens, tokens),
        ):
            if bucket is None:
                continue
            wait = bucket.wait_for(amount, now)
            if wait > 0:
                unit = "RPM" if kind == "requests" else "TPM"
                return Refusal(
                    kind,
                    f"Rate limit reached for {kind} for {model} on {kind} per min ({unit}): "
                    f"Limit {bucket.limit}, Remaining {bucket.remaining(now)}, "
                    f"Requested {amount}. Please try again in {format_duration(wait)}.",
                    wait,
                )
        if self.requests is not None:
            self.requests.take(1, now)
        if self.tokens is not None:
            self.tokens.take(tokens, now)
        return None

    def headers(self, now: float) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers; a limit that is None sends none."""
        out: dict[str, str] = {}
        for kind, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is not None:
                out[f"x-ratelimit-limit-{kind}"] = str(bucket.limit)
                out[f"x-ratelimit-remaining-{kind}"] = str(bucket.remaining(now))
                out[f"x-ratelimit-reset-{kind}"] = format_duration(bucket.reset_after(now))
        return out

    def __repr__(self) -> str:
        return f"RateLimiter(requests={self.requests!r}, tokens={self.tokens!r})"


def format_duration(seconds: float) -> str:
    """A duration the way OpenAI writes it: "12ms", "1s", "17.28s", "6m0s", "1h2m3s"."""
    if seconds <= 0:
        return "0s"
    if math.isinf(seconds):
        return "24h0m0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000 - 1e-9)}ms"
    hours, rest = divmod(round(seconds, 3), 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text
