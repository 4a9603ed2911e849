"""Worker side of a Dask run: the engine's limiter, breaker and ledger, backed by the coordinator.

Inside a partition task, ``shared_parts(run_id)`` gives a ``runs.base.Shared`` (limiter and
breaker) and a ledger with the very interfaces the engine uses (``transport.limits.
RateLimiter``, ``transport.breaker.CircuitBreaker``, ``core.budget.Ledger``), all answered from
the partition's ``Link`` (local leases, refilled ahead of need) so no send waits on a scheduler
round trip. ``known_answers`` / ``report_answers`` carry paid-for answers through the
coordinator, so a partition that runs again (its worker died) pays nothing twice.

    with coordinated(run_id, price=spec.cost) as (shared, ledger):
        run.shared = shared
        await run.execute(ledger)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed import get_worker

from ..core.budget import PriceFn
from ..core.types import Usage
from ..runs.base import Shared
from .link import Link, _running_loop

_last_worker: Any = None  # for calls from the engine's loop thread (no task context there)


def _worker() -> Any:
    global _last_worker
    try:
        _last_worker = get_worker()
    except ValueError:
        if _last_worker is None:
            raise RuntimeError("llmbatch_pd.dask.remote works inside a Dask task only") from None
    return _last_worker


class _Rate:
    """``requests`` / ``tokens`` of the limiter: the shared pace, as last heard."""

    def __init__(self, link: Link, name: str) -> None:
        self._link, self._name = link, name

    @property
    def rate(self) -> float | None:
        per_minute = getattr(self._link, self._name)
        return per_minute / 60.0 if per_minute else None


class RemoteLimiter:
    """A ``RateLimiter`` whose pace is the coordinator's one GCRA pacer for the cluster."""

    pressure = 0.0

    def __init__(self, link: Link) -> None:
        self._link = link
        self.requests, self.tokens = _Rate(link, "rpm"), _Rate(link, "tpm")

    @property
    def generation(self) -> int:
        return self._link.generation

    @property
    def learned_from(self) -> str | None:
        return self._link.learned_from

    def reserve(self, tokens: int) -> float:
        return self._link.take_slot(float(tokens))

    def observe(self, info: Any) -> None:
        if info is not None:
            self._link.note_info(info)

    def on_rate_limited(self, retry_after: float | None) -> None:
        self._link.event("lr", retry_after, urgent=True)

    def on_success(self) -> None:
        self._link.event("ls")

    def __repr__(self) -> str:
        link = self._link
        return (f"RemoteLimiter(run={link.run_id}, rpm={link.rpm}, tpm={link.tpm}, "
                f"from={link.learned_from}, stock={len(link.pool)})")


