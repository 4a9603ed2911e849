"""Hardening of the engine (issue 10), checked on the simulator's request log.

Each test waits for events with a deadline (no bare sleeps, no timing asserts). A deadline that
passes means the engine kept sleeping or sending where it should have stopped.
"""

from __future__ import annotations

import asyncio
import socket

import pandas as pd
import pytest

from llmbatch_pd.core import errors
from llmbatch_pd.core.budget import Ledger
from llmbatch_pd.core.schema import OutputSchema
from llmbatch_pd.core.types import Request, Usage
from llmbatch_pd.providers.registry import make_provider, parse_model
from llmbatch_pd.sim import Simulator
from llmbatch_pd.transport.breaker import CircuitBreaker
from llmbatch_pd.transport.engine import Engine, RetryPolicy
from llmbatch_pd.transport.limits import RateLimiter

from ..conftest import KEY, MODEL

DEADLINE = 20.0  # seconds; generous for a loaded 2-core machine, far below what a hang takes


def requests(n, **params):
    return [Request(index=i, messages=[{"role": "user", "content": f"trust row {i}"}],
                    params=dict(params), est_input_tokens=20, max_output_tokens=50)
            for i in range(n)]


def engine_for(base_url, model="openai/gpt-4.1-mini", **options):
    provider = make_provider(parse_model(model), base_url=base_url, api_key=KEY)
    return Engine(provider, **options)


async def wait_until(predicate, deadline=DEADLINE):
    """Poll a condition on the loop, with a deadline."""
    async with asyncio.timeout(deadline):
        while not predicate():
            await asyncio.sleep(0.005)


def settled(sim, n):
    """The simulator has received ``n`` requests and answered all of them."""
    log = sim.log
    return len(log) >= n and all(e["status"] is not None for e in log)


# -- 1. Retry-After: honoured in full, within the row's documented deadline ---------------


BACKOFF_BOUNDS = [(0.375, 0.5), (0.75, 1.0), (1.5, 2.0), (3.0, 4.0), (6.0, 8.0), (6.0, 8.0)]
"""README "What happens on failure": retry n waits 75-100 % of min(0.5 * 2**n, 8) s."""


@pytest.mark.parametrize("attempt", range(len(BACKOFF_BOUNDS)))
def test_backoff_stays_within_the_documented_bounds(attempt):
    low, high = BACKOFF_BOUNDS[attempt]
    policy = RetryPolicy()
    delays = [policy.delay(attempt, None) for _ in range(200)]
    assert low <= min(delays) and max(delays) <= high


@pytest.mark.parametrize("retry_after", [0.05, 2.0, 59.0, 90.0, 299.0])
def test_retry_after_is_honoured_never_undercut_at_most_a_quarter_second_more(retry_after):
    policy = RetryPolicy()
    delays = [policy.delay(0, retry_after) for _ in range(200)]
    assert retry_after <= min(delays) and max(delays) <= retry_after + 0.25


def test_a_retry_after_past_the_rows_deadline_fails_the_row_at_once_saying_why():
    async def main():
        with Simulator(ttft_ms=1, fault_429=1.0, fault_retry_after_s=400) as sim:
            engine = engine_for(sim.base_url)
            outcomes = {}
            await asyncio.wait_for(
                engine.run(requests(1), lambda r, reply, exc: outcomes.update({r.index: exc})),
                DEADLINE)
            return len(sim.log), outcomes

    sent, outcomes = asyncio.run(main())
    assert sent == 1  # not sent early into a certain refusal
    reason = str(outcomes[0])
    assert "429" in reason and "Retry-After" in reason and "300" in reason


# -- 3. stop / cancel: sleepers wake at once, nothing is sent after -----------------------


def test_stop_wakes_workers_asleep_in_the_pacer_and_nothing_more_is_sent():
    async def main():
        with Simulator(ttft_ms=1) as sim:
            engine = engine_for(sim.base_url, concurrency=16, limiter=RateLimiter(rpm=30))
            outcomes = {}
            task = asyncio.ensure_future(
                engine.run(requests(40), lambda r, reply, exc: outcomes.update({r.index: exc})))
            await wait_until(lambda: settled(sim, 2) and engine.stats.in_flight == 0)
            engine.stop(errors.RowError("cancelled by the user", kind="cancelled"))
            at_stop = len(sim.log)
            await asyncio.wait_for(task, DEADLINE)
            return at_stop, len(sim.log), outcomes

    at_stop, at_end, outcomes = asyncio.run(main())
    assert at_end == at_stop
    unsent = [str(e) for e in outcomes.values() if e is not None]
    assert unsent and all(r == "not sent: cancelled by the user" for r in unsent)


def test_job_cancel_on_a_paced_background_run_sends_nothing_more_and_ends(sim, llm):
    df = pd.DataFrame({"t": [f"paced row {i}" for i in range(60)]})
    job = df.llm.submit("{t}", rpm=30, concurrency=16, **llm)

    async def answered_two():
        await wait_until(lambda: settled(sim, 2))

    asyncio.run(answered_two())
    job.cancel()
    at_cancel = len(sim.log)
    assert job.wait(DEADLINE), "the job did not end after cancel()"
    assert job.done()
    assert len(sim.log) == at_cancel
    out = job.result()
    assert out["llm_output"].notna().sum() == at_cancel


