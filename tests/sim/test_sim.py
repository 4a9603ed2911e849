"""The loopback provider simulator, driven over real HTTP with real clients (no mocks).

The simulator is ours, so its answers are checked against references it does not share: the
official openai and anthropic SDKs parsing them, the providers' documented wire formats and
token-counting rules (OpenAI's cookbook, tiktoken's published counts), a JSON Schema validator,
and what a client observes from the outside. Knobs are set by each test, never read back from
the simulator's own defaults. Waits are for events, with deadlines; no timing asserts.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import subprocess
import sys
import time
import unicodedata
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import anthropic
import jsonschema
import openai
import pytest

from llmbatch_pd.sim import SimConfig, Simulator
from llmbatch_pd.sim.limits import Bucket, RateLimiter, format_duration
from llmbatch_pd.sim.tokens import _segments, count_tokens, truncate_tokens

from ..conftest import wait_until

KEY = "sk-test-0123456789"
SENTIMENT = "Classify the sentiment of this review as positive, negative or neutral:\n{}"


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def client(sim: Simulator, key: str = KEY, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key=key, max_retries=0, **kwargs)


def post(
    sim: Simulator,
    body: Any,
    *,
    key: str | None = KEY,
    path: str = "/chat/completions",
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:
    """POST with urllib; returns (status, lower-cased headers, raw body), errors included."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(sim.base_url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as error:
        with error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4.1-mini", "messages": user(text), **extra}


def parse_duration(text: str) -> float:
    """OpenAI's reset durations: "12ms", "1s", "1m30.5s", "6m0s", "1h2m3s"."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?|(\d+)ms", text)
    assert m, text
    if m.group(4):
        return int(m.group(4)) / 1000
    h, mi, s = (float(g) if g else 0.0 for g in m.group(1, 2, 3))
    return h * 3600 + mi * 60 + s


def cookbook_prompt_tokens(messages: list[dict[str, str]], content_tokens: list[int]) -> int:
    """OpenAI cookbook (How_to_count_tokens_with_tiktoken): 3 tokens per message, the role's
    own token (1 for "user"/"system"), the content's, and 3 to prime the reply."""
    return sum(3 + 1 + n for n in content_tokens) + 3


def rule_of_thumb(text: str) -> tuple[float, float]:
    """OpenAI's rule of thumb, one token per ~4 characters of English, taken loosely (x0.5 to
    x2): a bound any tokenizer of English text meets, ours included."""
    return len(text) / 8, len(text) / 2


@pytest.fixture
def sim() -> Any:
    with Simulator(ttft_ms=0, api_key=KEY) as running:
        yield running


# -- the OpenAI wire format -------------------------------------------------------------


def test_openai_sdk_gets_a_well_formed_completion(sim: Simulator) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "Tell me about batching."}]},
    ]
    raw = client(sim).chat.completions.with_raw_response.create(
        model="gpt-4.1-mini", messages=messages, temperature=0, n=1
    )
    reply = raw.parse()
    # The chat completion object as OpenAI documents it, read by its own SDK.
    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion" and reply.model == "gpt-4.1-mini"
    assert isinstance(reply.created, int) and abs(reply.created - time.time()) < 3600
    choice = reply.choices[0]
    assert choice.index == 0 and choice.finish_reason == "stop" and choice.logprobs is None
    assert choice.message.role == "assistant" and choice.message.refusal is None
    text = choice.message.content or ""
    assert reply.usage is not None
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    # "You are terse." and "Tell me about batching." are 4 and 5 tokens in cl100k_base
    expected = cookbook_prompt_tokens(messages, [4, 5])
    assert abs(reply.usage.prompt_tokens - expected) <= 2, (reply.usage.prompt_tokens, expected)
    low, high = rule_of_thumb(text)
    assert low <= reply.usage.completion_tokens <= high, (reply.usage.completion_tokens, text)
    assert reply.usage.prompt_tokens_details.cached_tokens == 0  # type: ignore[union-attr]
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0  # type: ignore[union-attr]
    assert raw.headers["content-type"].startswith("application/json")


