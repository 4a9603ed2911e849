"""One run's shared state on the scheduler: the pacer, the breaker, the dollar account, the stop.

``coordinator.Coordinator`` (the scheduler plugin) keeps one ``RunState`` per open run and
answers the workers' calls from it. The pace and the breaker are the single-process classes
(``transport.limits.RateLimiter``, ``transport.breaker.CircuitBreaker``), fed with every
worker's events; the account is ``core.budget.Ledger``'s rule (spent + uncertain + reserved
within the limit) where "reserved" is what partitions hold as leases.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..core import errors
from ..core.numbers import money
from ..core.types import RateLimitInfo
from ..transport.breaker import CircuitBreaker
from ..transport.limits import BURST_SECONDS, RateLimiter

MAX_SLOTS = 64  # pace slots handed out per round trip


@dataclass
class RunLimits:
    """What one run shares across the cluster (picklable)."""

    run_id: str
    rpm: float | None = None
    tpm: float | None = None
    budget: float | None = None  # dollars; None = unlimited
    worst_cost: float = 0.0  # dollars to reserve per request before its answer is known
    warn_at: float = 0.8  # share of the budget committed that earns one warning
    breaker_threshold: int = 25  # the shared CircuitBreaker's settings (its defaults)
    breaker_cooldown: float = 2.0
    breaker_probes: int = 4


def error_state(exc: errors.ProviderError) -> list:
    """A stop reason as plain data for the wire: [class name, message, status, kind]."""
    return [type(exc).__name__, exc.message, exc.status, exc.kind]


def rebuild_error(state: list | None) -> errors.ProviderError | None:
    """The stop reason ``error_state`` wrote, as the same error class again."""
    if not state:
        return None
    name, message, status, kind = state
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.ProviderError)):
        cls = errors.ProviderError
    err = cls.__new__(cls)
    errors.ProviderError.__init__(err, message, status=status, kind=kind)
    return err



@dataclass
class Holder:
    """One partition's leases and its last reported engine figures."""

    worker: str
    held: float = 0.0  # dollars leased and neither reported spent nor given back
    stats: dict[str, float] = field(default_factory=dict)
    alive: bool = True
    open: bool = True  # False once its partition gave its leases back


