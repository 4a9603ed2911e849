"""The one module that sends HTTP requests.

Both senders go through it: the engine (one real-time request per row; it keeps its own
concurrency, pacing, budget and verdicts on the first answers) and the batch runner's client
below (files, batch jobs, polls, downloads). What is written once, here:

- the session (:func:`open_session`) and the timeouts: a request's whole answer within
  ``timeout=``, a connection within ``CONNECT_S``; an upload or download of hundreds of MB is
  bounded by its silences instead (:func:`transfer_timeout`);
- :func:`exchange`: one request, and what went wrong turned into the library's error types
  (the provider's ``parse`` classifies an HTTP answer, Retry-After included; this module a
  connection that failed, a timeout), with the key scrubbed from any message;
- the retries (``retry.Tries``: backoff, Retry-After honoured in full, 429s bounded by the
  wait, not by ``max_retries``) and the circuit breaker, which the engine applies row by row
  and :class:`BatchClient` call by call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TypeVar

import aiohttp

from ..core import errors
from ..core.secrets import safe_url
from ..providers.base import Parse, Provider
from .breaker import CircuitBreaker
from .retry import RetryPolicy, Tries

T = TypeVar("T")
Scrub = Callable[[str], str]
"""Removes the API key from a message (``Provider.scrub``)."""

CONNECT_S = 15.0  # seconds to open a connection before the host counts as unreachable
BIG_BODY = 1 << 20  # a body past this is an upload: its timeout bounds silences, not the total


Session = aiohttp.ClientSession
"""The session type, for the layers above that hold one without importing aiohttp."""


def open_session(limit: int | None = None) -> aiohttp.ClientSession:
    """A session; ``limit``: connections open at once (the engine's concurrency)."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300) if limit else None
    return aiohttp.ClientSession(connector=connector, auto_decompress=True)


def request_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """The whole answer within ``seconds``; a host that takes ``CONNECT_S`` to accept a
    connection is not there (a black hole)."""
    return aiohttp.ClientTimeout(total=seconds, sock_connect=min(seconds, CONNECT_S))


def transfer_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """For uploads and downloads that may be hundreds of MB: bound the silences, not the total."""
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


async def exchange(session: aiohttp.ClientSession, method: str, url: str,
                   headers: Mapping[str, str], body: bytes | None, *,
                   timeout: aiohttp.ClientTimeout, scrub: Scrub,
                   what: str = "") -> tuple[int, Mapping[str, str], bytes]:
    """Send one request: (status, headers, body) of whatever the server answered, or a
    ``TransportError`` / ``RequestTimeout``. ``what`` names the request in a timeout's message."""
    try:
        async with session.request(method, url, data=body, headers=headers, timeout=timeout) as resp:
            return resp.status, resp.headers, await resp.read()
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        # the connection never opened: nothing reached the server (and nothing was billed)
        raise errors.TransportError(scrub(f"{type(exc).__name__}: {exc}")) from exc
    except TimeoutError:
        within = f" within {timeout.total:g}s (timeout=)" if timeout.total else " in time"
        raise errors.RequestTimeout(f"no answer{' from ' + what if what else ''}{within}") from None
    except aiohttp.ClientError as exc:
        raise errors.TransportError(scrub(f"{type(exc).__name__}: {exc}")) from None


def never_connected(exc: errors.ProviderError) -> bool:
    """A transport error whose connection never opened (DNS, refused, connect timeout)."""
    return isinstance(exc.__cause__, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))


def breaker_verdict(breaker: CircuitBreaker | None, exc: errors.ProviderError,
                    probe: bool) -> errors.ProviderDown | None:
    """A failed call, told to the breaker. An answer that shows the server up (a 429, a 4xx)
    closes it (a probe that got one must not leave every caller waiting half-open); a retryable
    failure counts, and once the breaker judges the provider down the stop reason comes back."""
    if breaker is None:
        return None
    if isinstance(exc, errors.RateLimitError) or not exc.retryable:
        breaker.on_success()
        return None
    if not breaker.on_failure(probe):
        return None
    return errors.ProviderDown(
        f"the provider is failing: {breaker.consecutive} failures in a row "
        f"and {breaker.failed_probes} failed probes (last: {exc})"
    )


class BatchClient:
    """The batch runner's side of ``providers.base.BatchHTTP``: one session, the retry rules,
    timeouts, and the circuit breaker.

    No pacer: a batch run sends a handful of requests (an upload and a creation per job, then
    polls that back off to minutes apart), and a 429 among them is honoured through its
    Retry-After by the retry rules. The breaker counts the server-side failures of every call
    (a retry included); once it judges the provider down, that call's own failure is raised
    as it is (a creation that timed out may still exist) and every later call fails with
    ``ProviderDown`` without being sent, which stops the run; its jobs keep running and the
    same call run again collects them.
    """

    def __init__(self, provider: Provider, session: aiohttp.ClientSession, timeout: float,
                 retry: RetryPolicy, breaker: CircuitBreaker | None = None) -> None:
        self.provider = provider
        self.session = session
        self.timeout = request_timeout(timeout)
        self.transfer_timeout = transfer_timeout(timeout)
        self.retry = retry
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.down: errors.ProviderDown | None = None

    async def call(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                   parse: Parse[T], *, resend: bool = True) -> T:
        tries = Tries(self.retry)
        big = body is not None and len(body) > BIG_BODY
        while True:
            probe = await self._admit()
            try:
                status, resp_headers, data = await exchange(
                    self.session, method, url, headers, body, scrub=self.provider.scrub,
                    timeout=self.transfer_timeout if big else self.timeout,
                    what=f"{method} {safe_url(url)}")
                result = parse(status, resp_headers, data)
            except errors.ProviderError as exc:
                self._failed(exc, probe)
                delay = tries.wait(exc, resend=resend) if self.down is None else None
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            self.breaker.on_success()
            return result

    async def lines(self, url: str, headers: Mapping[str, str],
                    on_error: Callable[[int, Mapping[str, str], bytes], errors.ProviderError]
                    ) -> AsyncIterator[bytes]:
        """The non-empty lines of a (JSONL) download as they arrive; one attempt (the runner
        reads a download cut short again)."""
        probe = await self._admit()
        try:
            try:
                async with self.session.request("GET", url, headers=headers,
                                                timeout=self.transfer_timeout) as resp:
                    if resp.status >= 400:
                        raise on_error(resp.status, resp.headers, await resp.read())
                    pending: list[bytes] = []
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        if b"\n" not in chunk:
                            pending.append(chunk)
                            continue
                        *complete, rest = b"".join([*pending, chunk]).split(b"\n")
                        pending = [rest]
                        for line in complete:
                            if line.strip():
                                yield line
                    last = b"".join(pending)
                    if last.strip():
                        yield last
            except TimeoutError:
                raise errors.RequestTimeout(f"the download of {safe_url(url)} stalled") from None
            except aiohttp.ClientError as exc:
                raise errors.TransportError(self.provider.scrub(f"{type(exc).__name__}: {exc}")) from None
        except errors.ProviderError as exc:
            self._failed(exc, probe)
            raise
        self.breaker.on_success()

    async def _admit(self) -> bool:
        """Wait for the breaker (True: this call is its probe); ProviderDown once it gave up."""
        if self.down is not None:
            raise self.down
        probe = await self.breaker.admit()
        if self.down is not None:
            raise self.down
        return probe

    def _failed(self, exc: errors.ProviderError, probe: bool) -> None:
        down = breaker_verdict(self.breaker, exc, probe)
        self.down = self.down or down