def test_429s_do_not_use_up_max_retries_a_refusal_longer_than_the_backoffs_loses_no_row(sim, llm):
    """A gateway refusing everything until its window turns (LiteLLM's calendar minute) may
    refuse longer than max_retries backoffs last: the rows wait for the limit, none fails."""
    sim.configure(fault_429=1.0, fault_retry_after_s=0.01)
    df = pd.DataFrame({"t": [f"limited row {i}" for i in range(8)]})
    job = df.llm.submit("{t}", max_retries=1, concurrency=4, **llm)

    async def refused_many_times():  # far more 429s than 8 rows x (1 + max_retries=1) attempts
        await wait_until(lambda: sum(e["status"] == 429 for e in sim.log) >= 24)

    asyncio.run(refused_many_times())
    sim.configure(fault_429=0.0)  # the window turns
    assert job.wait(DEADLINE), "the job did not end once the limit let requests through"
    out = job.result()
    assert out["llm_output_error"].isna().all(), out["llm_output_error"].tolist()
    assert sum(e["status"] == 200 for e in sim.log) == 8  # each row answered, and paid, once


def test_stop_wakes_a_row_waiting_in_retry_backoff_and_it_keeps_its_own_failure():
    async def main():
        with Simulator(ttft_ms=1, fault_5xx=1.0) as sim:
            engine = engine_for(sim.base_url, retry=RetryPolicy(base=60.0, cap=60.0))
            outcomes = {}
            task = asyncio.ensure_future(
                engine.run(requests(1), lambda r, reply, exc: outcomes.update({r.index: exc})))
            await wait_until(lambda: engine.stats.retrying == 1)
            engine.stop(errors.RowError("cancelled by the user", kind="cancelled"))
            await asyncio.wait_for(task, DEADLINE)
            return len(sim.log), outcomes

    sent, outcomes = asyncio.run(main())
    assert sent == 1
    reason = str(outcomes[0])
    assert reason.startswith("HTTP 5") and "cancelled by the user" in reason


# -- 4. the same failure on the first answers stops the run ------------------------------


def test_an_unknown_model_costs_a_few_requests_not_every_row():
    async def main():
        with Simulator(ttft_ms=1, unknown_model_404=True) as sim:
            engine = engine_for(sim.base_url, model="openai/gpt-9-nonexistent", concurrency=64)
            outcomes = {}
            await asyncio.wait_for(
                engine.run(requests(300), lambda r, reply, exc: outcomes.update({r.index: exc})),
                DEADLINE)
            return engine, [e["status"] for e in sim.log], outcomes

    engine, statuses, outcomes = asyncio.run(main())
    assert statuses == [404, 404, 404]  # the bound is 10
    assert isinstance(engine.stopped, errors.RepeatedFailure) and engine.stopped.fatal
    assert "model_not_found" in str(engine.stopped) or "does not exist" in str(engine.stopped)
    # the rows that were sent keep the server's own answer
    assert all("404" in str(outcomes[i]) for i in range(3))


def test_the_same_400_on_every_first_row_stops_the_run():
    # a parameter the server refuses for every row (like a gateway's "No connected db")
    async def main():
        with Simulator(ttft_ms=1) as sim:
            engine = engine_for(sim.base_url)
            await asyncio.wait_for(
                engine.run(requests(300, temperature=2.5), lambda *a: None), DEADLINE)
            return engine, len(sim.log)

    engine, sent = asyncio.run(main())
    assert sent == 3
    assert isinstance(engine.stopped, errors.RepeatedFailure) and "400" in str(engine.stopped)


def test_a_400_on_one_row_among_good_ones_stays_that_rows_error():
    async def main():
        with Simulator(ttft_ms=1) as sim:
            engine = engine_for(sim.base_url)
            batch = requests(30)
            for i in (0, 1, 2, 10, 20):  # the first three too: distinct answers are not a pattern
                batch[i].params["temperature"] = 2.5 + i
            outcomes = {}
            await asyncio.wait_for(
                engine.run(batch, lambda r, reply, exc: outcomes.update({r.index: exc})), DEADLINE)
            return engine, len(sim.log), outcomes

    engine, sent, outcomes = asyncio.run(main())
    assert engine.stopped is None and sent == 30
    assert sorted(i for i, e in outcomes.items() if e is not None) == [0, 1, 2, 10, 20]


# -- 5. a server that ignores structured output -----------------------------------------