def test_models_list_is_what_it_was_given() -> None:
    with Simulator(ttft_ms=0, models=("alpha-1", "beta-2")) as sim:
        models = list(client(sim).models.list())
    assert [m.id for m in models] == ["alpha-1", "beta-2"]
    assert {m.object for m in models} == {"model"}


def test_answers_are_deterministic_and_vary_with_the_prompt() -> None:
    with Simulator(ttft_ms=0, answer_tokens=40) as sim:
        c = client(sim)

        def ask(text: str) -> tuple[str, int]:
            reply = c.chat.completions.create(model="gpt-4.1-mini", messages=user(text))
            assert reply.usage is not None
            return reply.choices[0].message.content or "", reply.usage.completion_tokens

        first = ask("Describe a data pipeline.")
        assert ask("Describe a data pipeline.") == first
        answers = dict(ask(f"Describe data pipeline number {i}.") for i in range(8))
    assert len(answers) == 8
    for text, tokens in answers.items():
        assert 20 <= tokens <= 60, tokens  # answer_tokens=40, +-50 % (the knob's contract)
        low, high = rule_of_thumb(text)
        assert low <= tokens <= high, (tokens, text)  # the usage fits the text it reports


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (SENTIMENT.format("I love it, great value."), "positive"),
        (SENTIMENT.format("Arrived broken. Terrible."), "negative"),
        (SENTIMENT.format("Sản phẩm tuyệt vời, tôi rất hài lòng"), "positive"),
        (SENTIMENT.format("Hàng bị hỏng, thất vọng quá"), "negative"),
        (SENTIMENT.format("Tôi không hài lòng"), "negative"),
        (SENTIMENT.format(unicodedata.normalize("NFD", "Rất tốt")), "positive"),
        (SENTIMENT.format("It arrived on Tuesday."), "neutral"),
    ],
)
def test_sentiment_options_follow_keywords(sim: Simulator, prompt: str, expected: str) -> None:
    reply = client(sim).chat.completions.create(model="gpt-4.1-mini", messages=user(prompt))
    assert reply.choices[0].message.content == expected


@pytest.mark.parametrize(
    ("prompt", "options"),
    [
        ("Is this spam? Answer yes or no.\nWIN A PRIZE NOW", {"yes", "no"}),
        ("Label the topic, one of: sports, politics, tech\nThe match ended 2-1",
         {"sports", "politics", "tech"}),
        ("Reply with one of the following labels: Billing, Shipping, Product quality\nLate!",
         {"Billing", "Shipping", "Product quality"}),
        ("Respond with 'A' or 'B'.", {"A", "B"}),
    ],
)
def test_option_prompts_get_exactly_one_option(
    sim: Simulator, prompt: str, options: set[str]
) -> None:
    c = client(sim)
    for i in range(6):
        text = f"{prompt}\n(row {i})"
        reply = c.chat.completions.create(model="gpt-4.1-mini", messages=user(text))
        assert reply.choices[0].message.content in options
    poem = c.chat.completions.create(
        model="gpt-4.1-mini", messages=user("Write a poem about the sea, as you see it."))
    assert len((poem.choices[0].message.content or "").split()) > 3  # free text, not a label


def test_max_tokens_truncates_with_finish_reason_length(sim: Simulator) -> None:
    c = client(sim)
    full = c.chat.completions.create(model="m", messages=user("Write an essay."))
    assert full.usage is not None and full.usage.completion_tokens > 5
    for limit in ({"max_tokens": 5}, {"max_completion_tokens": 5}):
        cut = c.chat.completions.create(model="m", messages=user("Write an essay."), **limit)
        assert cut.choices[0].finish_reason == "length"
        assert cut.usage is not None and cut.usage.completion_tokens == 5
        assert (full.choices[0].message.content or "").startswith(
            cut.choices[0].message.content or ""
        )
    roomy = c.chat.completions.create(model="m", messages=user("Write an essay."), max_tokens=500)
    assert roomy.choices[0].finish_reason == "stop"


