"""One coordinator per run, on the Dask scheduler: the cluster's single pace, budget and stop.

Every peer of a cluster that paces, budgets and breaks on its own multiplies the provider's
limits instead of sharing them (issue 13). So each run keeps, in a ``SchedulerPlugin`` (as
distributed's own Semaphore does, with handlers in ``scheduler.handlers``), exactly the objects a
single process would hold: one ``transport.limits.RateLimiter`` (the GCRA pacers for requests
and tokens, told or learned from any worker's headers and 429s), one ``CircuitBreaker``, the
dollar account and the run-wide stop. A plugin, not an Actor: it lives as long as the scheduler
and survives the death of any worker.

Workers (``remote.py``) do not call per request: one ``llmbatch_sync`` round trip carries a
partition's events (successes, 429s, breaker failures, the last rate-limit headers, dollars
spent) and takes back a few requests' worth of pace slots and dollars, plus the verdicts
(generation of the pace, breaker state, stop). Dollars leased to a partition count as reserved
until it reports them spent or gives them back; a worker that dies keeps them counted (moved
to ``uncertain``, never released): what it had in flight may have been billed.

Handlers (all on the scheduler's event loop, so no locks): ``llmbatch_open``, ``llmbatch_sync``,
``llmbatch_admit``, ``llmbatch_report``, ``llmbatch_known``, ``llmbatch_counters``,
``llmbatch_take``, ``llmbatch_stop``, ``llmbatch_close``.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from ..core import errors
from ..core.numbers import money
from ..core.types import RateLimitInfo
from ..transport.breaker import CircuitBreaker
from ..transport.limits import BURST_SECONDS, RateLimiter

PLUGIN = "llmbatch-coordinator"
MAX_SLOTS = 64  # pace slots handed out per round trip
ADMIT_WAIT = 5.0  # longest a breaker admission waits on the scheduler before the worker asks again


@dataclass
class RunLimits:
    """What one run shares across the cluster (picklable)."""

    run_id: str
    rpm: float | None = None
    tpm: float | None = None
    budget: float | None = None  # dollars; None = unlimited
    worst_cost: float = 0.0  # dollars to reserve per request before its answer is known
    warn_at: float = 0.8  # share of the budget committed that earns one warning


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


def stop_error(counts: dict[str, Any]) -> errors.ProviderError | None:
    """The error that stopped the run, from ``counters()`` (None if it was not stopped)."""
    return rebuild_error(counts.get("stop_error"))


@dataclass
class _Holder:
    """One partition's leases and its last reported engine figures."""

    worker: str
    held: float = 0.0  # dollars leased and neither reported spent nor given back
    stats: dict[str, float] = field(default_factory=dict)
    alive: bool = True


class _Run:
    """One run's shared state on the scheduler."""

    def __init__(self, limits: RunLimits) -> None:
        self.limits = limits
        self.limiter = RateLimiter(limits.rpm, limits.tpm)
        self.breaker = CircuitBreaker()
        self.spent = 0.0
        self.uncertain = 0.0
        self.holders: dict[str, _Holder] = {}
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

    def grant(self, holder: _Holder, want: float, need: float) -> tuple[float, str]:
        """Dollars for ``holder`` (asking ``want``, needing at least ``need`` for its next
        request) and the budget's state: "ok", "wait" (others hold what may come back) or
        "exhausted" (nothing that could come back would make room: the run stops)."""
        limit = self.limits.budget
        if limit is None:
            return want, "ok"
        room = limit - self.committed
        need = max(need, 0.0)
        live = sum(1 for h in self.holders.values() if h.alive)
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
            "lost_workers": sum(1 for h in self.holders.values() if not h.alive),
            "rpm": limiter.requests.rate * 60 if limiter.requests.rate else None,
            "tpm": limiter.tokens.rate * 60 if limiter.tokens.rate else None,
            "learned_from": limiter.learned_from,
            "coordination_calls": self.calls, "coordination_s": self.call_s,
        }


