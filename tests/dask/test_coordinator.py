"""The run coordinator on a real LocalCluster: partitions send with the real engine over
loopback HTTP to the simulator, paced, budgeted and stopped by the scheduler plugin. Every
figure is checked against the simulator's request log (arrival times, statuses, tokens), not
the coordinator's own counters."""

import asyncio
import os
import signal
import uuid

import pytest

from llmbatch_pd.core import errors
from llmbatch_pd.core.types import Request
from llmbatch_pd.dask import coordinator as co
from llmbatch_pd.dask import remote
from llmbatch_pd.providers.registry import make_provider, parse_model
from llmbatch_pd.sim import Simulator
from llmbatch_pd.transport.engine import Engine, RetryPolicy
from tests.conftest import MODEL, PRICES_PER_MTOK, bill, wait_until

KEY = "sk-dask-test-0123456789"
PRICE_IN, PRICE_OUT = PRICES_PER_MTOK["gpt-4.1-mini"]


def price(usage):
    """Dollars of an answer at the list price typed into tests/conftest.py."""
    return (usage.input_tokens * PRICE_IN + usage.output_tokens * PRICE_OUT) / 1e6


def send_partition(run_id, base_url, indices, *, api_key=KEY, price=price, worst=1e-4,
                   concurrency=4, max_tokens=None, retries=None, tokens=0):
    """What a partition task does: the engine with the coordinator's limiter, breaker and
    ledger (bound as ``BaseRun._start`` binds them), over its rows."""
    provider = make_provider(parse_model(MODEL), base_url=base_url, api_key=api_key)
    params = {"max_tokens": max_tokens} if max_tokens else {}
    with remote.coordinated(run_id, price=price, worst_cost=worst) as (shared, ledger):
        engine = Engine(provider, concurrency=concurrency, limiter=shared.limiter,
                        breaker=shared.breaker, ledger=ledger, worst_cost=lambda r: worst,
                        retry=RetryPolicy(max_retries=retries, base=0.01) if retries else None)
        shared.on_engine(engine)
        answered = []
        requests = (Request(index=i, messages=[{"role": "user", "content": f"dask row {i}"}],
                            params=params, est_input_tokens=tokens) for i in indices)
        asyncio.run(engine.run(requests, lambda r, reply, exc: reply and answered.append(r.index)))
    return {"answered": len(answered),
            "stopped": type(engine.stopped).__name__ if engine.stopped else None}


def open_run(client, **limits):
    run_id = uuid.uuid4().hex
    co.open_run(client, co.RunLimits(run_id, **limits))
    return run_id


def partitions(client, run_id, sim, n_parts, rows, **options):
    return [client.submit(send_partition, run_id, sim.base_url, range(p * rows, (p + 1) * rows),
                          pure=False, **options) for p in range(n_parts)]


def arrivals(sim, status=None):
    return sorted(e["t"] for e in sim.log if e["path"].endswith("/chat/completions")
                  and (status is None or e["status"] == status))


def most_in_any_window(times, window):
    """The most requests the simulator saw arrive within any ``window`` seconds."""
    most, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > window:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


def test_workers_share_one_told_pace(process_client):
    """4 partitions on 2 worker processes, told 2,400 requests a minute: together they stay
    under it (each pacing alone would send 4 times as fast)."""
    with Simulator(ttft_ms=20) as sim:
        run_id = open_run(process_client, rpm=2400)
        results = process_client.gather(partitions(process_client, run_id, sim, 4, 40, concurrency=8))
        times = arrivals(sim)
        counts = co.close_run(process_client, run_id)
    assert sum(r["answered"] for r in results) == 160 and len(times) == 160
    rate = 2400 / 60
    assert (len(times) - 1) / (times[-1] - times[0]) <= rate * 1.05
    # bursts: the pacer's 0.1 s allowance plus a slot sent up to 0.1 s late
    assert most_in_any_window(times, 1.0) <= rate * 1.2 + 2
    assert counts["coordination_calls"] > 0 and counts["answered"] == 160


