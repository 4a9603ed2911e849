"""Servers that say nothing about their limits (vLLM, many gateways, LiteLLM's proxy): what an
independent client (the openai SDK) sees of them, and how our client copes with only 429s,
over HTTP (the simulator's request log) and against an injected clock."""

from __future__ import annotations

import math

import openai
import pandas as pd
import pytest

import llmbatch_pd  # noqa: F401  (registers df.llm)
from llmbatch_pd.sim import Simulator
from llmbatch_pd.transport.limits import RateLimiter

KEY = "sk-test-0123456789"


CHAT = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hi"}]}


def limit_headers(headers: dict[str, str]) -> list[str]:
    return [k for k in headers if k.startswith(("x-ratelimit-", "anthropic-ratelimit-"))]


def test_openai_sdk_sees_neither_headers_nor_retry_after() -> None:
    with Simulator(
        ttft_ms=0, rpm=60, api_key=KEY, rate_limit_headers=False, retry_after_on_429=False
    ) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(**CHAT)
        assert raw.http_response.status_code == 200
        assert limit_headers({k.lower(): v for k, v in raw.headers.items()}) == []
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(**CHAT)
        headers = {k.lower() for k in caught.value.response.headers}
        assert not headers & {"retry-after", "retry-after-ms"} and limit_headers(dict.fromkeys(headers)) == []


def paced_run(sim: Simulator, n: int, concurrency: int = 32) -> pd.DataFrame:
    df = pd.DataFrame({"t": [f"gateway row {i}" for i in range(n)]})
    return df.llm.apply("{t}", model="openai/gpt-4.1-mini", base_url=sim.base_url, api_key=KEY,
                        progress=False, concurrency=concurrency, cache=False)


def test_a_headerless_calendar_window_is_paced_with_few_429s_after_the_first_window() -> None:
    # A gateway counting per fixed calendar window (LiteLLM: rpm per calendar minute), here
    # 30 requests per 2 s, telling nothing but a bare 429.
    with Simulator(ttft_ms=20, rpm=900, fixed_window_s=2.0, rate_limit_headers=False,
                   retry_after_on_429=False, api_key=KEY) as sim:
        out = paced_run(sim, 150)
        log = sim.log
    assert out["llm_output"].notna().all()  # every row answered, none failed
    ok = [e for e in log if e["status"] == 200]
    refused = [e for e in log if e["status"] == 429]
    assert len(ok) == 150
    first = min(e["t"] for e in log)
    late = [e for e in refused if e["t"] > first + 2.0]
    # after the first window: a block to find the reset, a few probes; not a 429 per row
    assert len(late) <= 40, f"{len(late)} 429s after the first window"


def test_a_headerless_refilling_limit_still_answers_every_row() -> None:
    with Simulator(ttft_ms=20, rpm=1200, rate_limit_headers=False, retry_after_on_429=False,
                   api_key=KEY) as sim:
        out = paced_run(sim, 150)
        statuses = [e["status"] for e in sim.log]
    assert out["llm_output"].notna().all()
    # most 429s come in the first second (32 in flight meet a 20-request bucket) and while
    # the pace is found; a loaded machine makes the client's timing noisy: a loose bound
    assert statuses.count(200) == 150 and statuses.count(429) <= 150


# -- the limiter with nothing but 429s to learn from (injected clock, no sleeping) ----------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def overdriven(lim: RateLimiter, clock: Clock, served: float = 50.0, sent: float = 200.0) -> None:
    """2 s within a limit of ``served``/s, then ``sent``/s against it until the limiter cuts."""
    for _ in range(int(2 * served)):
        clock.now += 1 / served
        lim.reserve(1)
        lim.on_success()
    every = round(sent / served)
    i = 0
    while lim.learned_from != "429s":
        clock.now += 1 / sent
        lim.reserve(1)
        if i % every == 0:
            lim.on_success()
        else:
            lim.on_rate_limited(None)  # a bare 429: the status is all we get
        i += 1
        assert i < 1000


def calm(lim: RateLimiter, clock: Clock, seconds: float, rate: float = 50.0) -> None:
    for _ in range(int(seconds * rate)):
        clock.now += 1 / rate
        lim.reserve(1)
        lim.on_success()


def test_pressure_paces_just_under_what_the_server_served() -> None:
    clock = Clock()
    lim = RateLimiter(clock=clock)
    overdriven(lim, clock)
    # 200/s sent, 50/s served: pace at 95 % of the served rate, not at 70 % of the sent one
    assert lim.requests.rate == pytest.approx(0.95 * 50, rel=0.05)
    assert lim.ceiling == pytest.approx(lim.requests.rate)
    assert lim.reserve(1) == pytest.approx(1.0, abs=0.11)  # a bare 429: everyone waits 1 s once