def test_a_server_ignoring_response_format_stops_after_a_few_unusable_rows():
    schema = OutputSchema.from_user({"label": str, "score": int})

    async def main():
        # the gateway drops response_format: the answers come back as prose
        with Simulator(ttft_ms=1) as sim:
            engine = engine_for(sim.base_url, check=schema.check, max_invalid=2)
            outcomes = {}
            await asyncio.wait_for(
                engine.run(requests(300), lambda r, reply, exc: outcomes.update({r.index: exc})),
                DEADLINE)
            return engine, len(sim.log), outcomes

    engine, sent, outcomes = asyncio.run(main())
    assert sent == 9  # 3 rows, each asked 1 + 2 times
    assert isinstance(engine.stopped, errors.StructuredOutputIgnored)
    assert "structured output" in str(engine.stopped)


# -- 6. a host that cannot be reached ----------------------------------------------------


def closed_port() -> int:
    """A loopback port that was bound and closed: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_host_raises_at_once_naming_the_url_not_the_key():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    engine = engine_for(url)
    outcomes = {}

    async def main():
        await asyncio.wait_for(
            engine.run(requests(50), lambda r, reply, exc: outcomes.update({r.index: exc})),
            DEADLINE)

    asyncio.run(main())
    stop = engine.stopped
    assert isinstance(stop, errors.HostUnreachable) and stop.fatal
    assert url in str(stop) and KEY not in str(stop)
    assert list(outcomes) == [0]  # the first row alone, tried twice; the rest never pulled
    assert engine.stats.sent == 2


# -- 7. the budget ledger under cancellation ---------------------------------------------


def price(usage: Usage) -> float:
    """A made-up price: $1 per million input tokens, $2 per million output tokens."""
    return usage.input_tokens * 1e-6 + usage.output_tokens * 2e-6


def test_cancel_while_requests_wait_in_the_pacer_leaks_no_hold():
    async def main():
        with Simulator(ttft_ms=1) as sim:
            ledger = Ledger(1.0, price)
            engine = engine_for(sim.base_url, concurrency=16, limiter=RateLimiter(rpm=60),
                                ledger=ledger, worst_cost=lambda r: 0.01)
            task = asyncio.ensure_future(engine.run(requests(40), lambda *a: None))
            await wait_until(lambda: settled(sim, 3) and engine.stats.in_flight == 0)
            task.cancel()  # Ctrl+C: workers are asleep in the pacer
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, DEADLINE)
            return ledger, sim.log

    ledger, log = asyncio.run(main())
    assert ledger.holds == 0 and ledger.reserved == 0
    assert all(e["status"] == 200 for e in log)
    billed = sum(e["prompt_tokens"] * 1e-6 + e["completion_tokens"] * 2e-6 for e in log)
    assert ledger.committed == pytest.approx(billed, rel=1e-9, abs=1e-12)


def test_a_request_in_flight_at_cancel_keeps_its_worst_case():
    async def main():
        with Simulator(ttft_ms=60_000) as sim:  # the first answer never comes in time
            ledger = Ledger(1.0, price)
            engine = engine_for(sim.base_url, ledger=ledger, worst_cost=lambda r: 0.01)
            task = asyncio.ensure_future(engine.run(requests(5), lambda *a: None))
            await wait_until(lambda: sim.stats()["in_flight"] == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, DEADLINE)
            return ledger, sim.stats()["max_in_flight"]

    ledger, sent = asyncio.run(main())
    assert sent == 1 and ledger.holds == 0
    assert ledger.committed == pytest.approx(0.01)  # may be billed: kept, exactly once


# -- 8. after a circuit-breaker stop every row keeps its own reason ----------------------


def test_rows_sent_before_a_breaker_stop_keep_their_own_failure():
    async def main():
        with Simulator(ttft_ms=2, capture_requests=1000) as sim:
            engine = engine_for(
                sim.base_url, concurrency=8,
                breaker=CircuitBreaker(threshold=10, cooldown=0.05, max_probes=2),
                retry=RetryPolicy(max_retries=3, base=0.05, cap=0.1))
            outcomes = {}
            batch = requests(400)
            task = asyncio.ensure_future(
                engine.run(batch, lambda r, reply, exc: outcomes.update({r.index: exc})))
            await wait_until(lambda: engine.stats.done >= 1)
            sim.configure(fault_5xx=1.0)  # the provider goes down once the pool is open
            await asyncio.wait_for(task, DEADLINE)
            sent = {c["body"]["messages"][0]["content"] for c in sim.captured}
            return engine, batch, sent, outcomes

    engine, batch, sent, outcomes = asyncio.run(main())
    assert isinstance(engine.stopped, errors.ProviderDown)
    was_sent = {r.index for r in batch if r.messages[0]["content"] in sent}
    assert sum(exc is not None for i, exc in outcomes.items() if i in was_sent) > 1
    for i, exc in outcomes.items():
        if exc is None:
            continue
        if i in was_sent:
            assert str(exc).startswith("HTTP 5"), str(exc)
        else:
            assert str(exc).startswith("not sent: the provider is failing"), str(exc)


def test_fault_free_run_is_untouched(sim):
    out = pd.DataFrame({"t": ["a", "b", "c"]}).llm.apply(
        "{t}", model=MODEL, base_url=sim.base_url, api_key=KEY, progress=False)
    assert out["llm_output"].notna().all() and len(sim.log) == 3