def test_json_response_formats_parse(sim: Simulator) -> None:
    schema = {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "score": {"type": "number"},
        },
        "required": ["sentiment", "score"],
    }
    reply = client(sim).chat.completions.create(
        model="m",
        messages=user(SENTIMENT.format("I love it")),
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    )
    data = json.loads(reply.choices[0].message.content or "")
    jsonschema.validate(data, schema)  # an independent validator, not our own checks
    assert data["sentiment"] == "positive"
    reply = client(sim).chat.completions.create(
        model="m", messages=user("hello"), response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


# -- validation and auth ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        ({"messages": user("hi")}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"model": "m", "messages": user("hi"), "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": user("hi"), "stream": True}, "stream"),
    ],
)
def test_bad_requests_get_openai_shaped_400s(sim: Simulator, body: Any, param: str | None) -> None:
    status, _, raw = post(sim, body)
    assert status == 400
    error = json.loads(raw)["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert set(error) == {"message", "type", "param", "code"}


def test_wrong_or_missing_key_is_401_with_the_key_masked(sim: Simulator) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(sim, key="sk-abcdefghijklmnopqrstuvwxyz").chat.completions.create(
            model="m", messages=user("hi")
        )
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    assert (
        "sk-ab***yz" in caught.value.message
        and "cdefghijklmnopqrstuvwx" not in caught.value.message
    )
    status, _, raw = post(sim, chat_body("hi"), key=None)
    assert status == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key"


def test_any_key_is_accepted_without_api_key() -> None:
    with Simulator(ttft_ms=0, api_key=None) as sim:
        assert post(sim, chat_body("hi"), key=None)[0] == 200
        assert post(sim, chat_body("hi"), key="whatever")[0] == 200


def test_quota_runs_out_after_n_successful_requests() -> None:
    with Simulator(ttft_ms=0, quota_requests=3) as sim:
        c = client(sim)
        for _ in range(3):
            c.chat.completions.create(model="m", messages=user("hi"))
        for _ in range(2):
            with pytest.raises(openai.RateLimitError) as caught:
                c.chat.completions.create(model="m", messages=user("hi"))
            assert caught.value.code == "insufficient_quota"
            assert caught.value.type == "insufficient_quota"  # type: ignore[attr-defined]
            assert "exceeded your current quota" in caught.value.message
        assert sim.stats()["by_status"] == {"200": 3, "429": 2}


# -- rate limits ------------------------------------------------------------------------


def test_rate_limit_headers_and_a_burst_beyond_the_bucket() -> None:
    with Simulator(ttft_ms=0, rpm=120, tpm=1_000_000) as sim:  # buckets: 2 requests, 16,666 tokens
        status, headers, _ = post(sim, chat_body("hi"))
        assert status == 200
        assert headers["x-ratelimit-limit-requests"] == "120"
        assert headers["x-ratelimit-limit-tokens"] == "1000000"
        assert int(headers["x-ratelimit-remaining-requests"]) == 1
        assert 0 < int(headers["x-ratelimit-remaining-tokens"]) < 16_667
        assert 0 < parse_duration(headers["x-ratelimit-reset-requests"]) <= 0.5
        assert 0 < parse_duration(headers["x-ratelimit-reset-tokens"]) <= 1.0
        results = [post(sim, chat_body("hi")) for _ in range(4)]
        refused = [r for r in results if r[0] == 429]
        assert len(refused) >= 2
        status, headers, raw = refused[-1]
        error = json.loads(raw)["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
        assert error["message"].startswith("Rate limit reached for requests")
        assert headers["retry-after"] == "1"
        assert 0 < int(headers["retry-after-ms"]) <= 500
        assert headers["x-ratelimit-remaining-requests"] == "0"
        # the bucket refills at 2 requests/s: a request is served again well within 5 s
        wait_until(lambda: post(sim, chat_body("hi"))[0] == 200, 5, "the bucket to refill")


def test_tokens_limit_refuses_what_the_bucket_lacks() -> None:
    with Simulator(ttft_ms=0, tpm=6000) as sim:  # bucket of 100 tokens, 100 tokens/s
        assert post(sim, chat_body("hi", max_tokens=80))[0] == 200
        status, headers, raw = post(sim, chat_body("hi", max_tokens=80))
        assert status == 429 and json.loads(raw)["error"]["type"] == "tokens"
        assert "x-ratelimit-limit-requests" not in headers  # rpm is None: no headers for it
        assert 0.5 < int(headers["retry-after-ms"]) / 1000 <= 0.95


def test_openai_sdk_retries_429s_honouring_retry_after_ms() -> None:
    with Simulator(ttft_ms=0, rpm=600) as sim:  # 10 requests per second, 10 per bucket
        c = openai.OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=5)
        for _ in range(14):
            c.chat.completions.create(model="m", messages=user("hi"))
        stats = sim.stats()
        assert stats["by_status"]["200"] == 14 and stats["by_status"].get("429", 0) >= 3


def test_bucket_refills_continuously_and_allows_debt() -> None:
    bucket = Bucket(limit=600, burst_seconds=1.0, now=0.0)  # 10 per bucket, 10 per second
    assert bucket.capacity == 10 and bucket.remaining(0.0) == 10
    for _ in range(10):
        assert bucket.wait_for(1, 0.0) == 0.0
        bucket.take(1, 0.0)
    assert bucket.wait_for(1, 0.0) == pytest.approx(0.1)
    assert bucket.remaining(0.05) == 0 and bucket.wait_for(1, 0.05) == pytest.approx(0.05)
    assert bucket.reset_after(0.5) == pytest.approx(0.5)
    assert bucket.remaining(1.0) == 10 and bucket.reset_after(5.0) == 0.0
    bucket.take(25, 5.0)  # bigger than the bucket: allowed when full, leaves a debt
    assert bucket.wait_for(1, 5.0) == pytest.approx(1.6)
    limiter = RateLimiter(rpm=None, tpm=1000, burst_seconds=1.0, now=0.0)
    refusal = limiter.acquire(5000, 0.0)
    assert refusal is not None and refusal.message.startswith("Request too large")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0121, "13ms"),
        (0.5, "500ms"),
        (1, "1s"),
        (17.28, "17.28s"),
        (60, "1m0s"),
        (90.5, "1m30.5s"),
        (360, "6m0s"),
        (3723.5, "1h2m3.5s"),
    ],
)
def test_durations_are_written_like_openai(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds, abs=0.001)


