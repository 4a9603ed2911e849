"""The async scheduler: a bounded pool of workers pulling requests from one iterator.

Memory grows with the concurrency, never with the number of rows: requests are pulled lazily
and each answer is handed to ``on_done`` the moment it arrives. The first request goes alone,
so a bad key, an exhausted quota or the provider's rate-limit headers are known before the
pool opens (one round trip, instead of a whole wave of doomed or throttled requests).

The engine decides what is sent when (concurrency, pacing, the budget, the verdicts on the
first answers, each row's outcome); ``transport.http`` sends it, classifies what went wrong,
and holds the retry rules and the breaker's verdict it applies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from time import monotonic

import aiohttp

from ..core import errors
from ..core.budget import Ledger
from ..core.defaults import CONCURRENCY, SCHEMA_RETRIES, TIMEOUT
from ..core.numbers import money
from ..core.reuse import truncation_note
from ..core.stats import RECENT_ERRORS, EngineStats  # noqa: F401  (re-exported)
from ..core.types import Reply, Request
from ..providers.base import Provider
from .breaker import CircuitBreaker
from .http import breaker_verdict, exchange, never_connected, open_session, request_timeout
from .limits import RateLimiter
from .opening import Opening
from .retry import RetryPolicy, Tries, may_have_taken_effect

OnDone = Callable[[Request, Reply | None, errors.ProviderError | None], None]
WorstCost = Callable[[Request], float]
Check = Callable[[str | None], object]
"""Raises errors.InvalidOutput for a paid answer that is unusable (``schema=``)."""


class Engine:
    def __init__(
        self,
        provider: Provider,
        *,
        concurrency: int = CONCURRENCY,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = TIMEOUT,
        ledger: Ledger | None = None,
        worst_cost: WorstCost | None = None,
        stats: EngineStats | None = None,
        session: aiohttp.ClientSession | None = None,
        on_warning: Callable[[str], None] | None = None,
        breaker: CircuitBreaker | None = None,
        check: Check | None = None,
        max_invalid: int = SCHEMA_RETRIES,
    ) -> None:
        if concurrency < 1:
            raise errors.InputError("concurrency must be at least 1")
        self.provider = provider
        self.concurrency = concurrency
        self.limiter = limiter or RateLimiter()
        self.retry = retry or RetryPolicy()
        self.timeout = request_timeout(timeout)
        self.ledger = ledger
        self.worst_cost = worst_cost
        self.stats = stats or EngineStats()
        self.on_warning = on_warning
        self._session = session
        self.breaker = breaker
        self.check = check
        self.max_invalid = max_invalid  # asks again after an unusable answer, then the row fails
        self.opening = Opening(provider.base_url)
        self._stop: errors.ProviderError | None = None
        self._verdict: errors.FatalError | None = None  # the first answers' (see _fail_row)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken: asyncio.Event | None = None  # set by stop(): sleepers wake at once
        # set (and replaced) when the limiter resets its pace: pacer sleepers take new slots
        self._repaced: asyncio.Event | None = None
        self._generation = 0

    def stop(self, reason: errors.ProviderError) -> None:
        """Send nothing more; requests in flight still finish, sleeping workers wake at once.

        The one place a run-wide stop is recorded (``stopped``). Safe from any thread: once it
        returns no new request is sent, whichever thread called it.
        """
        if self._stop is not None:
            return
        self._stop = reason
        self.stats.stop_reason = str(reason)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._wake()
        else:
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._woken is not None:
            self._woken.set()
            self._repaced.set()
        if self.breaker is not None:
            self.breaker.release()
        if self.ledger is not None:
            self.ledger.wake()

    @property
    def stopped(self) -> errors.ProviderError | None:
        return self._stop

    def conclude(self) -> None:
        """After ``run``: a verdict on the first answers that no later row heard becomes the
        stop. For a run that others follow (a pilot: the main run, an estimate), where every
        row was tried before the verdict could stop it; a finished run alone keeps each row's
        own failure and its warning (there is nothing left to save)."""
        if self._stop is None and self._verdict is not None:
            self.stop(self._verdict)

    async def run(self, requests: Iterable[Request], on_done: OnDone) -> None:
        """Send every request (until stopped) and report each outcome to ``on_done``.

        Requests never pulled from the iterator (after a stop) are not reported: the caller
        knows which rows it handed over and gives them the stop reason.
        """
        stats = self.stats
        stats.started = stats.started or monotonic()
        self._loop = asyncio.get_running_loop()
        self._woken = asyncio.Event()
        self._repaced = asyncio.Event()
        self._generation = self.limiter.generation
        if self._stop is not None:  # stopped before it began
            self._wake()
        owns_session = self._session is None
        if owns_session:
            self._session = open_session(self.concurrency)
        try:
            source: Iterator[Request] = iter(requests)
            # the first request goes alone, and the next ones too until one succeeds: a bad
            # key, an unknown model or an unreachable host costs a few requests, not a wave
            while self._stop is None and self.opening.on_probation:
                request = next(source, None)
                if request is None:
                    return
                await self._process(request, on_done)
            if self._stop is None:
                workers = min(self.concurrency, max(stats.total - 1, 1) if stats.total else self.concurrency)
                async with asyncio.TaskGroup() as group:
                    for _ in range(workers):
                        group.create_task(self._worker(source, on_done))
        finally:
            stats.finished = monotonic()
            if owns_session:
                await self._session.close()
                self._session = None

    async def _worker(self, source: Iterator[Request], on_done: OnDone) -> None:
        for request in source:
            await self._process(request, on_done)
            if self._stop is not None:
                return

    async def _turn(self, request: Request) -> bool:
        """Wait for the pacer's slot; False if the run stopped meanwhile. A slot handed out
        before the limiter reset its pace (a block, a reset) is exchanged for a new one."""
        tokens = request.est_input_tokens + request.max_output_tokens
        while self._stop is None:
            generation, repaced = self.limiter.generation, self._repaced
            if await self._sleep(self.limiter.reserve(tokens), repaced):
                return False
            if self.limiter.generation == generation:
                return True
        return False

    def _note_pace(self) -> None:
        """After the limiter has heard an answer: wake the pacer's sleepers if it reset."""
        if self.limiter.generation != self._generation and self._repaced is not None:
            self._generation = self.limiter.generation
            self._repaced.set()
            self._repaced = asyncio.Event()

    async def _sleep(self, seconds: float, until: asyncio.Event | None = None) -> bool:
        """Sleep, unless the run stops (or ``until`` is set) meanwhile; True if stopped."""
        if seconds > 0 and self._stop is None:
            try:
                async with asyncio.timeout(seconds):
                    await (until or self._woken).wait()
            except TimeoutError:
                pass
        return self._stop is not None

    async def _process(self, request: Request, on_done: OnDone) -> None:
        """One row: wait for its turn, send, retry; report exactly one outcome.

        The budget is reserved only once the pacer's turn has come, right before sending,
        and every reservation is settled (or kept, if it may have been billed) exactly once,
        whatever happens: an answer, a failure, a stop or a cancellation.
        """
        stats = self.stats
        invalid = 0
        tries = Tries(self.retry)  # the retry rules: backoff, max_retries, a row's max_wait
        last: errors.ProviderError | None = None  # this row's last failure, if it was sent
        if self._verdict is not None:
            self.stop(self._verdict)
        while True:
            if self._stop is None and self.breaker is not None:
                probe = await self.breaker.admit()
            else:
                probe = False
            if not await self._turn(request):
                self._finish(request, None, self._stop_error(last), on_done)
                return
            worst = 0.0
            if self.ledger is not None:
                worst = self.worst_cost(request) if self.worst_cost else 0.0
                if not await self._reserve(worst):
                    if self._stop is None:
                        self.stop(errors.BudgetReached(
                            f"budget reached: {money(self.ledger.committed)} committed of "
                            f"{money(self.ledger.limit)}; this request could cost up to "
                            f"{money(worst)}"
                        ))
                    self._finish(request, None, self._stop_error(last), on_done)
                    return
            # from here the reservation is held: every path below settles or keeps it once
            if self._stop is not None:
                if self.ledger is not None:
                    self.ledger.settle(worst, None)
                self._finish(request, None, self._stop_error(last), on_done)
                return
            stats.in_flight += 1
            stats.sent += 1
            sent_at = monotonic()
            try:
                reply = await self._send(request)
            except errors.ProviderError as exc:
                stats.in_flight -= 1
                stats.by_kind[exc.kind] += 1
                self._settle_failure(exc, worst)
                last = exc
                fatal = self._judge_failure(exc, probe, tries.attempt)
                if fatal is not None:
                    self.stop(fatal)
                if exc.fatal:
                    self.stop(exc)
                # a 429 is the limit's doing, not the row's: it does not use up max_retries
                # (the limiter paces and probes); the row's wait is bounded by max_wait alone
                elif self._stop is None and (delay := tries.wait(exc)) is not None:
                    stats.retrying += 1
                    try:
                        stopped = await self._sleep(delay)
                    finally:
                        stats.retrying -= 1
                    if not stopped:
                        continue
                    exc = self._stop_error(exc)
                elif tries.note is not None:
                    exc = _with_note(exc, tries.note)
                self._fail_row(request, exc, on_done)
                return
            except BaseException:
                stats.in_flight -= 1
                if self.ledger is not None:
                    self.ledger.keep_uncertain(worst)  # cancelled mid-flight: may be billed
                raise
            stats.in_flight -= 1
            stats.latency_total += monotonic() - sent_at
            self.opening.answered()
            if self.ledger is not None:
                stats.cost += self.ledger.settle(worst, reply.usage)
                if (note := self.ledger.crossed_warning()) and self.on_warning:
                    self.on_warning(note)
            stats.input_tokens += reply.usage.input_tokens
            stats.output_tokens += reply.usage.output_tokens
            self.limiter.on_success()
            self._note_pace()
            if self.breaker is not None:
                self.breaker.on_success()
            if self.check is not None:
                try:
                    self.check(reply.text)
                except errors.InvalidOutput as exc:  # paid for, but unusable: ask again, a few times
                    stats.by_kind[exc.kind] += 1
                    last = exc
                    if reply.truncated:  # cut at max_tokens: asked again, it would be cut again
                        limit = request.max_output_tokens or self.provider.default_max_tokens
                        self._fail_row(request, _cut(exc, limit), on_done, cut_at=limit)
                        return
                    if invalid < self.max_invalid and self._stop is None:
                        invalid += 1
                        continue
                    self._fail_row(request, exc, on_done)
                    return
            self.opening.usable()
            self._verdict = None
            self._finish(request, reply, None, on_done)
            return

    def _judge_failure(
        self, exc: errors.ProviderError, probe: bool, attempt: int
    ) -> errors.ProviderError | None:
        """What one failed attempt says about the whole run (a stop reason, or None)."""
        if exc.status is not None:
            self.opening.answered()
        if isinstance(exc, errors.RateLimitError):
            self.limiter.on_rate_limited(exc.retry_after)
            self._note_pace()
        elif never_connected(exc) and (fatal := self.opening.connect_failed(exc, attempt)):
            return fatal
        return breaker_verdict(self.breaker, exc, probe)

    def _fail_row(self, request: Request, exc: errors.ProviderError, on_done: OnDone,
                  cut_at: int | None | bool = False) -> None:
        """A row that was sent ends with its own failure (``cut_at``: its answer was cut at
        that output limit before it fitted ``schema=``). The first ones may amount to a
        verdict on the run, which stops it when another row is about to go (or, after a
        pilot, when the run ends: ``conclude``)."""
        self.stats.note_error(exc)
        self._finish(request, None, exc, on_done)
        opening = self.opening
        fatal = opening.row_failed(exc) if cut_at is False else opening.row_cut(exc, cut_at)
        if self._stop is None and fatal is not None:
            self._verdict = fatal

    async def _reserve(self, worst: float) -> bool:
        """Reserve the worst case; if in-flight reservations block it, wait for them."""
        ledger = self.ledger
        while not ledger.try_reserve(worst):
            if ledger.holds == 0 or self._stop is not None:
                return False
            await ledger.wait_for_settlement()
        return True

    def _settle_failure(self, exc: errors.ProviderError, worst: float) -> None:
        if self.ledger is None:
            return
        if may_have_taken_effect(exc) and not never_connected(exc):
            self.ledger.keep_uncertain(worst)
        else:
            self.ledger.settle(worst, None)

    def _finish(self, request, reply, exc, on_done: OnDone) -> None:
        if exc is None:
            self.stats.done += 1
        else:
            self.stats.failed += 1
        on_done(request, reply, exc)

    def _stop_error(self, last: errors.ProviderError | None = None) -> errors.ProviderError:
        """The reason for a row the stop caught: its own last failure if it was sent (and
        why it was not tried again), else "not sent: <why the run stopped>"."""
        stop = self._stop
        if last is not None:
            return _with_note(last, f"not retried: the run stopped ({stop})")
        return errors.NotSent(stop, kind=stop.kind if stop else None)

    async def _send(self, request: Request) -> Reply:
        url, headers, body = self.provider.prepare(request)
        status, resp_headers, data = await exchange(
            self._session, "POST", url, headers, body, timeout=self.timeout, scrub=self.provider.scrub)
        self.limiter.observe(self.provider.rate_limits(resp_headers))
        return self.provider.parse(status, resp_headers, data)


def _cut(exc: errors.InvalidOutput, limit: int | None) -> errors.InvalidOutput:
    """A schema failure whose cause is the output limit: the row's reason says so first."""
    cut = errors.InvalidOutput(f"{truncation_note(limit)}: {exc.message}", status=exc.status)
    cut.__cause__ = exc.__cause__
    return cut


def _with_note(exc: errors.ProviderError, note: str) -> errors.ProviderError:
    """The same failure (class, status, kind) with why the engine gave up on it added."""
    noted = errors.RowError(f"{exc.message} ({note})", status=exc.status, kind=exc.kind)
    noted.__cause__ = exc.__cause__
    return noted