def test_workers_share_one_told_token_pace(threads_client):
    """Told 120,000 tokens a minute, requests expected to use 50 tokens each: together the
    partitions send at most 40 a second plus the token pacer's one-second burst (pacers of
    their own would each take that burst, and each the whole rate)."""
    with Simulator(ttft_ms=10) as sim:
        run_id = open_run(threads_client, tpm=120_000)
        results = threads_client.gather(
            partitions(threads_client, run_id, sim, 4, 30, concurrency=8, tokens=50))
        times = arrivals(sim)
        co.close_run(threads_client, run_id)
    assert sum(r["answered"] for r in results) == 120 == len(times)
    per_s = 120_000 / 60 / 50
    assert most_in_any_window(times, 1.0) <= per_s * (1.0 + 1.0 + 0.2) + 2


def test_a_limit_learned_by_one_worker_paces_all(process_client):
    """Not told the limit: the provider's headers, heard by any worker, pace the cluster, so
    hardly any request is refused."""
    with Simulator(ttft_ms=20, rpm=2400) as sim:
        run_id = open_run(process_client)
        results = process_client.gather(partitions(process_client, run_id, sim, 4, 40, concurrency=8))
        refused, answered = len(arrivals(sim, 429)), len(arrivals(sim, 200))
        counts = co.close_run(process_client, run_id)
    assert sum(r["answered"] for r in results) == 160 == answered
    assert refused <= 0.05 * (answered + refused)
    assert counts["learned_from"] == "headers"


def test_budget_holds_across_workers_when_answers_grow(threads_client):
    """Answers grow to max_tokens after the first 60 requests: the partitions together spend
    no more than the budget (the bill computed by hand from the simulator's log), and at
    least half of it."""
    budget, max_tokens = 0.02, 200
    worst = (60 * PRICE_IN + max_tokens * PRICE_OUT) / 1e6  # prompts are ~10 tokens
    with Simulator(ttft_ms=10, answer_tokens=40) as sim:
        run_id = open_run(threads_client, budget=budget, worst_cost=worst)
        futures = partitions(threads_client, run_id, sim, 4, 100, worst=worst, max_tokens=max_tokens)
        wait_until(lambda: len(sim.log) >= 60, 60, "the first 60 answers")
        sim.configure(answer_tokens=400)  # cut at max_tokens from now on
        results = threads_client.gather(futures)
        spent_by_hand = bill(sim.log)
        sent = len(arrivals(sim))
        counts = co.close_run(threads_client, run_id)
    assert budget / 2 <= spent_by_hand <= budget
    assert sent < 400  # the budget stopped the run
    assert {r["stopped"] for r in results} == {"BudgetReached"}
    assert isinstance(co.stop_error(counts), errors.BudgetReached)
    assert counts["spent"] + counts["uncertain"] <= budget + 1e-12


def test_a_killed_workers_reservation_stays_counted(process_client):
    """A worker dies with a request in flight: its reservation is never given back, so the
    partition's re-run gets one request fewer out of the budget."""
    worst = 0.001
    with Simulator(ttft_ms=5, fault_hang=1.0, hang_seconds=120) as sim:
        run_id = open_run(process_client, budget=10 * worst, worst_cost=worst)
        victim = next(iter(process_client.scheduler_info()["workers"]))
        future = process_client.submit(send_partition, run_id, sim.base_url, range(20),
                                       price=lambda usage: worst, worst=worst, pure=False,
                                       workers=[victim], allow_other_workers=True)
        wait_until(lambda: sim.stats()["in_flight"] >= 1, 60, "a request in flight")
        sim.configure(fault_hang=0.0)  # the re-run's requests are answered
        pid = process_client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: co.counters(process_client, run_id)["lost_workers"] >= 1, 60,
                   "the scheduler to lose the worker")
        result = future.result(timeout=120)
        answered = len(arrivals(sim, 200))
        counts = co.close_run(process_client, run_id)
    assert answered == 9 == result["answered"]  # 10 requests' worth, one held by the dead
    assert result["stopped"] == "BudgetReached"
    assert counts["uncertain"] >= worst - 1e-12