# -- faults -----------------------------------------------------------------------------


def test_fault_429_sends_retry_after(sim: Simulator) -> None:
    sim.configure(fault_429=1.0, fault_retry_after_s=2.5)
    status, headers, raw = post(sim, chat_body("hi"))
    assert status == 429 and json.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    assert headers["retry-after"] == "3" and headers["retry-after-ms"] == "2500"
    with pytest.raises(openai.RateLimitError):
        client(sim).chat.completions.create(model="m", messages=user("hi"))


def test_fault_5xx_picks_among_500_502_503(sim: Simulator) -> None:
    sim.configure(fault_5xx=1.0)
    statuses = set()
    for _ in range(30):
        status, _, raw = post(sim, chat_body("hi"))
        statuses.add(status)
        assert json.loads(raw)["error"]["type"] == "server_error"
    assert statuses == {500, 502, 503}
    with pytest.raises(openai.InternalServerError):
        client(sim).chat.completions.create(model="m", messages=user("hi"))


def test_fault_529_is_anthropics_overloaded(sim: Simulator) -> None:
    sim.configure(fault_529=1.0)
    status, _, raw = post(sim, chat_body("hi"))
    assert status == 529
    assert json.loads(raw) == {  # Anthropic's documented error shape
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    claude = anthropic.Anthropic(base_url=sim.anthropic_url, api_key=KEY, max_retries=0)
    with pytest.raises(anthropic.OverloadedError) as caught:
        claude.messages.create(model="claude-x", max_tokens=5, messages=user("hi"))  # type: ignore[arg-type]
    assert caught.value.status_code == 529


def test_fault_malformed_is_a_200_that_does_not_parse(sim: Simulator) -> None:
    sim.configure(fault_malformed=1.0)
    status, headers, raw = post(sim, chat_body("hi"))
    assert status == 200 and headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)


