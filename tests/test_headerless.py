"""Servers that say nothing about their limits (vLLM, many gateways): the simulator's knobs
``rate_limit_headers`` / ``retry_after_on_429``, and how the limiter copes with only 429s."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from llmbatch_pd.limits import RateLimiter
from llmbatch_pd.sim import SimConfig, Simulator
from llmbatch_pd.sim.__main__ import build_parser, config_from

KEY = "sk-test-0123456789"


def post(sim: Simulator, path: str, body: dict[str, Any], **headers: str) -> tuple[int, dict[str, str]]:
    """POST with urllib; returns (status, lower-cased headers), errors included."""
    request = urllib.request.Request(
        sim.base_url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        with error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}


CHAT = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {**CHAT, "max_tokens": 20}
EMBED = {"model": "text-embedding-3-small", "input": "hi"}


def limit_headers(headers: dict[str, str]) -> list[str]:
    return [k for k in headers if k.startswith(("x-ratelimit-", "anthropic-ratelimit-"))]


def test_knobs_default_to_telling_everything() -> None:
    config = SimConfig()
    assert config.rate_limit_headers is True and config.retry_after_on_429 is True


def test_no_rate_limit_headers_on_any_answer_but_limits_still_apply() -> None:
    with Simulator(ttft_ms=0, rpm=120, tpm=1_000_000, api_key=KEY, rate_limit_headers=False) as sim:
        status, headers = post(sim, "/chat/completions", CHAT)  # bucket of 2 requests
        assert status == 200 and limit_headers(headers) == []
        status, headers = post(sim, "/messages", MESSAGES, **{"anthropic-version": "2023-06-01"})
        assert status == 200 and limit_headers(headers) == []
        status, headers = post(sim, "/chat/completions", CHAT)
        assert status == 429 and limit_headers(headers) == []
        assert headers["retry-after"] == "1" and 0 < int(headers["retry-after-ms"]) <= 500


def test_no_rate_limit_headers_on_embeddings_either() -> None:
    with Simulator(ttft_ms=0, rpm=6000, api_key=KEY, rate_limit_headers=False) as sim:
        status, headers = post(sim, "/embeddings", EMBED)
        assert status == 200 and limit_headers(headers) == []


def test_bare_429s_carry_no_retry_after() -> None:
    with Simulator(ttft_ms=0, rpm=60, api_key=KEY, retry_after_on_429=False) as sim:
        assert post(sim, "/chat/completions", CHAT)[0] == 200  # bucket of 1 request
        status, headers = post(sim, "/chat/completions", CHAT)
        assert status == 429
        assert "retry-after" not in headers and "retry-after-ms" not in headers
        assert headers["x-ratelimit-limit-requests"] == "60"  # the other knob still tells
        sim.configure(rpm=None, fault_429=1.0)  # an injected 429 is bare as well
        status, headers = post(sim, "/chat/completions", CHAT)
        assert status == 429 and "retry-after" not in headers and "retry-after-ms" not in headers


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


def test_knobs_change_at_runtime() -> None:
    with Simulator(ttft_ms=0, rpm=6000, api_key=KEY) as sim:
        assert limit_headers(post(sim, "/chat/completions", CHAT)[1])
        sim.configure(rate_limit_headers=False)
        assert not limit_headers(post(sim, "/chat/completions", CHAT)[1])
        sim.configure(rate_limit_headers=True)
        assert limit_headers(post(sim, "/chat/completions", CHAT)[1])


def test_cli_has_no_forms_for_the_knobs() -> None:
    args = build_parser().parse_args(["--no-rate-limit-headers", "--no-retry-after-on-429"])
    config = config_from(args)
    assert config.rate_limit_headers is False and config.retry_after_on_429 is False


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
    # answers still in flight are missing from the served count, so no pace is set from it:
    # everyone waits until they are back (half a window), however short the server's hint
    assert lim.learned_from is None and lim.requests.rate is None
    assert lim.reserve(1) == pytest.approx(1.0, abs=0.02)
    calm(lim, clock, 1.0)  # they come back; the next episode reads a fair rate
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