class RemoteBreaker:
    """A ``CircuitBreaker`` counted on the coordinator: failures of every worker add up, and
    while it is open one probe goes out for the whole cluster."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self.consecutive = 0
        self.failed_probes = 0
        self.opened = 0
        self._released: asyncio.Event | None = None

    @property
    def state(self) -> str:
        return self._link.breaker_state

    async def admit(self) -> bool:
        link = self._link
        if self._released is None:
            self._released = asyncio.Event()
        while link.breaker_state not in ("closed", "down") and not self._released.is_set():
            ask = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(link.admit(), link.loop))
            released = asyncio.ensure_future(self._released.wait())
            done, _ = await asyncio.wait({ask, released}, return_when=asyncio.FIRST_COMPLETED)
            released.cancel()
            if ask not in done:
                ask.cancel()
                return False
            reply = ask.result()
            if reply["probe"]:
                return True
            if not reply.get("again"):
                with link.lock:
                    if link.breaker_state != "down":
                        link.breaker_state = reply["state"]
                return False
        return False

    def on_success(self) -> None:
        self.consecutive = 0
        self._link.event("bs")

    def on_failure(self, probe: bool) -> bool:
        """Counted on the coordinator, which stops the whole run when it judges the provider
        down; so never True here."""
        self.consecutive += 1
        if probe:
            self.failed_probes += 1
        self._link.event("bf", bool(probe), urgent=True)
        return False

    def release(self) -> None:
        """The engine stopped: let waiters through, and tell the others a fatal reason."""
        if self._released is not None:
            self._released.set()
        self._link.engine_stopped()

    def __repr__(self) -> str:
        return f"RemoteBreaker({self.state}, run={self._link.run_id})"


class RemoteLedger:
    """A ``Ledger`` over the run's one dollar account on the coordinator. ``price``: dollars
    for a usage (the run spec's ``cost``); without it an answer is charged its worst case."""

    def __init__(self, link: Link, price: PriceFn | None = None) -> None:
        self._link = link
        self.price = price

    @property
    def limit(self) -> float | None:
        return self._link.limit

    @property
    def spent(self) -> float:
        return self._link.spent

    @property
    def reserved(self) -> float:
        return self._link.inflight

    @property
    def uncertain(self) -> float:
        return 0.0

    @property
    def committed(self) -> float:
        return self._link.committed

    @property
    def holds(self) -> int:
        """Requests of this partition holding dollars, plus one while more may come: the
        engine waits for a settlement instead of stopping when its stock is empty."""
        link = self._link
        return link.holds + (1 if link.may_get_more() else 0)

    def share(self, price: PriceFn) -> RemoteLedger:
        return RemoteLedger(self._link, price)

    def try_reserve(self, worst: float) -> bool:
        return self._link.try_reserve(worst)

    async def wait_for_settlement(self) -> None:
        event = self._link.settled_event()
        event.clear()
        await event.wait()

    def wake(self) -> None:
        self._link.set_settled()

    def settle(self, worst: float, usage: Usage | None) -> float:
        if usage is None:
            cost = 0.0
        else:
            cost = self.price(usage) if self.price is not None else worst
        self._link.settle(worst, cost, uncertain=False)
        return cost

    def keep_uncertain(self, worst: float) -> None:
        self._link.settle(worst, 0.0, uncertain=True)

    def crossed_warning(self) -> str | None:
        link = self._link
        with link.lock:
            note, link.warning = link.warning, None
        return note

    def close(self) -> None:
        """End of the partition: unused dollars and pace go back to the coordinator."""
        self._link.close()

    def __repr__(self) -> str:
        link = self._link
        return (f"RemoteLedger(run={link.run_id}, limit={link.limit}, committed="
                f"{link.committed:.6f}, held={link.held:.6f}, in_flight={link.inflight:.6f})")


def shared_parts(run_id: str, price: PriceFn | None = None,
                 worst_cost: float = 0.0) -> tuple[Shared, RemoteLedger]:
    """The pace, breaker and budget of ``run_id`` for one partition (call it in the task).
    Close the ledger when the partition ends (``coordinated`` does), or its unused lease stays
    counted until ``close_run``."""
    link = Link(_worker(), run_id)
    if _running_loop() is link.loop:
        raise RuntimeError("call shared_parts from the task's thread, not the worker's event loop")
    link.worst_cost = worst_cost
    link.start()
    shared = Shared(limiter=RemoteLimiter(link), breaker=RemoteBreaker(link), on_engine=link.bind)
    return shared, RemoteLedger(link, price)


@contextmanager
def coordinated(run_id: str, price: PriceFn | None = None,
                worst_cost: float = 0.0) -> Iterator[tuple[Shared, RemoteLedger]]:
    """``shared_parts`` for the length of a block; the leases are given back at its end."""
    shared, ledger = shared_parts(run_id, price, worst_cost)
    try:
        yield shared, ledger
    finally:
        ledger.close()


def _rpc(handler: str, wait: bool = True, timeout: float = 60.0, **kwargs: Any) -> Any:
    worker = _worker()
    loop = worker.loop.asyncio_loop
    if _running_loop() is loop:
        raise RuntimeError("call this from the task's thread, not the worker's event loop")

    async def call() -> Any:
        return await getattr(worker.scheduler, handler)(**kwargs)

    fut = asyncio.run_coroutine_threadsafe(call(), loop)
    return fut.result(timeout) if wait else None


def known_answers(run_id: str, keys: list[str]) -> dict[str, dict]:
    """Answers already paid for in this run (reported by any partition), by request key."""
    return _rpc("llmbatch_known", run_id=run_id, keys=list(keys)) if keys else {}


def report_answers(run_id: str, items: list[tuple[str, dict]]) -> None:
    """Hand paid-for answers (request key, answer record of plain JSON-like values) to the
    coordinator, for the driver to store and for a partition run again. From an event loop
    (the engine's) it does not wait for the scheduler's receipt."""
    if items:
        _rpc("llmbatch_report", wait=_running_loop() is None, run_id=run_id,
             items=[[k, v] for k, v in items])


def rpc_cost(run_id: str, n: int = 200) -> dict[str, float]:
    """Time ``n`` empty ``llmbatch_sync`` round trips from this task (a benchmark's measure of
    one coordination call): mean, median and 95th percentile in milliseconds."""
    link = Link(_worker(), run_id)

    async def many() -> list[float]:
        out = []
        for _ in range(n):
            started = time.perf_counter()
            await link.worker.scheduler.llmbatch_sync(
                run_id=run_id, holder=link.holder, worker=link.worker.address, msg={})
            out.append((time.perf_counter() - started) * 1000)
        await link.worker.scheduler.llmbatch_sync(
            run_id=run_id, holder=link.holder, worker=link.worker.address, msg={"close": True})
        return out

    times = sorted(asyncio.run_coroutine_threadsafe(many(), link.loop).result(120))
    return {"calls": n, "mean_ms": sum(times) / n, "p50_ms": times[n // 2],
            "p95_ms": times[min(n - 1, int(n * 0.95))]}


__all__ = ["RemoteBreaker", "RemoteLedger", "RemoteLimiter", "coordinated", "known_answers",
           "report_answers", "rpc_cost", "shared_parts"]
