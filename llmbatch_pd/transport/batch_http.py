"""The batch runner's HTTP client (``providers.base.BatchHTTP``): one aiohttp session, the
retry policy, timeouts that bound silences rather than the whole of a large upload or
download, and JSONL downloads read line by line as they arrive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TypeVar

import aiohttp

from ..core import errors
from ..core.secrets import safe_url
from ..providers.base import Parse, Provider
from .engine import RetryPolicy

T = TypeVar("T")


class BatchClient:
    """The runner's side of ``providers.base.BatchHTTP``: one session, retries, timeouts."""

    def __init__(self, provider: Provider, session: aiohttp.ClientSession, timeout: float,
                 retry: RetryPolicy) -> None:
        self.provider = provider
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        # Uploads and downloads may be hundreds of MB: bound the silences, not the total.
        self.transfer_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self.retry = retry

    async def call(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                   parse: Parse[T], *, resend: bool = True) -> T:
        attempt = 0
        big = body is not None and len(body) > 1 << 20
        while True:
            try:
                try:
                    async with self.session.request(
                        method, url, data=body, headers=dict(headers),
                        timeout=self.transfer_timeout if big else self.timeout,
                    ) as resp:
                        data = await resp.read()
                        status, resp_headers = resp.status, resp.headers
                except TimeoutError:
                    raise errors.RequestTimeout(f"no answer from {method} {safe_url(url)} in time") from None
                except aiohttp.ClientError as exc:
                    raise errors.TransportError(
                        self.provider.scrub(f"{type(exc).__name__}: {exc}")) from None
                return parse(status, resp_headers, data)
            except errors.ProviderError as exc:
                # Without resend, only what the server clearly refused is sent again: after a
                # timeout or a dropped connection the request may have taken effect.
                unknown = isinstance(exc, (errors.RequestTimeout, errors.TransportError,
                                           errors.MalformedResponse))
                if (not exc.retryable or attempt >= self.retry.max_retries
                        or (unknown and not resend)):
                    raise
                await asyncio.sleep(self.retry.delay(attempt, exc.retry_after))
                attempt += 1

    async def lines(self, url: str, headers: Mapping[str, str],
                    on_error: Callable[[int, Mapping[str, str], bytes], errors.ProviderError]
                    ) -> AsyncIterator[bytes]:
        try:
            async with self.session.get(url, headers=dict(headers), timeout=self.transfer_timeout) as resp:
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