def test_one_workers_bad_key_stops_every_worker(process_client):
    """Two partitions are sending; a third answers 401 (a revoked key): all stop within a
    wave, with the authentication error."""
    with Simulator(ttft_ms=10, api_key=KEY) as sim:
        run_id = open_run(process_client, rpm=600)
        good = partitions(process_client, run_id, sim, 2, 100)
        wait_until(lambda: len(arrivals(sim, 200)) >= 5, 60, "the good partitions to send")
        bad = process_client.submit(send_partition, run_id, sim.base_url, range(1000, 1010),
                                    api_key="sk-revoked-000000000000", pure=False)
        results = process_client.gather([*good, bad])
        refused = arrivals(sim, 401)
        after = [t for t in arrivals(sim, 200) if t > refused[0]]
        counts = co.close_run(process_client, run_id)
    assert len(refused) == 1
    assert {r["stopped"] for r in results} == {"AuthenticationError"}
    assert len(after) <= 2 * 4  # at most a wave of each good partition's concurrency
    assert isinstance(co.stop_error(counts), errors.AuthenticationError)


def test_an_exhausted_quota_stops_every_worker(threads_client):
    """The account runs out of quota after 40 answers: the partition that hears it first
    stops all four, so the refused requests are at most a wave (each partition's concurrency
    once), not every remaining row."""
    with Simulator(ttft_ms=10, quota_requests=40) as sim:
        run_id = open_run(threads_client, rpm=1200)
        results = threads_client.gather(partitions(threads_client, run_id, sim, 4, 50))
        refused = len(arrivals(sim, 429))
        counts = co.close_run(threads_client, run_id)
    assert {r["stopped"] for r in results} == {"QuotaExceededError"}
    assert sum(r["answered"] for r in results) == 40
    assert 1 <= refused <= 4 * 4
    assert isinstance(co.stop_error(counts), errors.QuotaExceededError)


def test_the_breaker_counts_every_workers_failures(threads_client):
    """A provider failing every request: the failures of 4 partitions add up in one breaker,
    which probes once at a time for the cluster and then stops every partition. Breakers of
    their own would each need threshold + probes failures (4 x 13 = 52 requests)."""
    with Simulator(ttft_ms=5, fault_5xx=1.0) as sim:
        run_id = open_run(threads_client, breaker_threshold=10, breaker_cooldown=0.05,
                          breaker_probes=3)
        results = threads_client.gather(partitions(threads_client, run_id, sim, 4, 50, retries=1))
        sent = len(arrivals(sim))
        counts = co.close_run(threads_client, run_id)
    assert {r["stopped"] for r in results} == {"ProviderDown"}
    assert isinstance(co.stop_error(counts), errors.ProviderDown)
    assert sent < 4 * 13


def _report(run_id, items):
    remote.report_answers(run_id, items)
    return True


def _known(run_id, keys):
    return remote.known_answers(run_id, keys)


def test_answers_reach_the_driver_once_and_reruns_find_them(threads_client):
    run_id = open_run(threads_client)
    items = [(f"k{i}", {"text": f"answer {i}", "usage": {"input_tokens": i}}) for i in range(5)]
    assert threads_client.submit(_report, run_id, items[:3], pure=False).result()
    assert threads_client.submit(_report, run_id, items[3:], pure=False).result()
    known = threads_client.submit(_known, run_id, ["k1", "k4", "missing"], pure=False).result()
    assert known == {"k1": items[1][1], "k4": items[4][1]}
    assert sorted(co.take_answers(threads_client, run_id)) == sorted(items)
    assert co.take_answers(threads_client, run_id) == []
    co.close_run(threads_client, run_id)
    with pytest.raises(KeyError):
        co.counters(threads_client, run_id)


def test_a_stop_from_the_driver_stops_the_partitions(threads_client):
    with Simulator(ttft_ms=10) as sim:
        run_id = open_run(threads_client, rpm=600)
        futures = partitions(threads_client, run_id, sim, 2, 100)
        wait_until(lambda: len(sim.log) >= 3, 60, "the partitions to send")
        co.stop_run(threads_client, run_id, "cancelled by the test")
        results = threads_client.gather(futures)
        sent = len(sim.log)
        co.close_run(threads_client, run_id)
    assert {r["stopped"] for r in results} == {"RowError"}
    assert sent < 40


def test_a_partition_without_a_coordinator_refuses_to_send():
    """No budget or pace to follow: shared_parts says so instead of sending unbounded."""
    import distributed

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        with pytest.raises(RuntimeError, match="open_run"):
            client.submit(remote.shared_parts, "never-opened", pure=False).result()