class RunState:
    """One run's shared state on the scheduler."""

    def __init__(self, limits: RunLimits) -> None:
        self.limits = limits
        self.limiter = RateLimiter(limits.rpm, limits.tpm)
        self.breaker = CircuitBreaker(limits.breaker_threshold, limits.breaker_cooldown,
                                      limits.breaker_probes)
        self.spent = 0.0
        self.uncertain = 0.0
        self.holders: dict[str, Holder] = {}
        self.given_back: list[float] = []  # heap of unused slots' times (scheduler clock)
        self.generation = self.limiter.generation
        self.stop: list | None = None
        self.warned = False
        self.answers: dict[str, dict] = {}
        self.untaken: deque[str] = deque()
        self.rate_points: deque[tuple[float, int]] = deque()
        self.calls = 0
        self.call_s = 0.0
        self.opened = time.monotonic()

    # money -----------------------------------------------------------------------------------

    @property
    def reserved(self) -> float:
        return sum(h.held for h in self.holders.values())

    @property
    def committed(self) -> float:
        return self.spent + self.uncertain + self.reserved

    def grant(self, holder: Holder, want: float, need: float) -> tuple[float, str]:
        """Dollars for ``holder`` (asking ``want``, needing at least ``need`` for its next
        request) and the budget's state: "ok", "wait" (others hold what may come back) or
        "exhausted" (nothing that could come back would make room: the run stops)."""
        limit = self.limits.budget
        if limit is None:
            return want, "ok"
        room = limit - self.committed
        need = max(need, 0.0)
        live = sum(1 for h in self.holders.values() if h.alive and h.open)
        if want > 0 and room >= want * 2 * max(live, 1):
            granted = want  # plenty left: a lease of several requests
        elif need > 0 and room + 1e-12 >= need:
            granted = need  # little left: one request at a time, so nobody hoards the rest
        else:
            granted = 0.0
        holder.held += granted
        if need > 0 and granted < need and limit - self.spent - self.uncertain + 1e-12 < need:
            self.halt(errors.BudgetReached(
                f"budget reached: {money(self.committed)} committed of {money(limit)}; "
                f"the next request could cost up to {money(need)}"))
            return granted, "exhausted"
        return granted, "wait" if need > 0 and granted < need else "ok"

    def warning(self) -> str | None:
        limit = self.limits.budget
        if limit and not self.warned and self.spent + self.uncertain >= self.limits.warn_at * limit:
            self.warned = True
            return (f"{self.limits.warn_at:.0%} of the budget is committed ({money(self.spent)} "
                    f"of {money(limit)})")
        return None

    # pace ------------------------------------------------------------------------------------

    def slots(self, n: int, tokens_each: float) -> list[float]:
        """``n`` slots as seconds from now: unused ones given back first, then new ones."""
        if self.limiter.generation != self.generation:  # the pace was reset: old slots are void
            self.generation = self.limiter.generation
            self.given_back.clear()
        now = time.monotonic()
        out: list[float] = []
        while self.given_back and len(out) < n:
            at = heapq.heappop(self.given_back)
            if at >= now - BURST_SECONDS:
                out.append(max(0.0, at - now))
        while len(out) < n:
            out.append(self.limiter.reserve(max(int(tokens_each), 0)))
        return out

    def give_back(self, waits: list[float], generation: int) -> None:
        if generation == self.limiter.generation:
            now = time.monotonic()
            for wait in waits:
                heapq.heappush(self.given_back, now + wait)

    def hear(self, events: list, info: dict | None, token_debt: float) -> None:
        """A partition's events, in the order they happened there."""
        limiter, breaker = self.limiter, self.breaker
        if info:
            limiter.observe(RateLimitInfo(**info))
        for code, arg, count in events:
            for _ in range(count):
                if code == "ls":
                    limiter.on_success()
                elif code == "lr":
                    limiter.on_rate_limited(arg)
                elif code == "bs":
                    breaker.on_success()
                elif code == "bf" and breaker.on_failure(bool(arg)) and self.stop is None:
                    self.halt(errors.ProviderDown(
                        f"the provider is failing: {breaker.consecutive} failures in a row "
                        f"and {breaker.failed_probes} failed probes, across the cluster"))
        if token_debt > 0 and limiter.tokens.rate:
            limiter.tokens.reserve(token_debt)  # requests used more tokens than their slots held

    def halt(self, exc: errors.ProviderError) -> None:
        """The run-wide stop: the first reason wins; every breaker waiter is let through."""
        if self.stop is None:
            self.stop = error_state(exc)
            self.breaker.release()

    # figures ---------------------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        total: dict[str, float] = {}
        for h in self.holders.values():
            for k, v in h.stats.items():
                total[k] = total.get(k, 0) + (v if h.alive or k != "in_flight" else 0)
        now = time.monotonic()
        answered = int(total.get("done", 0))
        points = self.rate_points
        if not points or now - points[-1][0] >= 0.25:
            points.append((now, answered))
        while len(points) > 2 and now - points[1][0] > 5.0:
            points.popleft()
        t0, a0 = points[0]
        rows_per_s = (answered - a0) / (now - t0) if now - t0 > 0.2 else 0.0
        limiter = self.limiter
        return {
            "answered": answered, "failed": int(total.get("failed", 0)),
            "sent": int(total.get("sent", 0)), "rate_limited": int(total.get("rate_limited", 0)),
            "spent": self.spent, "reserved": self.reserved, "uncertain": self.uncertain,
            "in_flight": int(total.get("in_flight", 0)),
            "stopped": str(rebuild_error(self.stop)) if self.stop else None,
            "stop_error": self.stop, "rows_per_s": rows_per_s,
            "answers_reported": len(self.answers), "answers_waiting": len(self.untaken),
            "partitions": len(self.holders),
            "open_partitions": sum(1 for h in self.holders.values() if h.alive and h.open),
            "lost_workers": sum(1 for h in self.holders.values() if not h.alive),
            "rpm": limiter.requests.rate * 60 if limiter.requests.rate else None,
            "tpm": limiter.tokens.rate * 60 if limiter.tokens.rate else None,
            "learned_from": limiter.learned_from,
            "coordination_calls": self.calls, "coordination_s": self.call_s,
        }
