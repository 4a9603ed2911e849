"""One partition's link to the run's coordinator: local stocks of pace and dollars, refilled
ahead of need by a pump on the Dask worker's event loop.

The engine calls its limiter, breaker and ledger synchronously from its own event loop (a
private loop thread), once or more per request. A scheduler round trip per call would put the
scheduler's latency on every send, so the link keeps a few requests' worth of pace slots and
dollars leased from the coordinator, hands them out locally, and one ``llmbatch_sync`` call
(about every 0.1 s, sooner when a stock runs low or something urgent happens: a 429, a failed
breaker probe, a fatal answer) reports what happened and brings the next lease. RPCs run on
the worker's loop (``run_coroutine_threadsafe``), never awaited in the engine's loop: awaiting
distributed's futures inside a private loop stalls (DESIGN).

A slot is a moment at which one request may go (the coordinator's GCRA pacer, in this host's
clock). A slot handed to a waiting sender belongs to the current ``generation``; when the stock
is empty the caller gets a short wait and the generation moves on, so it comes back for a real
slot instead of sending on none (the engine's own rule for a pace reset): a request is never
sent without a slot from the shared pacer.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import threading
import time
import uuid
from collections import deque
from typing import Any

from ..core import errors
from .state import error_state, rebuild_error

log = logging.getLogger(__name__)

KEEPALIVE = 0.1  # seconds between syncs when nothing asks for one (stops are heard this fast)
MIN_GAP = 0.005  # seconds between two syncs, so a busy partition batches its events
HORIZON = 0.3  # seconds of this partition's recent demand kept in stock
LEASE = 8  # requests' worth of dollars asked for at a time
CLOSE_TRIES = 5  # a closing sync that failed is tried again this many times (backing off)
STALE = 0.1  # a slot this late is dropped: sending on it would burst (the pacer's burst allowance)


class Link:
    """State shared by a partition's remote limiter, breaker and ledger (under one lock), and
    the pump that syncs it with the coordinator."""

    def __init__(self, worker: Any, run_id: str) -> None:
        self.worker, self.run_id = worker, run_id
        self.loop: asyncio.AbstractEventLoop = worker.loop.asyncio_loop
        self.holder = uuid.uuid4().hex
        self.lock = threading.Lock()
        self.engine: Any = None
        self.engine_loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self.gone = False  # the run was closed on the scheduler
        # pace
        self.pool: list[tuple[float, float]] = []  # heap of (local time, tokens reserved)
        self.handed: list[tuple[float, float]] = []  # slots given to sleepers this generation
        self.generation = 0
        self.epoch = 0
        self.coord_generation: int | None = None
        self.slotless = 0
        self.calls: deque[float] = deque()  # reserve() times over the last second
        self.token_debt = 0.0
        self.tokens_sum, self.tokens_n = 0.0, 0
        self.rpm: float | None = None
        self.tpm: float | None = None
        self.learned_from: str | None = None
        self.rtt = 0.002
        # what happened, for the next sync
        self.events: list[list] = []
        self.info: dict | None = None
        self.stop_report: list | None = None
        self.stop_state: list | None = None
        self.breaker_state = "closed"
        # money (global figures are the coordinator's, as of the last sync)
        self.limit: float | None = None
        self.held = self.inflight = self.spent_new = self.uncertain_new = 0.0
        self.holds = 0
        self.need = 0.0
        self.worst_seen = 0.0
        self.worst_cost = 0.0
        self.budget_state = "ok"
        self.spent = self.committed = 0.0
        self.warning: str | None = None
        self.settled: asyncio.Event | None = None  # on the engine's loop
        self.rpc_s = 0.0
        self.syncs = 0
        self.failed_syncs = 0
        self._wake: asyncio.Event | None = None
        self._wake_pending = False
        self._pump: Any = None

    # lifecycle (the task's thread) -----------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """First sync (the budget and pace as they stand), then the pump."""
        asyncio.run_coroutine_threadsafe(self._sync(), self.loop).result(timeout)
        if not self.syncs:  # no budget or pace known: sending now could cross them
            raise RuntimeError(f"no coordinator answered for run {self.run_id!r} "
                               "(llmbatch_pd.dask.coordinator.open_run opens it)")
        self._pump = asyncio.run_coroutine_threadsafe(self._run(), self.loop)

    def close(self, timeout: float = 60.0) -> None:
        """Give back the unused dollars and slots, report the last figures, stop the pump
        (its last sync says so). Waits for that unless called from an event loop."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
        self._poke()
        if self._pump is not None and _running_loop() is None:
            self._pump.result(timeout)

    def bind(self, engine: Any) -> None:
        """The engine this partition sends with (``runs.base.Shared.on_engine``): a run-wide
        stop stops it, and its own fatal stop is reported to the others."""
        self.engine = engine
        if self.stop_state is not None:
            engine.stop(rebuild_error(self.stop_state))

    # the engine's loop -----------------------------------------------------------------------

    def _on_engine_loop(self) -> None:
        if self.engine_loop is None:
            self.engine_loop = _running_loop()

    def take_slot(self, tokens: float) -> float:
        """Seconds to wait before sending (a slot of the shared pacer), or a short wait after
        which the caller comes back (the generation moved on) when none is in stock."""
        with self.lock:
            self._on_engine_loop()
            now = time.monotonic()
            self.calls.append(now)
            while self.calls and self.calls[0] < now - 1.0:
                self.calls.popleft()
            self._drop_stale(now)
            self.handed = [s for s in self.handed if s[0] > now]
            if self.pool:
                at, held = heapq.heappop(self.pool)
                self.handed.append((at, held))
                self.token_debt += tokens - held
                self.tokens_sum += tokens
                self.tokens_n += 1
                low = len(self.pool) < max(2, len(self.calls) * HORIZON / 2)
                wait = max(0.0, at - now)
            else:  # the caller's tokens count in the estimate the next lease is taken at
                self.tokens_sum += tokens
                self.tokens_n += 1
                self.slotless += 1
                self.generation += 1  # sleepers' slots go back to the stock; all come back
                for slot in self.handed:
                    heapq.heappush(self.pool, slot)
                self.handed = []
                low, wait = True, min(max(2 * self.rtt, 0.002), 0.05)
        if low:
            self._poke()
        return wait

    def _drop_stale(self, now: float) -> None:
        while self.pool and self.pool[0][0] < now - STALE:
            heapq.heappop(self.pool)

    def event(self, code: str, arg: Any = None, urgent: bool = False) -> None:
        with self.lock:
            last = self.events[-1] if self.events else None
            if last is not None and last[0] == code and last[1] == arg:
                last[2] += 1
            else:
                self.events.append([code, arg, 1])
        if urgent:
            self._poke()

    def note_info(self, info: Any) -> None:
        """A response's rate-limit headers. The first limit heard while the pace was unknown
        voids the stock (its slots were leased at no pace at all): the senders come back for
        slots of the learned pace, as in one process, where the first answer's headers set the
        pace before the pool opens."""
        first = (info.limit_requests or info.limit_tokens) and self.learned_from is None
        with self.lock:
            self.info = {k: getattr(info, k) for k in (
                "limit_requests", "remaining_requests", "reset_requests",
                "limit_tokens", "remaining_tokens", "reset_tokens")}
            if first:
                self.learned_from = "headers"  # until the coordinator says otherwise
                self.pool, self.handed = [], []
                self.generation += 1
                self.epoch += 1  # slots of a sync already under way are void too
        if first:
            self._poke()

    def try_reserve(self, worst: float) -> bool:
        with self.lock:
            self._on_engine_loop()
            self.worst_seen = max(self.worst_seen, worst)
            if self.limit is None:
                ok, low = True, False
            else:
                free = self.held - self.inflight - self.spent_new - self.uncertain_new
                ok = worst <= free + 1e-12 and self.stop_state is None
                # waiting for others to free room: the next keepalive sync asks again
                low = self.budget_state != "wait" if not ok else free - worst < self._worst() * LEASE / 2
                if not ok:
                    self.need = max(self.need, worst)
            if ok:
                self.inflight += worst
                self.holds += 1
        if low:
            self._poke()
        return ok

    def settle(self, worst: float, cost: float, uncertain: bool) -> None:
        with self.lock:
            self.inflight = max(0.0, self.inflight - worst) if self.holds > 1 else 0.0
            self.holds -= 1
            if uncertain:
                self.uncertain_new += worst
            else:
                self.spent_new += cost
        self.set_settled()

    def may_get_more(self) -> bool:
        """Whether waiting can bring dollars (False once the budget is exhausted or stopped)."""
        return self.limit is not None and self.budget_state != "exhausted" and self.stop_state is None

    def settled_event(self) -> asyncio.Event:
        self._on_engine_loop()
        if self.settled is None:
            self.settled = asyncio.Event()
        return self.settled

    def set_settled(self) -> None:
        loop, event = self.engine_loop, self.settled
        if loop is None or event is None or loop.is_closed():
            return
        if _running_loop() is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    def engine_stopped(self) -> None:
        """The engine stopped (its breaker is released): a fatal reason of its own is the
        whole run's (a bad key, no quota, an unknown model)."""
        reason = self.engine.stopped if self.engine is not None else None
        with self.lock:
            self.breaker_state = "down"
            if isinstance(reason, errors.FatalError) and self.stop_state is None:
                self.stop_report = error_state(reason)
        self._poke()
        self.set_settled()

    # the worker's loop -----------------------------------------------------------------------

    def _poke(self) -> None:
        """Ask the pump for a sync now (any thread)."""
        with self.lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            self.loop.call_soon_threadsafe(self._set_wake)
        except RuntimeError:  # the worker's loop is gone
            pass

    def _set_wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        self._wake = asyncio.Event()
        close_tries = 0
        while True:
            if not self.closed:
                try:
                    await asyncio.wait_for(self._wake.wait(), KEEPALIVE)
                except TimeoutError:
                    pass
            self._wake.clear()
            with self.lock:
                self._wake_pending = False
            closing = self.closed
            synced = await self._sync(close=closing)
            if closing and not synced and close_tries < CLOSE_TRIES:  # the last figures: try again
                close_tries += 1
                await asyncio.sleep(0.05 * 2 ** close_tries)
                continue
            if closing or self.gone:
                return
            await asyncio.sleep(MIN_GAP)

    async def _sync(self, close: bool = False) -> bool:
        """One exchange with the coordinator; False if it did not happen (the message is kept)."""
        epoch = self.epoch
        msg = self._outgoing(close)
        started = time.perf_counter()
        try:
            reply = await self.worker.scheduler.llmbatch_sync(
                run_id=self.run_id, holder=self.holder, worker=self.worker.address, msg=msg)
        except Exception as exc:  # the scheduler is unreachable: the leases stay counted there
            self._restore(msg)  # nothing it carried is lost: the next sync sends it
            if not self.failed_syncs:
                log.warning("llmbatch: sync with the coordinator failed (kept for the next one): %s", exc)
            self.failed_syncs += 1
            return False
        if not isinstance(reply, dict):  # no coordinator on this scheduler (yet, or any more)
            self._restore(msg)
            if not self.failed_syncs:
                log.warning("llmbatch: the scheduler has no run coordinator (reply %r)", reply)
            self.failed_syncs += 1
            return False
        spent = time.perf_counter() - started
        self.rpc_s += spent
        self.syncs += 1
        self.rtt = 0.8 * self.rtt + 0.2 * spent
        self._incoming(reply, time.monotonic(), epoch)
        return True

    def _restore(self, msg: dict[str, Any]) -> None:
        """A message the coordinator never got, back into the state it was taken from: its
        events, spend, token debt, stop report and the dollars it gave back."""
        with self.lock:
            self.events[:0] = msg["events"]
            self.info = self.info or msg["info"]
            self.rpc_s += msg["rpc_s"]
            self.spent_new += msg["spent"]
            self.uncertain_new += msg["uncertain"]
            if self.limit is not None:
                self.held += msg["spent"] + msg["uncertain"] + msg["give_back"]
            self.token_debt += msg.get("token_debt", 0.0)
            self.stop_report = self.stop_report or msg.get("stop")
            self.need = max(self.need, msg.get("need", 0.0))

    def _worst(self) -> float:
        return max(self.worst_cost, self.worst_seen)

    def _outgoing(self, close: bool) -> dict[str, Any]:
        with self.lock:
            now = time.monotonic()
            self._drop_stale(now)
            while self.calls and self.calls[0] < now - 1.0:  # an idle engine asks for no slots
                self.calls.popleft()
            msg: dict[str, Any] = {"events": self.events, "info": self.info,
                                   "spent": self.spent_new, "uncertain": self.uncertain_new,
                                   "rpc_s": self.rpc_s, "generation": self.coord_generation}
            self.events, self.info, self.rpc_s = [], None, 0.0
            if self.limit is not None:
                self.held -= self.spent_new + self.uncertain_new
            self.spent_new = self.uncertain_new = 0.0
            if self.token_debt > 0:
                msg["token_debt"], self.token_debt = self.token_debt, 0.0
            if self.stop_report is not None:
                msg["stop"], self.stop_report = self.stop_report, None
            if self.engine is not None:
                s = self.engine.stats
                msg["stats"] = {"sent": s.sent, "in_flight": s.in_flight, "done": s.done,
                                "failed": s.failed, "rate_limited": s.by_kind.get("429", 0),
                                "cost": s.cost}
            free = self.held - self.inflight
            if close:
                msg["close"] = True
                msg["slots_back"] = [at - now for at, _ in self.pool + self.handed if at > now]
                self.pool, self.handed = [], []
                give_back = max(free, 0.0) if self.limit is not None else 0.0
            else:
                demand = len(self.calls) * HORIZON
                target = max(2, math.ceil(demand)) + self.slotless if demand or self.slotless else 0
                msg["slots"] = max(0, target - len(self.pool))
                msg["tokens_each"] = self.tokens_sum / self.tokens_n if self.tokens_n else 0.0
                self.slotless = 0
                worst = self._worst()
                wanting = self.need > 0 or bool(self.calls)
                msg["want"] = worst * LEASE if self.limit is not None and wanting and free < worst * LEASE / 2 else 0.0
                msg["need"], self.need = self.need, 0.0
                # waiting for room with nothing in flight: give back what is too little, so
                # the dollars collect where one request can use them
                stuck = msg["need"] > 0 and self.holds == 0 and free < msg["need"]
                give_back = max(free, 0.0) if stuck else 0.0
            msg["give_back"] = give_back
            if self.limit is not None:
                self.held -= give_back
            return msg

    def _incoming(self, reply: dict[str, Any], receipt: float, epoch: int) -> None:
        stop = reply.get("stop")
        if reply.get("closed"):
            self.gone = True
        if reply.get("closed") and stop is None:
            stop = error_state(errors.RowError("the run was closed on the scheduler", kind="cancelled"))
        elif reply.get("lost") and stop is None:
            stop = error_state(errors.RowError("the scheduler lost this worker", kind="cancelled"))
        with self.lock:
            if "generation" in reply:
                if self.coord_generation is not None and reply["generation"] != self.coord_generation:
                    self.pool, self.handed = [], []  # slots of the old pace are void
                    self.generation += 1
                self.coord_generation = reply["generation"]
                each = self.tokens_sum / self.tokens_n if self.tokens_n else 0.0
                for wait in reply.get("slots", ()) if epoch == self.epoch else ():
                    heapq.heappush(self.pool, (receipt + wait, each))
                self.rpm, self.tpm = reply["rpm"], reply["tpm"]
                self.learned_from = reply["learned_from"]
                if self.breaker_state != "down":
                    self.breaker_state = reply["breaker"]
                self.limit = reply["limit"]
                self.held += reply["granted"]
                self.budget_state = reply["budget"]
                self.spent, self.committed = reply["spent"], reply["committed"]
                if reply.get("warning"):
                    self.warning = reply["warning"]
            new_stop = stop is not None and self.stop_state is None
            if new_stop:
                self.stop_state = stop
                self.breaker_state = "down"
        if new_stop and self.engine is not None:
            self.engine.stop(rebuild_error(stop))
        self.set_settled()  # dollars may have come, or the verdict that none will

    async def admit(self) -> dict:
        """Ask the shared breaker for admission (while it is open or probing)."""
        return await self.worker.scheduler.llmbatch_admit(run_id=self.run_id)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
