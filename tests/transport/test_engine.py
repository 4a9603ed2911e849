"""The engine alone (no pandas): plain async Python over requests, against the simulator."""

import asyncio

from llmbatch_pd.core import errors
from llmbatch_pd.core.types import Request
from llmbatch_pd.providers.registry import make_provider, parse_model
from llmbatch_pd.sim import Simulator
from llmbatch_pd.transport.breaker import CircuitBreaker
from llmbatch_pd.transport.engine import Engine, EngineStats, RetryPolicy

KEY = "sk-engine-test"


def requests(n):
    return (Request(index=i, messages=[{"role": "user", "content": f"engine row {i}"}]) for i in range(n))


def run(sim, n, **engine_options):
    provider = make_provider(parse_model("openai/gpt-4.1-mini"), base_url=sim.base_url, api_key=KEY)
    outcomes = {}

    def on_done(request, reply, exc):
        outcomes[request.index] = reply.text if reply else exc

    engine = Engine(provider, **engine_options)
    asyncio.run(engine.run(requests(n), on_done))
    return engine, outcomes


def test_bounded_pool_never_exceeds_concurrency():
    with Simulator(ttft_ms=20) as sim:
        engine, out = run(sim, 300, concurrency=17)
        assert sim.stats()["max_in_flight"] <= 17
    assert len(out) == 300 and all(isinstance(v, str) for v in out.values())
    assert engine.stats.done == 300 and engine.stats.in_flight == 0


def test_circuit_breaker_stops_a_provider_that_stays_down():
    with Simulator(ttft_ms=5, fault_5xx=1.0) as sim:
        breaker = CircuitBreaker(threshold=10, cooldown=0.1, max_probes=3)
        engine, out = run(sim, 500, concurrency=8, breaker=breaker, retry=RetryPolicy(max_retries=1, base=0.01))
        sent = len(sim.log)
    assert isinstance(engine.stopped, errors.ProviderDown)
    assert "failures in a row" in engine.stats.stop_reason
    assert sent < 60  # it stopped hammering: nowhere near 500 x 2 attempts
    assert len(out) < 500  # rows never pulled are left to the caller to mark


def test_circuit_breaker_resumes_when_the_provider_recovers():
    """The provider recovers once the breaker has opened (an event, not a moment in time):
    the probes find it back and every row is answered."""
    with Simulator(ttft_ms=5, fault_5xx=1.0) as sim:
        provider = make_provider(parse_model("openai/gpt-4.1-mini"), base_url=sim.base_url, api_key=KEY)
        breaker = CircuitBreaker(threshold=5, cooldown=0.2, max_probes=5)
        engine = Engine(provider, concurrency=8, breaker=breaker,
                        retry=RetryPolicy(max_retries=8, base=0.01, cap=0.05))
        out = {}

        async def scenario():
            task = asyncio.ensure_future(engine.run(
                requests(200), lambda r, reply, exc: out.__setitem__(r.index, reply.text if reply else exc)))
            deadline = asyncio.get_running_loop().time() + 30
            while breaker.opened < 1:
                assert asyncio.get_running_loop().time() < deadline, "the breaker never opened"
                assert not task.done(), "the run ended before the breaker opened"
                await asyncio.sleep(0.005)
            sim.configure(fault_5xx=0.0)
            await task

        asyncio.run(scenario())
    assert engine.stopped is None
    assert breaker.opened >= 1 and breaker.state == "closed"
    assert sum(isinstance(v, str) for v in out.values()) == 200


def test_stats_count_fault_kinds():
    with Simulator(ttft_ms=5, fault_429=0.2, fault_retry_after_s=0.05, seed=2) as sim:
        stats = EngineStats()
        engine, out = run(sim, 200, concurrency=20, stats=stats)
    assert stats.by_kind["429"] > 10 and stats.done == 200 and stats.sent == 200 + stats.by_kind["429"]


# backoff and Retry-After: checked against the README's documented bounds in test_trust_engine.py


def test_a_probe_answered_429_closes_the_breaker():
    """The breaker's probe gets a 429 (the server is up, only busy): the breaker closes and
    the run goes on. Before, nothing closed it and every worker waited half-open for ever."""
    with Simulator(ttft_ms=5, fault_5xx=1.0) as sim:
        provider = make_provider(parse_model("openai/gpt-4.1-mini"), base_url=sim.base_url, api_key=KEY)
        breaker = CircuitBreaker(threshold=5, cooldown=0.05, max_probes=5)
        engine = Engine(provider, concurrency=8, breaker=breaker,
                        retry=RetryPolicy(max_retries=8, base=0.01, cap=0.05))
        out = {}

        async def until(what, done):
            deadline = asyncio.get_running_loop().time() + 30
            while not done():
                assert asyncio.get_running_loop().time() < deadline, what
                await asyncio.sleep(0.005)

        async def scenario():
            task = asyncio.ensure_future(engine.run(
                requests(50), lambda r, reply, exc: out.__setitem__(r.index, reply.text if reply else exc)))
            await until("the breaker never opened", lambda: breaker.opened >= 1)
            refused = sum(e["status"] == 429 for e in sim.log)
            sim.configure(fault_5xx=0.0, fault_429=1.0, fault_retry_after_s=0.01)
            await until("no probe was answered 429", lambda: sum(e["status"] == 429 for e in sim.log) > refused)
            sim.configure(fault_429=0.0)
            await asyncio.wait_for(task, 60)

        asyncio.run(scenario())
    assert engine.stopped is None and breaker.state == "closed"
    assert sum(isinstance(v, str) for v in out.values()) == 50