def test_fault_reset_is_a_connection_error_at_the_client(sim: Simulator) -> None:
    sim.configure(fault_reset=1.0)
    with pytest.raises(openai.APIConnectionError):
        client(sim).chat.completions.create(model="m", messages=user("hi"))

    async def with_aiohttp() -> None:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                async with session.post(sim.base_url + "/chat/completions", json=chat_body("x")):
                    pass

    asyncio.run(with_aiohttp())
    assert sim.stats()["by_status"] == {"none": 2}
    assert [e["fault"] for e in sim.log] == ["reset", "reset"]


def test_fault_hang_times_the_client_out_and_ends_on_disconnect(sim: Simulator) -> None:
    sim.configure(fault_hang=1.0)
    with pytest.raises(openai.APITimeoutError):
        client(sim, timeout=0.3).chat.completions.create(model="m", messages=user("hi"))
    # the hanging handler is cancelled when the client hangs up (hang_seconds is 300)
    wait_until(lambda: sim.stats()["in_flight"] == 0, 10, "the hang to end on disconnect")
    assert sim.log[-1]["fault"] == "hang" and sim.log[-1]["status"] is None


def test_hangs_end_when_the_simulator_stops() -> None:
    sim = Simulator(ttft_ms=0, fault_hang=1.0).start()
    outcome: list[BaseException] = []

    async def hang() -> None:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.post(sim.base_url + "/chat/completions", json=chat_body("x")):
                    pass
            except aiohttp.ClientError as exc:
                outcome.append(exc)

    async def scenario() -> None:
        task = asyncio.create_task(hang())
        async with asyncio.timeout(10):
            while sim.stats()["in_flight"] == 0:
                await asyncio.sleep(0.01)
        # stop() must not wait out the 300 s hang: a deadline, not a timing assert
        async with asyncio.timeout(30):
            await asyncio.to_thread(sim.stop)
            await task

    asyncio.run(scenario())
    assert outcome and isinstance(outcome[0], aiohttp.ClientConnectionError)


def test_a_hang_shorter_than_the_client_timeout_is_a_slow_success() -> None:
    with Simulator(ttft_ms=0, fault_hang=1.0, hang_seconds=0.5) as sim:
        # a client that waits less than the hang gives up; one that waits longer is answered
        with pytest.raises(openai.APITimeoutError):
            client(sim, timeout=0.1).chat.completions.create(model="m", messages=user("hi"))
        reply = client(sim, timeout=30).chat.completions.create(model="m", messages=user("hi"))
        assert reply.choices[0].finish_reason == "stop"
        assert [e["status"] for e in sim.log] == [None, 200]


def test_latency_is_ttft_plus_tokens_over_speed() -> None:
    """150 ms to the first token and 20 tokens at 100/s: at least 350 ms. A client that waits
    0.3 s (more than the first token alone) gives up; the tokens' time is really added."""
    with Simulator(ttft_ms=150, tokens_per_s=100, jitter_ms=50) as sim:
        essay = user("Write an essay.")
        with pytest.raises(openai.APITimeoutError):
            client(sim, timeout=0.3).chat.completions.create(
                model="m", messages=essay, max_tokens=20)  # type: ignore[arg-type]
        reply = client(sim, timeout=30).chat.completions.create(
            model="m", messages=essay, max_tokens=20)  # type: ignore[arg-type]
        assert reply.usage is not None and reply.usage.completion_tokens == 20


