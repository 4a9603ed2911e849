"""The one send path (transport/http.py): the batch client follows the engine's retry rules
and has its circuit breaker."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from llmbatch_pd.core import errors
from llmbatch_pd.providers.registry import make_provider, parse_model
from llmbatch_pd.transport.breaker import CircuitBreaker
from llmbatch_pd.transport.http import BatchClient
from llmbatch_pd.transport.retry import RetryPolicy, Tries

from ..conftest import KEY


async def _serve(answers: list[web.Response]) -> tuple[web.AppRunner, str, list[str]]:
    """A server answering each request with the next of ``answers`` (the last one repeats)."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.path)
        answer = answers[min(len(seen), len(answers)) - 1]
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/v1", seen


def _client(base_url: str, session: aiohttp.ClientSession, **options) -> tuple[BatchClient, object]:
    provider = make_provider(parse_model("openai/gpt-4.1-mini"), base_url=base_url, api_key=KEY)
    return BatchClient(provider, session, 5.0, **options), provider


def test_the_batch_path_stops_once_the_breaker_judges_the_provider_down() -> None:
    async def main() -> None:
        runner, url, seen = await _serve([web.Response(status=503, body=b'{"error": {"message": "down"}}')])
        try:
            async with aiohttp.ClientSession() as session:
                client, p = _client(url, session, retry=RetryPolicy(max_retries=20, base=0.001, cap=0.002),
                                    breaker=CircuitBreaker(threshold=3, cooldown=0.01, max_probes=1))
                with pytest.raises(errors.ServerError):  # the call's own failure, as it is
                    await client.call("GET", f"{url}/batches/b1", {}, None, p._parse_object)
                sent = len(seen)
                assert sent == 4  # 3 in a row open the circuit; the probe fails: down
                with pytest.raises(errors.ProviderDown, match="the provider is failing"):
                    await client.call("GET", f"{url}/batches/b1", {}, None, p._parse_object)
                assert len(seen) == sent  # nothing more is sent
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_batch_calls_honour_retry_after_and_429s_do_not_use_max_retries() -> None:
    limited = web.Response(status=429, body=b'{"error": {"message": "slow down"}}',
                           headers={"retry-after": "0.2"})
    ok = web.Response(status=200, body=b'{"id": "b1", "status": "in_progress"}')

    async def main() -> None:
        runner, url, seen = await _serve([limited, limited, ok])
        try:
            async with aiohttp.ClientSession() as session:
                client, p = _client(url, session, retry=RetryPolicy(max_retries=0))
                started = asyncio.get_running_loop().time()
                job = await client.call("GET", f"{url}/batches/b1", {}, None, p._parse_object)
                assert job["id"] == "b1" and len(seen) == 3
                assert asyncio.get_running_loop().time() - started >= 0.4  # each wait in full
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_a_request_that_may_have_taken_effect_is_not_resent_unless_allowed() -> None:
    tries = Tries(RetryPolicy(max_retries=3))
    assert tries.wait(errors.RequestTimeout("no answer"), resend=False) is None
    assert tries.wait(errors.ServerError("HTTP 503", status=503), resend=False) is not None
    assert tries.wait(errors.RequestTimeout("no answer")) is not None
    assert tries.wait(errors.BadRequestError("HTTP 400", status=400)) is None
