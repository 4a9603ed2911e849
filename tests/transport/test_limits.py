"""The pacers read an injected clock, so these tests never sleep."""

import pytest

from llmbatch_pd.core.types import RateLimitInfo
from llmbatch_pd.providers.base import parse_duration, parse_retry_after
from llmbatch_pd.transport.limits import BURST_SECONDS, Pacer, RateLimiter


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_pacer_spaces_sends_at_rate():
    clock = Clock()
    p = Pacer(10.0, clock)
    waits = [p.reserve() for _ in range(21)]
    # one burst's worth goes at once, then one every 0.1 s
    assert waits[0] == 0.0
    assert waits[-1] == pytest.approx(20 * 0.1 - BURST_SECONDS)
    clock.now += 10
    assert p.reserve() == 0.0


def test_unlimited_pacer_never_waits():
    p = Pacer(None, Clock())
    assert all(p.reserve() == 0.0 for _ in range(1000))


def test_hold_until_pauses_everyone():
    clock = Clock()
    p = Pacer(100.0, clock)
    p.hold_until(clock.now + 2.0)
    assert p.reserve() == pytest.approx(2.0)


def test_limiter_learns_limit_from_headers():
    clock = Clock()
    lim = RateLimiter(clock=clock)
    assert lim.reserve(10) == 0.0
    lim.observe(RateLimitInfo(limit_requests=600, remaining_requests=500, reset_requests=1.0))
    assert lim.requests.rate == pytest.approx(600 / 60 * 0.98)
    assert lim.learned_from == "headers"


def test_told_limit_wins_over_a_larger_header():
    lim = RateLimiter(rpm=300, clock=Clock())
    lim.observe(RateLimitInfo(limit_requests=10_000))
    assert lim.requests.rate == pytest.approx(5.0)
    lim.observe(RateLimitInfo(limit_requests=120))
    assert lim.requests.rate == pytest.approx(2.0)


def test_lone_429s_do_not_slow_everyone():
    clock = Clock()
    lim = RateLimiter(clock=clock)
    for i in range(200):  # 5 % random 429s: no pressure, no pause, no pace
        clock.now += 0.01
        lim.reserve(1)
        if i % 20 == 0:
            lim.on_rate_limited(retry_after=1.0)
        else:
            lim.on_success()
    assert lim.requests.rate is None and lim.reserve(1) == 0.0


def test_sustained_429s_slow_down_then_recover():
    clock = Clock()
    lim = RateLimiter(clock=clock)
    for _ in range(110):  # sending and served 100/s
        clock.now += 0.01
        lim.reserve(1)
        lim.on_success()
    for _ in range(8):
        lim.on_rate_limited(retry_after=0.5)
    assert lim.learned_from == "429s"
    assert lim.requests.rate == pytest.approx(0.95 * 100, rel=0.05)  # just under what was served
    assert lim.reserve(1) == pytest.approx(0.5, abs=0.11)  # waits out the server's hint once
    slowed = lim.requests.rate
    for _ in range(300):  # pace is won back with time (after the pause), not per answer
        clock.now += 0.01
        lim.reserve(1)
        lim.on_success()
    assert lim.requests.rate > slowed * 1.04


def test_token_pacer():
    clock = Clock()
    lim = RateLimiter(tpm=60_000, clock=clock)  # 1000 tokens/s, 1 s burst
    assert lim.reserve(1000) == 0.0
    assert lim.reserve(1000) == pytest.approx(0.0)
    assert lim.reserve(1000) == pytest.approx(1.0)


@pytest.mark.parametrize("text,seconds", [("6m0s", 360), ("1s", 1), ("12ms", 0.012), ("1m30.5s", 90.5), ("2h", 7200), ("0.5", 0.5)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_retry_after_prefers_ms():
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "3"}) == pytest.approx(0.25)
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({}) is None


def test_fast_429s_ahead_of_slower_answers_are_a_blip_not_a_window_reset():
    """Random 429s come back at once while answers take longer, so the first few responses of
    a wave can be five 429s in a row. The answer that follows was sent before that "block":
    no probe was refused, so it is no reset and says nothing about a window's rate."""
    from llmbatch_pd.transport.blockade import LONG, RUN, Blockade

    b = Blockade()
    for _ in range(RUN):
        b.refused(0.0, None)
    assert b.blocked
    assert b.succeeded(LONG + 0.5, started=0.0) is None  # no reset measured
    assert not b.blocked
    # a real block: a probe is refused, then one gets through -> a reset is measured
    for _ in range(RUN):
        b.refused(10.0, None)
    b.refused(10.2, None)  # the first probe (due at 10.1) refused
    assert b.succeeded(10.5, started=0.0) is not None