def test_fault_rates_are_seeded() -> None:
    def run() -> list[int]:
        with Simulator(ttft_ms=0, fault_5xx=0.3, seed=7) as sim:
            return [post(sim, chat_body(f"q{i}"))[0] for i in range(40)]

    first = run()
    assert first == run()
    assert 3 <= sum(s >= 500 for s in first) <= 25


# -- log, stats and controls ------------------------------------------------------------


def test_log_and_stats_in_process_and_over_http(sim: Simulator) -> None:
    post(sim, chat_body("hello"))
    post(sim, chat_body("hello"), key="sk-wrong")
    sim.configure(fault_529=0.0, fault_5xx=1.0)
    post(sim, chat_body("again"))
    log = sim.log
    assert [e["status"] for e in log][:2] == [200, 401] and log[2]["fault"] == "5xx"
    first = log[0]
    assert set(first) == {
        "t",
        "path",
        "model",
        "prompt_sha",
        "status",
        "fault",
        "prompt_tokens",
        "completion_tokens",
        "finish_reason",
    }
    assert first["path"] == "/v1/chat/completions" and first["model"] == "gpt-4.1-mini"
    assert re.fullmatch(r"[0-9a-f]{64}", first["prompt_sha"])
    assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0
    with urllib.request.urlopen(sim.root_url + "/_sim/log") as response:
        assert json.loads(response.read()) == log
    with urllib.request.urlopen(sim.root_url + "/_sim/stats") as response:
        stats = json.loads(response.read())
    assert stats["total"] == 3 and stats["by_fault"] == {"5xx": 1}
    assert stats["by_status"]["200"] == 1 and stats["by_status"]["401"] == 1
    assert stats["max_in_flight"] >= 1 and stats["in_flight"] == 0
    with urllib.request.urlopen(sim.root_url + "/_sim/config") as response:
        config = json.loads(response.read())
    assert config["api_key"] == "***" and config["fault_5xx"] == 1.0
    request = urllib.request.Request(sim.root_url + "/_sim/reset", data=b"", method="POST")
    urllib.request.urlopen(request).close()
    assert sim.log == [] and sim.stats()["total"] == 0


def test_config_over_http_is_validated(sim: Simulator) -> None:
    def send(knobs: Any) -> int:
        request = urllib.request.Request(
            sim.root_url + "/_sim/config", data=json.dumps(knobs).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request) as response:
                return response.status
        except urllib.error.HTTPError as error:
            error.close()
            return error.code

    assert send({"rpm": 60}) == 200
    assert send({"no_such_knob": 1}) == 400
    assert send({"fault_429": 2.0}) == 400
    assert send({"rpm": "lots"}) == 400
    assert post(sim, chat_body("hi"))[1]["x-ratelimit-limit-requests"] == "60"


def test_log_can_be_switched_off() -> None:
    with Simulator(ttft_ms=0, log=False) as sim:
        post(sim, chat_body("hi"))
        assert sim.log == [] and sim.stats()["total"] == 1


