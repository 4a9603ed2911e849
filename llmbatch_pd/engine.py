"""The async scheduler: a bounded pool of workers pulling requests from one iterator.

Memory grows with the concurrency, never with the number of rows: requests are pulled lazily
and each answer is handed to ``on_done`` the moment it arrives. The first request goes alone,
so a bad key, an exhausted quota or the provider's rate-limit headers are known before the
pool opens (one round trip, instead of a whole wave of doomed or throttled requests).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from time import monotonic

import aiohttp

from . import errors
from .breaker import CircuitBreaker
from .budget import Ledger
from .limits import RateLimiter
from .numbers import money
from .providers.base import Provider
from .stats import RECENT_ERRORS, EngineStats  # noqa: F401  (re-exported)
from .types import Reply, Request

OnDone = Callable[[Request, Reply | None, errors.ProviderError | None], None]
WorstCost = Callable[[Request], float]
Check = Callable[[str | None], object]
"""Raises errors.InvalidOutput for a paid answer that is unusable (``schema=``)."""


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter that never waits less than the server asked."""

    max_retries: int = 6
    base: float = 0.5
    cap: float = 8.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.base * 2**attempt, self.cap) * (1 - 0.25 * self.rng.random())
        if retry_after is not None:
            return min(retry_after, 60.0) + self.rng.random() * min(0.25, 0.1 + retry_after * 0.1)
        return backoff