def test_probing_above_the_ceiling_is_slow_and_steps_back_at_a_429() -> None:
    clock = Clock()
    lim = RateLimiter(clock=clock)
    overdriven(lim, clock)
    ceiling = lim.ceiling
    assert ceiling is not None
    calm(lim, clock, 1.0)  # the 1 s pause: no growth yet
    assert lim.requests.rate == pytest.approx(ceiling)
    calm(lim, clock, 5.0)
    assert ceiling * 1.05 < lim.requests.rate < ceiling * 1.15  # about +2 % a second
    lim.on_rate_limited(None)  # the probe found the limit: back to the ceiling at once
    assert lim.requests.rate == pytest.approx(ceiling)


def test_429s_at_the_very_start_hold_everyone_until_answers_are_back() -> None:
    clock = Clock()
    lim = RateLimiter(clock=clock)
    lim.reserve(1)
    clock.now += 0.1
    lim.on_success()  # the first request, alone
    for _ in range(30):  # then the pool opens against a spent bucket: 429s come back first
        clock.now += 0.001
        lim.reserve(1)
        lim.on_rate_limited(0.02)
    # answers still in flight are missing from the served count, so no pace is set from it;
    # everything is refused: a block. Everyone waits, but one probe at a time (README: at
    # least the server's hint, then 0.1 s apart or more)
    assert lim.learned_from is None and lim.requests.rate is None and lim.blockade.blocked
    first, second = lim.reserve(1), lim.reserve(1)
    assert first >= 0.02 and second - first >= 0.1 - 1e-9
    calm(lim, clock, 1.0)  # the probe succeeds: the block ends; the next episode reads a fair rate
    assert not lim.blockade.blocked
    overdriven(lim, clock)
    assert lim.requests.rate == pytest.approx(0.95 * 50, rel=0.1) and lim.ceiling is not None


def test_429s_that_are_not_about_pace_undo_the_cut() -> None:
    clock = Clock()
    lim = RateLimiter(clock=clock)
    for i in range(2000):  # 30 % of answers are 429s whatever the pace (a shared pool)
        clock.now += 0.01
        lim.reserve(1)
        if i % 10 < 3:
            lim.on_rate_limited(0.1)
        else:
            lim.on_success()
    assert lim.requests.rate is None and lim.ceiling is None
    assert lim.threshold > RateLimiter.PRESSURE_SHARE


class CalendarWindow:
    """An independent model of a gateway's fixed-window count (LiteLLM's ``rpm:``): ``limit``
    requests per ``window`` seconds, windows starting at multiples of ``window``."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.index, self.used = -1, 0

    def allow(self, now: float) -> bool:
        index = math.floor(now / self.window)
        if index != self.index:
            self.index, self.used = index, 0
        self.used += 1
        return self.used <= self.limit


@pytest.mark.parametrize("phase", [0.0, 17.0, 59.0])
def test_a_calendar_minute_limit_without_headers_is_paced_near_its_rate(phase: float) -> None:
    """The issue's case: 600 per calendar minute, no headers, bare 429s, 1,200 rows, one
    sender (injected clock, no sleeping). Before, the pace fell to 0.2/s and stayed there."""
    clock = Clock()
    clock.now = 6000.0 + phase  # the run starts ``phase`` seconds into a minute
    start = clock.now
    lim = RateLimiter(clock=clock)
    gateway = CalendarWindow(600, 60.0)
    answered = refused = late = 0
    while answered < 1200:
        clock.now += lim.reserve(1) + 0.01  # the wait, then 10 ms to an answer
        if gateway.allow(clock.now):
            answered += 1
            lim.on_success()
        else:
            refused += 1
            late += clock.now >= start + 60.0
            lim.on_rate_limited(None)
        assert clock.now - start < 600, f"{answered} answered after 10 minutes: the pace collapsed"
    # ideal: two windows' worth after the first (partial) one; 1.2x of the 120 s ideal
    assert clock.now - start <= 60.0 + 1.2 * 120.0
    assert late <= 60, f"{late} 429s after the first window"


def test_random_429s_do_not_ratchet_the_pace_down() -> None:
    """5 % of answers are 429s whatever the pace (a gateway's fault injection, a busy shared
    pool) and the client can send at most CAPACITY a second. Before, each streak of those 429s
    cut the pace to 95 % of what was served, and the next streak cut again from there: 10,000
    rows took 200 s instead of 35. The reference is the client's own capacity."""
    import random

    capacity = 200.0
    clock = Clock()
    lim = RateLimiter(clock=clock)
    draw = random.Random(7)
    sent_late = 0
    start = clock.now
    while clock.now < start + 120.0:
        clock.now += max(1.0 / capacity, lim.reserve(1))
        if clock.now > start + 60.0:
            sent_late += 1
        if draw.random() < 0.05:
            lim.on_rate_limited(0.2)
        else:
            lim.on_success()
    assert sent_late / 60.0 >= 0.8 * capacity, (sent_late / 60.0, lim)
    assert lim.noise == pytest.approx(0.05, abs=0.04) or lim.requests.rate is None
