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

import asyncio
from dataclasses import asdict
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from ..core import errors
from .state import MAX_SLOTS, Holder, RunLimits, RunState, error_state, rebuild_error

__all__ = ["Coordinator", "RunLimits", "close_run", "coordination_cost", "counters",
           "error_state", "open_run", "rebuild_error", "stop_error", "stop_run", "take_answers"]

PLUGIN = "llmbatch-coordinator"
ADMIT_WAIT = 5.0  # longest a breaker admission waits on the scheduler before the worker asks again


def stop_error(counts: dict[str, Any]) -> errors.ProviderError | None:
    """The error that stopped the run, from ``counters()`` (None if it was not stopped)."""
    return rebuild_error(counts.get("stop_error"))


class Coordinator(SchedulerPlugin):
    """The scheduler plugin holding every open run (``open_run`` registers it once)."""

    name = PLUGIN
    idempotent = True

    def __init__(self) -> None:
        self.runs: dict[str, RunState] = {}

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
            self.runs[limits["run_id"]] = RunState(RunLimits(**limits))

    def sync(self, run_id: str, holder: str, worker: str, msg: dict) -> dict:
        run = self.runs.get(run_id)
        if run is None:
            return {"closed": True}
        h = run.holders.get(holder)
        if h is None:
            h = run.holders[holder] = Holder(worker)
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
            h.held, h.open = 0.0, False
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


def coordination_cost(counts: dict[str, Any]) -> dict[str, float]:
    """What coordinating cost per request sent, from ``counters()``: round trips to the
    scheduler and the seconds they took (spent on the workers' loops, beside the sends)."""
    sent = max(counts["sent"], 1)
    return {"calls_per_request": counts["coordination_calls"] / sent,
            "ms_per_request": 1000 * counts["coordination_s"] / sent,
            "ms_per_call": 1000 * counts["coordination_s"] / max(counts["coordination_calls"], 1)}