class Coordinator(SchedulerPlugin):
    """The scheduler plugin holding every open run (``open_run`` registers it once)."""

    name = PLUGIN
    idempotent = True

    def __init__(self) -> None:
        self.runs: dict[str, _Run] = {}

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        scheduler.handlers.update({
            "llmbatch_open": self.open, "llmbatch_sync": self.sync, "llmbatch_admit": self.admit,
            "llmbatch_report": self.report, "llmbatch_known": self.known,
            "llmbatch_counters": self.counters, "llmbatch_take": self.take,
            "llmbatch_stop": self.stop, "llmbatch_close": self.close_run,
        })

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        """A worker left: whatever it held stays counted, as possibly billed."""
        for run in self.runs.values():
            for h in run.holders.values():
                if h.worker == worker and h.alive:
                    h.alive = False
                    run.uncertain += h.held
                    h.held = 0.0

    # handlers (scheduler loop) ---------------------------------------------------------------

    def open(self, limits: dict) -> None:
        if limits["run_id"] not in self.runs:
            self.runs[limits["run_id"]] = _Run(RunLimits(**limits))

    def sync(self, run_id: str, holder: str, worker: str, msg: dict) -> dict:
        run = self.runs.get(run_id)
        if run is None:
            return {"closed": True}
        h = run.holders.get(holder)
        if h is None:
            h = run.holders[holder] = _Holder(worker)
        run.calls += 1
        run.call_s += msg.get("rpc_s", 0.0)
        spent, uncertain = msg.get("spent", 0.0), msg.get("uncertain", 0.0)
        run.spent += spent
        run.uncertain += uncertain
        if h.alive and run.limits.budget is not None:  # a lost worker's went to uncertain
            h.held -= spent + uncertain + msg.get("give_back", 0.0)
        if msg.get("stats"):
            h.stats = msg["stats"]
        if msg.get("stop") and run.stop is None:
            run.halt(rebuild_error(msg["stop"]))
        run.hear(msg.get("events", ()), msg.get("info"), msg.get("token_debt", 0.0))
        if msg.get("slots_back"):
            run.give_back(msg["slots_back"], msg.get("generation", -1))
        reply: dict[str, Any] = {"closed": False}
        if msg.get("close"):  # what it gave back is free again; what it still holds was in
            h.stats["in_flight"] = 0  # flight when it closed: possibly billed
            run.uncertain += max(h.held, 0.0)
            h.held = 0.0
            return reply | {"stop": run.stop}
        if not h.alive:
            return reply | {"stop": run.stop, "lost": True}
        granted, state = 0.0, "ok"
        if run.stop is None:
            granted, state = run.grant(h, msg.get("want", 0.0), msg.get("need", 0.0))
        n = min(int(msg.get("slots", 0)), MAX_SLOTS) if run.stop is None else 0
        limiter = run.limiter
        return reply | {
            "slots": run.slots(n, msg.get("tokens_each", 0.0)) if n else [],
            "generation": limiter.generation,
            "rpm": limiter.requests.rate * 60 if limiter.requests.rate else None,
            "tpm": limiter.tokens.rate * 60 if limiter.tokens.rate else None,
            "learned_from": limiter.learned_from,
            "breaker": run.breaker.state, "granted": granted, "budget": state,
            "spent": run.spent, "committed": run.committed, "limit": run.limits.budget,
            "warning": run.warning(), "stop": run.stop,
        }

    async def admit(self, run_id: str) -> dict:
        """Wait (a while) for the shared breaker; ``probe``: the caller is its one probe."""
        import asyncio

        run = self.runs.get(run_id)
        if run is None or run.stop is not None:
            return {"probe": False, "state": "down"}
        try:
            probe = await asyncio.wait_for(run.breaker.admit(), ADMIT_WAIT)
        except TimeoutError:
            return {"probe": False, "state": run.breaker.state, "again": True}
        return {"probe": probe, "state": run.breaker.state}

    def report(self, run_id: str, items: list) -> int:
        run = self.runs.get(run_id)
        if run is None:
            return 0
        for key, record in items:
            if key not in run.answers:
                run.untaken.append(key)
            run.answers[key] = record
        return len(items)

    def known(self, run_id: str, keys: list[str]) -> dict:
        run = self.runs.get(run_id)
        if run is None:
            return {}
        return {k: run.answers[k] for k in keys if k in run.answers}

    def counters(self, run_id: str) -> dict | None:
        run = self.runs.get(run_id)
        return None if run is None else run.counters()

    def take(self, run_id: str, max_items: int = 10000) -> list:
        run = self.runs.get(run_id)
        if run is None:
            return []
        out = []
        while run.untaken and len(out) < max_items:
            key = run.untaken.popleft()
            out.append([key, run.answers[key]])
        return out

    def stop(self, run_id: str, reason: list) -> None:
        run = self.runs.get(run_id)
        if run is not None:
            run.halt(rebuild_error(reason))

    def close_run(self, run_id: str) -> dict | None:
        run = self.runs.pop(run_id, None)
        if run is None:
            return None
        run.uncertain += run.reserved  # leases never given back: possibly billed
        for h in run.holders.values():
            h.held = 0.0
        return run.counters()


# driver side (the client's process) ------------------------------------------------------------


def _call(client: Any, handler: str, **kwargs: Any) -> Any:
    async def call() -> Any:
        return await getattr(client.scheduler, handler)(**kwargs)

    return client.sync(call)


def open_run(client: Any, limits: RunLimits) -> None:
    """Register the coordinator on the scheduler (once) and open ``limits.run_id`` there."""
    client.register_plugin(Coordinator(), name=PLUGIN)
    _call(client, "llmbatch_open", limits=asdict(limits))


def counters(client: Any, run_id: str) -> dict:
    """The run's figures across the cluster: answered, failed, sent, rate_limited (429s),
    spent, reserved, uncertain, in_flight (requests), stopped (why, or None), stop_error (for
    ``stop_error()``), rows_per_s (answered over the last 5 s), the pace (rpm, tpm,
    learned_from), answers_reported/answers_waiting and coordination_calls/coordination_s."""
    counts = _call(client, "llmbatch_counters", run_id=run_id)
    if counts is None:
        raise KeyError(f"no open run {run_id!r} on the scheduler")
    return counts


def take_answers(client: Any, run_id: str, max_items: int = 10000) -> list[tuple[str, dict]]:
    """Drain up to ``max_items`` answers reported since the last call, as (key, record)."""
    return [(k, v) for k, v in _call(client, "llmbatch_take", run_id=run_id, max_items=max_items)]


def stop_run(client: Any, run_id: str, reason: str = "cancelled") -> None:
    """Stop every worker of the run (a Cancel, an interrupt): nothing more is sent."""
    _call(client, "llmbatch_stop", run_id=run_id,
          reason=error_state(errors.RowError(reason, kind="cancelled")))


def close_run(client: Any, run_id: str) -> dict:
    """The final counters; the run's state is freed (leases never given back count as
    uncertain spend in these figures)."""
    counts = _call(client, "llmbatch_close", run_id=run_id)
    if counts is None:
        raise KeyError(f"no open run {run_id!r} on the scheduler")
    return counts