class Engine:
    def __init__(
        self,
        provider: Provider,
        *,
        concurrency: int = 64,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 120.0,
        ledger: Ledger | None = None,
        worst_cost: WorstCost | None = None,
        stats: EngineStats | None = None,
        session: aiohttp.ClientSession | None = None,
        on_warning: Callable[[str], None] | None = None,
        breaker: CircuitBreaker | None = None,
        check: Check | None = None,
        max_invalid: int = 2,
    ) -> None:
        if concurrency < 1:
            raise errors.InputError("concurrency must be at least 1")
        self.provider = provider
        self.concurrency = concurrency
        self.limiter = limiter or RateLimiter()
        self.retry = retry or RetryPolicy()
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.ledger = ledger
        self.worst_cost = worst_cost
        self.stats = stats or EngineStats()
        self.on_warning = on_warning
        self._session = session
        self.breaker = breaker
        self.check = check
        self.max_invalid = max_invalid  # asks again after an unusable answer, then the row fails
        self._stop: errors.ProviderError | None = None

    def stop(self, reason: errors.ProviderError) -> None:
        """Send nothing more; requests in flight still finish."""
        if self._stop is None:
            self._stop = reason
            self.stats.stop_reason = str(reason)
            if self.breaker is not None:
                self.breaker.release()

    @property
    def stopped(self) -> errors.ProviderError | None:
        return self._stop

    async def run(self, requests: Iterable[Request], on_done: OnDone) -> None:
        """Send every request (until stopped) and report each outcome to ``on_done``.

        Requests never pulled from the iterator (after a stop) are not reported: the caller
        knows which rows it handed over and gives them the stop reason.
        """
        stats = self.stats
        stats.started = stats.started or monotonic()
        owns_session = self._session is None
        if owns_session:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=0, ttl_dns_cache=300),
                auto_decompress=True,
            )
        try:
            source: Iterator[Request] = iter(requests)
            first = next(source, None)
            if first is not None:
                await self._process(first, on_done)
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

    async def _process(self, request: Request, on_done: OnDone) -> None:
        stats = self.stats
        attempt = invalid = 0
        while True:
            if self._stop is not None:
                self._finish(request, None, self._stop_error(), on_done)
                return
            worst = 0.0
            if self.ledger is not None:
                worst = self.worst_cost(request) if self.worst_cost else 0.0
                if not await self._reserve(worst):
                    self.stop(errors.BudgetReached(
                        f"budget reached: {money(self.ledger.committed)} committed of "
                        f"{money(self.ledger.limit)}; this request could cost up to {money(worst)}"
                    ))
                    continue
            probe = await self.breaker.admit() if self.breaker is not None else False
            if self._stop is not None:
                if self.ledger is not None:
                    self.ledger.settle(worst, None)
                continue
            wait = self.limiter.reserve(request.est_input_tokens + request.max_output_tokens)
            if wait > 0:
                await asyncio.sleep(wait)
            stats.in_flight += 1
            stats.sent += 1
            sent_at = monotonic()
            try:
                reply = await self._send(request)
            except errors.ProviderError as exc:
                stats.in_flight -= 1
                stats.by_kind[exc.kind] += 1
                self._settle_failure(exc, worst)
                if isinstance(exc, errors.RateLimitError):
                    self.limiter.on_rate_limited(exc.retry_after)
                elif exc.retryable and self.breaker is not None and self.breaker.on_failure(probe):
                    self.stop(errors.ProviderDown(
                        f"the provider is failing: {self.breaker.consecutive} failures in a row "
                        f"and {self.breaker.failed_probes} failed probes (last: {exc})"
                    ))
                if exc.fatal:
                    self.stop(exc)
                elif exc.retryable and attempt < self.retry.max_retries and self._stop is None:
                    stats.retrying += 1
                    try:
                        await asyncio.sleep(self.retry.delay(attempt, exc.retry_after))
                    finally:
                        stats.retrying -= 1
                    attempt += 1
                    continue
                stats.note_error(exc)
                self._finish(request, None, exc, on_done)
                return
            except BaseException:
                stats.in_flight -= 1
                if self.ledger is not None:
                    self.ledger.keep_uncertain(worst)  # cancelled mid-flight: may be billed
                raise
            stats.in_flight -= 1
            stats.latency_total += monotonic() - sent_at
            if self.ledger is not None:
                stats.cost += self.ledger.settle(worst, reply.usage)
                if self.ledger.crossed_warning() and self.on_warning:
                    self.on_warning(
                        f"80% of the budget is committed ({money(self.ledger.spent)} of "
                        f"{money(self.ledger.limit)})"
                    )
            stats.input_tokens += reply.usage.input_tokens
            stats.output_tokens += reply.usage.output_tokens
            self.limiter.on_success()
            if self.breaker is not None:
                self.breaker.on_success()
            if self.check is not None:
                try:
                    self.check(reply.text)
                except errors.InvalidOutput as exc:  # paid for, but unusable: ask again, a few times
                    stats.by_kind[exc.kind] += 1
                    if invalid < self.max_invalid and self._stop is None:
                        invalid += 1
                        continue
                    stats.note_error(exc)
                    self._finish(request, None, exc, on_done)
                    return
            self._finish(request, reply, None, on_done)
            return

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
        if isinstance(exc, (errors.RequestTimeout, errors.TransportError, errors.MalformedResponse)):
            self.ledger.keep_uncertain(worst)
        else:
            self.ledger.settle(worst, None)

    def _finish(self, request, reply, exc, on_done: OnDone) -> None:
        if exc is None:
            self.stats.done += 1
        else:
            self.stats.failed += 1
        on_done(request, reply, exc)

    def _stop_error(self) -> errors.ProviderError:
        stop = self._stop
        return errors.RowError(f"not sent: {stop}", kind=stop.kind if stop else "stopped")

    async def _send(self, request: Request) -> Reply:
        url, headers, body = self.provider.prepare(request)
        try:
            async with self._session.post(url, data=body, headers=headers, timeout=self.timeout) as resp:
                data = await resp.read()
                status, resp_headers = resp.status, resp.headers
        except TimeoutError:
            raise errors.RequestTimeout(
                f"no answer within {self.timeout.total:g}s (timeout=)"
            ) from None
        except aiohttp.ClientError as exc:
            raise errors.TransportError(
                self.provider._scrub(f"{type(exc).__name__}: {exc}")
            ) from None
        self.limiter.observe(self.provider.rate_limits(resp_headers))
        return self.provider.parse(status, resp_headers, data)