def test_many_concurrent_requests_overlap() -> None:
    """Seen from the client: many of 500 slow requests are answered at the same time."""
    async def burst(sim: Simulator) -> list[tuple[float, float]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def one(i: int) -> tuple[float, float]:
                url = sim.base_url + "/chat/completions"
                sent = time.monotonic()
                async with session.post(url, json=chat_body(f"row {i}")) as response:
                    await response.json()
                    assert response.status == 200
                return sent, time.monotonic()

            return await asyncio.gather(*(one(i) for i in range(500)))

    with Simulator(ttft_ms=300, process=True) as sim:
        spans = asyncio.run(burst(sim))
        # the server's own count of requests it held at once (a server answering one at a
        # time would show 1 here, whatever the client's clock says)
        assert sim.stats()["max_in_flight"] > 250
    assert len(spans) == 500


def test_async_with_runs_on_the_callers_loop() -> None:
    async def scenario() -> None:
        async with Simulator(ttft_ms=0) as sim:
            async with aiohttp.ClientSession() as session:
                url = sim.base_url + "/chat/completions"
                async with session.post(url, json=chat_body("hi")) as response:
                    assert response.status == 200
            assert sim.stats()["total"] == 1
            sim.configure(fault_529=1.0)
            async with aiohttp.ClientSession() as session:
                url = sim.base_url + "/chat/completions"
                async with session.post(url, json=chat_body("hi")) as response:
                    assert response.status == 529

    asyncio.run(scenario())


def test_process_mode_over_http() -> None:
    with Simulator(process=True, ttft_ms=0, api_key="sk-proc-0123456789") as sim:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", sim.base_url)
        reply = client(sim, key="sk-proc-0123456789").chat.completions.create(
            model="m", messages=user("Answer yes or no: is it?")
        )
        assert reply.choices[0].message.content in ("yes", "no")
        # Answers hash with sha256, not the per-process salted hash(): the same answer from a
        # simulator in another process as from one in this process.
        essay = client(sim, key="sk-proc-0123456789").chat.completions.create(
            model="m", messages=user("Write an essay.")
        )
        with Simulator(ttft_ms=0) as here:
            local = client(here).chat.completions.create(model="m", messages=user("Write an essay."))
        assert essay.choices[0].message.content == local.choices[0].message.content
        sim.configure(fault_5xx=1.0)
        assert post(sim, chat_body("hi"), key="sk-proc-0123456789")[0] >= 500
        assert sim.stats()["total"] == 3 and [e["status"] for e in sim.log][0] == 200
        sim.reset()
        assert sim.log == [] and sim.stats()["total"] == 0
        port = sim.port
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_cli_prints_its_base_url_first() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmbatch_pd.sim",
            "--port",
            "0",
            "--rpm",
            "90",
            "--latency-ms",
            "5",
            "--tpm",
            "none",
            "--no-log",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", line)
        root = line.removesuffix("/v1")
        with urllib.request.urlopen(root + "/_sim/config") as response:
            config = json.loads(response.read())
        assert config["rpm"] == 90 and config["ttft_ms"] == 5.0 and config["log"] is False
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()  # type: ignore[union-attr]


# -- tokens and config ------------------------------------------------------------------


# Counts by tiktoken 0.14.0 (cl100k_base, o200k_base), the tokenizers of OpenAI's models.
TIKTOKEN_COUNTS = [
    ("", 0, 0),
    ("Hello, world!", 4, 4),
    ("The quick brown fox jumps over the lazy dog.", 10, 10),
    ("tiktoken is great!", 6, 6),  # the OpenAI cookbook's example
    ("12345", 2, 2),
    ("Sản phẩm tốt", 6, 4),
    ("我爱你", 4, 3),
    ("😀👍", 5, 2),
    ("Classify the sentiment of this review as positive, negative or neutral:\nThe battery "
     "lasts two days, but the charger broke after a week and support never answered.", 32, 32),
    ("Sản phẩm tuyệt vời, giao hàng nhanh, đóng gói cẩn thận. Tôi sẽ mua lại lần sau.", 43, 26),
    ("这个产品质量很好，物流也很快，但是价格有点贵。", 26, 15),
    ("Great value 😀👍 would buy again!!!", 10, 8),
    ("def add(a, b):\n    return a + b\n", 12, 12),
]


@pytest.mark.parametrize(("text", "cl100k", "o200k"), TIKTOKEN_COUNTS)
def test_token_counts_come_close_to_tiktoken(text: str, cl100k: int, o200k: int) -> None:
    """The simulator estimates tokens without tiktoken (which downloads its tables): within
    30 % (and one token) of what the two OpenAI encodings count, across scripts."""
    n = count_tokens(text)
    assert min(cl100k, o200k) * 0.7 - 1 <= n <= max(cl100k, o200k) * 1.3 + 1, n


def test_fast_ascii_count_matches_the_general_walk() -> None:
    rng = random.Random(0)
    alphabet = "abcXYZ019 ,.!_-\n\t'\""
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert count_tokens(text) == sum(n for _, n, _ in _segments(text))
        cut, was_cut = truncate_tokens(text, 3)
        assert count_tokens(cut) <= 3 and was_cut == (count_tokens(text) > 3)


def test_prompt_tokens_follow_the_chat_format(sim: Simulator) -> None:
    """OpenAI's cookbook: 3 per message, 1 for the role, the content ("hi": 1 token in
    cl100k_base), and 3 priming the reply: 8, as the SDK reads it from the answer."""
    reply = client(sim).chat.completions.create(model="m", messages=user("hi"))
    assert reply.usage is not None and reply.usage.prompt_tokens == 8


def test_config_round_trips_and_rejects_bad_knobs() -> None:
    config = SimConfig(rpm=600, fault_429=0.05, models=("a", "b"), api_key="sk-secret-key")
    assert SimConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert "sk-secret" not in repr(config)
    assert config.public_dict()["api_key"] == "***"
    with pytest.raises(ValueError, match="unknown"):
        SimConfig.from_dict({"rmp": 10})
    with pytest.raises(TypeError):
        SimConfig(rpm="10")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SimConfig(fault_429=0.6, fault_5xx=0.6)
    with pytest.raises(ValueError):
        Simulator(fault_hang=-1)


# -- request capture and the Anthropic endpoint alongside -------------------------------


def test_capture_keeps_the_last_requests_with_credentials_masked() -> None:
    with Simulator(ttft_ms=0, api_key=KEY, capture_requests=2) as sim:
        assert sim.captured == []
        client(sim).chat.completions.create(model="m", messages=user("first"))
        post(sim, chat_body("second"))
        post(sim, b"{not json")
        first, last = sim.captured  # the oldest was dropped
        assert first["path"] == "/v1/chat/completions" and first["method"] == "POST"
        assert first["body"] == chat_body("second")
        assert first["headers"]["authorization"] == "Bearer sk-te***89"
        assert last["body"] == "{not json"
        assert KEY not in json.dumps(sim.captured)
        with urllib.request.urlopen(sim.root_url + "/_sim/requests") as response:
            assert json.loads(response.read()) == sim.captured
        sim.configure(capture_requests=5)
        assert len(sim.captured) == 2  # growing keeps what was captured
        sim.reset()
        assert sim.captured == []
    with Simulator(ttft_ms=0, capture_requests=0) as sim:  # off: nothing kept
        post(sim, chat_body("hi"))
        assert sim.captured == []
    with pytest.raises(ValueError):
        SimConfig(capture_requests=-1)


def test_both_endpoints_share_limits_faults_and_log_in_process_mode() -> None:
    with Simulator(process=True, ttft_ms=0, api_key=KEY, rpm=6000, capture_requests=5) as sim:
        assert post(sim, chat_body("hi"))[0] == 200
        request = urllib.request.Request(
            sim.root_url + "/v1/messages",
            data=json.dumps({"model": "claude-x", "max_tokens": 5, "messages": user("hi")}).encode(),
            headers={"x-api-key": KEY, "anthropic-version": "2026-10-21"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            assert json.loads(response.read())["type"] == "message"
        assert headers["anthropic-ratelimit-requests-limit"] == "6000"
        assert headers["anthropic-ratelimit-requests-remaining"] == "98"  # 100 per bucket, 2 used
        assert [e["path"] for e in sim.log] == ["/v1/chat/completions", "/v1/messages"]
        assert sim.captured[-1]["headers"]["x-api-key"] == "sk-te***89"
