"""Anthropic's Messages API: the simulator's endpoint proven with the official SDK, and our
provider checked against it over real HTTP (no mocks), through the engine and the accessor."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import pandas as pd
import pytest

import llmbatch_pd  # noqa: F401  (registers df.llm)
from llmbatch_pd.core import errors
from llmbatch_pd.core.secrets import Secret
from llmbatch_pd.core.types import Request
from llmbatch_pd.providers.anthropic import (
    API_VERSION,
    DEFAULT_MAX_TOKENS,
    AnthropicMessages,
    seconds_until,
    split_system,
)
from llmbatch_pd.providers.registry import PRESETS, make_provider, parse_model
from llmbatch_pd.sim import Simulator
from llmbatch_pd.sim.answers import make_answer
from llmbatch_pd.sim.anthropic import FIELDS, chat_messages, rfc3339_after
from llmbatch_pd.sim.tokens import count_prompt_tokens, count_tokens
from llmbatch_pd.transport.engine import Engine, EngineStats, RetryPolicy

KEY = "sk-ant-test-0123456789abcdefSECRET"
MODEL = "claude-haiku-4-5"
SENTIMENT = "Classify the sentiment of this review as positive, negative or neutral:\n{}"


def sdk(sim: Simulator, key: str = KEY, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.anthropic_url, api_key=key, max_retries=0, **kwargs)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def provider(sim: Simulator, key: str | None = KEY) -> AnthropicMessages:
    made = make_provider(parse_model(f"anthropic/{MODEL}"), base_url=sim.anthropic_url, api_key=key)
    assert isinstance(made, AnthropicMessages)
    return made


def run(p: AnthropicMessages, requests: list[Request], **engine_options: Any) -> tuple[Engine, dict]:
    outcomes: dict[int, Any] = {}

    def on_done(request: Request, reply: Any, exc: Any) -> None:
        outcomes[request.index] = reply if reply is not None else exc

    engine = Engine(p, **engine_options)
    asyncio.run(engine.run(iter(requests), on_done))
    return engine, outcomes


def post(
    sim: Simulator, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """POST /v1/messages with urllib: (status, lower-cased headers, parsed JSON or raw bytes)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"content-type": "application/json", "anthropic-version": API_VERSION}
    sent |= {"authorization": f"Bearer {KEY}"} if headers is None else headers
    request = urllib.request.Request(sim.anthropic_url + "/v1/messages", data=data, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, hdrs, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            status, hdrs, raw = error.code, error.headers, error.read()
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        parsed = raw
    return status, {k.lower(): v for k, v in hdrs.items()}, parsed


def body(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 100, "messages": user(text), **extra}


@pytest.fixture
def sim() -> Any:
    with Simulator(ttft_ms=0, api_key=KEY, capture_requests=50) as running:
        yield running


# -- the simulator speaks the protocol: proven with the official SDK -------------------


def test_sdk_gets_a_well_formed_message(sim: Simulator) -> None:
    messages: list[Any] = [
        {"role": "user", "content": [{"type": "text", "text": "Tell me about batching."}]}
    ]
    raw = sdk(sim).messages.with_raw_response.create(
        model=MODEL, max_tokens=200, system="You are terse.", messages=messages
    )
    message = raw.parse()
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == MODEL
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert [block.type for block in message.content] == ["text"]
    text = message.content[0].text  # type: ignore[union-attr]
    chat = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": messages[0]["content"]}]
    assert text == make_answer(chat, MODEL).text  # the same answer the chat endpoint gives
    usage = message.usage
    assert usage.input_tokens == count_prompt_tokens(chat)
    assert usage.output_tokens == count_tokens(text)
    assert usage.cache_read_input_tokens == 0 and usage.cache_creation_input_tokens == 0
    assert raw.headers["content-type"].startswith("application/json")
    assert sim.log[-1]["path"] == "/v1/messages" and sim.log[-1]["model"] == MODEL


def test_sdk_max_tokens_stops_with_max_tokens(sim: Simulator) -> None:
    full = sdk(sim).messages.create(model=MODEL, max_tokens=500, messages=user("Write an essay."))
    cut = sdk(sim).messages.create(model=MODEL, max_tokens=5, messages=user("Write an essay."))
    assert full.stop_reason == "end_turn" and full.usage.output_tokens > 5
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 5
    assert full.content[0].text.startswith(cut.content[0].text)  # type: ignore[union-attr]
    empty = sdk(sim).messages.create(model=MODEL, max_tokens=0, messages=user("Write an essay."))
    assert empty.content == [] and empty.stop_reason == "max_tokens"  # 0 pre-warms a cache


def test_sdk_options_prompts_get_one_option(sim: Simulator) -> None:
    for review, label in (("I love it, great value.", "positive"), ("Arrived broken.", "negative")):
        message = sdk(sim).messages.create(
            model=MODEL, max_tokens=10, messages=user(SENTIMENT.format(review))
        )
        assert message.content[0].text == label  # type: ignore[union-attr]


def test_auth_accepts_bearer_or_x_api_key_and_never_echoes_the_key(sim: Simulator) -> None:
    assert post(sim, body())[0] == 200  # authorization: Bearer, as SDK 2.14 sends it
    assert post(sim, body(), {"x-api-key": KEY})[0] == 200  # the long-documented header
    wrong = "sk-ant-wrong-key-abcdefghijklmnop"
    with pytest.raises(anthropic.AuthenticationError) as caught:
        sdk(sim, key=wrong).messages.create(model=MODEL, max_tokens=10, messages=user("hi"))
    assert caught.value.status_code == 401
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    status, _, data = post(sim, body(), {})
    assert status == 401 and data["error"]["message"] == "x-api-key header is required"
    assert wrong not in json.dumps(sim.log) and wrong[5:-2] not in json.dumps(sim.captured)


def test_anthropic_version_header_is_required(sim: Simulator) -> None:
    request = urllib.request.Request(
        sim.anthropic_url + "/v1/messages",
        data=json.dumps(body()).encode(),
        headers={"content-type": "application/json", "x-api-key": KEY},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    with caught.value as error:
        assert error.code == 400
        assert json.loads(error.read()) == {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "anthropic-version: header is required",
            },
        }


@pytest.mark.parametrize(
    ("sent", "field"),
    [
        (b"{not json", None),
        ({"model": MODEL, "messages": user("hi")}, "max_tokens"),
        ({"max_tokens": 10, "messages": user("hi")}, "model"),
        ({"model": MODEL, "max_tokens": 10}, "messages"),
        (body(max_tokens=-1), "max_tokens"),
        (body(max_tokens="10"), "max_tokens"),
        ({**body(), "messages": []}, "messages"),
        ({**body(), "messages": [{"role": "system", "content": "x"}, *user("hi")]}, "messages"),
        ({**body(), "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({**body(), "messages": [{"role": "user", "content": 7}]}, "messages.0.content"),
        (body(system={"text": "x"}), "system"),
        (body(system=[{"type": "image"}]), "system"),
        (body(temperature=1.5), "temperature"),
        (body(max_completion_tokens=10), "max_completion_tokens"),  # OpenAI-only fields
        (body(response_format={"type": "json_object"}), "response_format"),
        (body(stream=True), None),
    ],
)
def test_bad_bodies_get_anthropic_shaped_400s(sim: Simulator, sent: Any, field: str | None) -> None:
    status, _, data = post(sim, sent)
    assert status == 400 and set(data) == {"type", "error"} and data["type"] == "error"
    assert data["error"]["type"] == "invalid_request_error"
    if field is not None:
        assert data["error"]["message"].startswith(f"{field}:")


def test_rate_limit_headers_are_anthropics_with_rfc3339_resets() -> None:
    with Simulator(ttft_ms=0, rpm=60, tpm=600_000) as sim:  # buckets: 1 request, 10k tokens
        status, headers, _ = post(sim, body())
        assert status == 200
        assert headers["anthropic-ratelimit-requests-limit"] == "60"
        assert headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert headers["anthropic-ratelimit-tokens-limit"] == "600000"
        assert 0 < int(headers["anthropic-ratelimit-tokens-remaining"]) < 10_000
        for kind in ("requests", "tokens"):
            reset = datetime.fromisoformat(headers[f"anthropic-ratelimit-{kind}-reset"])
            assert reset.tzinfo is not None and headers[f"anthropic-ratelimit-{kind}-reset"].endswith("Z")
            assert timedelta(0) < reset - datetime.now(UTC) <= timedelta(seconds=2)
        assert not any(h.startswith("x-ratelimit") for h in headers)
        refused = [r for r in (post(sim, body()) for _ in range(3)) if r[0] == 429]
        assert len(refused) == 3
        _, headers, data = refused[-1]
        assert data["error"]["type"] == "rate_limit_error" and headers["retry-after"] == "1"
        assert "retry-after-ms" not in headers  # Anthropic sends whole seconds only
        with pytest.raises(anthropic.RateLimitError):
            sdk(sim).messages.create(model=MODEL, max_tokens=10, messages=user("hi"))


def test_faults_in_anthropics_shapes(sim: Simulator) -> None:
    sim.configure(fault_529=1.0)
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        sdk(sim).messages.create(model=MODEL, max_tokens=10, messages=user("hi"))
    assert overloaded.value.status_code == 529
    assert overloaded.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    sim.configure(fault_529=0.0, fault_5xx=1.0)
    status, _, data = post(sim, body())
    assert status in (500, 502, 503) and data["error"]["type"] == "api_error"
    sim.configure(fault_5xx=0.0, fault_429=1.0, fault_retry_after_s=2.5)
    status, headers, data = post(sim, body())
    assert status == 429 and data["error"]["type"] == "rate_limit_error"
    assert headers["retry-after"] == "3"
    sim.configure(fault_429=0.0, fault_malformed=1.0)
    status, _, data = post(sim, body())
    assert status == 200 and isinstance(data, bytes) and data.startswith(b'{"id": "msg_')
    assert [e["fault"] for e in sim.log] == ["529", "5xx", "429", "malformed"]
    assert {e["path"] for e in sim.log} == {"/v1/messages"}


def test_out_of_credit_is_a_400_like_the_api() -> None:
    with Simulator(ttft_ms=0, quota_requests=1) as sim:
        assert post(sim, body())[0] == 200
        status, _, data = post(sim, body())
        assert status == 400 and "credit balance is too low" in data["error"]["message"]


# -- our requests against what the SDK sends --------------------------------------------


def test_our_request_matches_the_official_sdk(sim: Simulator) -> None:
    """Same path, auth header style, anthropic-version and body field names as SDK 2.14."""
    system, messages = "You are terse.", user("Answer yes or no: is it?")
    sdk(sim).messages.create(model=MODEL, max_tokens=50, system=system, messages=messages)  # type: ignore[arg-type]
    request = Request(0, [{"role": "system", "content": system}, *messages], {"max_tokens": 50})
    _, outcomes = run(provider(sim), [request])
    assert outcomes[0].text in ("yes", "no")
    theirs, ours = sim.captured[-2:]
    assert theirs["headers"]["user-agent"].startswith("Anthropic/Python")
    assert ours["path"] == theirs["path"] == "/v1/messages"
    assert ours["method"] == theirs["method"] == "POST"
    for name in ("anthropic-version", "content-type", "authorization"):
        assert ours["headers"][name] == theirs["headers"][name], name
    assert theirs["headers"]["authorization"].startswith("Bearer ")
    assert "x-api-key" not in ours["headers"] and "x-api-key" not in theirs["headers"]
    assert ours["headers"]["anthropic-version"] == API_VERSION == anthropic._constants.ANTHROPIC_API_VERSION
    assert ours["body"] == theirs["body"]  # same fields, same values, system at the top level
    assert set(ours["body"]) <= FIELDS


def test_default_max_tokens_and_parameters(sim: Simulator) -> None:
    requests = [
        Request(0, user("Write an essay.")),
        Request(1, user("Write an essay."), {"max_tokens": 7, "temperature": 0.0, "stop": "END"}),
    ]
    _, outcomes = run(provider(sim), requests)
    first, second = (c["body"] for c in sim.captured)
    assert first == {"model": MODEL, "max_tokens": DEFAULT_MAX_TOKENS, "messages": user("Write an essay.")}
    assert second["max_tokens"] == 7 and second["temperature"] == 0.0
    assert second["stop_sequences"] == ["END"] and "stop" not in second
    assert outcomes[1].finish_reason == "length" and outcomes[1].usage.output_tokens == 7
    assert outcomes[0].finish_reason == "stop"


# -- our provider through the engine ------------------------------------------------------


def test_engine_gets_answers_with_the_system_prompt_moved_to_the_top(sim: Simulator) -> None:
    system = "You label reviews."
    reviews = ["I love it, great value.", "Arrived broken. Terrible.", "It came on Tuesday."]
    requests = [
        Request(i, [{"role": "system", "content": system}, *user(SENTIMENT.format(r))])
        for i, r in enumerate(reviews)
    ]
    engine, outcomes = run(provider(sim), requests, concurrency=4)
    assert [outcomes[i].text for i in range(3)] == ["positive", "negative", "neutral"]
    assert engine.stats.done == 3 and engine.stopped is None
    assert len(sim.captured) == 3
    for captured in sim.captured:
        sent = captured["body"]
        assert sent["system"] == system
        assert [m["role"] for m in sent["messages"]] == ["user"]
        (request,) = (r for r in requests if r.messages[1] == sent["messages"][0])
        reply = outcomes[request.index]
        assert reply.usage.input_tokens == count_prompt_tokens(chat_messages(sent))
        assert reply.usage.output_tokens == count_tokens(reply.text) and reply.finish_reason == "stop"
        assert reply.model == MODEL
    assert {e["path"] for e in sim.log} == {"/v1/messages"}


def test_529_is_counted_apart_from_429_and_retried() -> None:
    with Simulator(ttft_ms=0, fault_529=0.3, seed=3) as sim:
        stats = EngineStats()
        retry = RetryPolicy(max_retries=10, base=0.005, cap=0.02)
        requests = [Request(i, user(f"row {i}")) for i in range(60)]
        engine, outcomes = run(provider(sim, key=None), requests, concurrency=8, stats=stats, retry=retry)
        sent = len(sim.log)
    assert all(isinstance(v.text, str) for v in outcomes.values()) and stats.done == 60
    assert stats.by_kind["529"] > 5 and "429" not in stats.by_kind
    assert sent == 60 + stats.by_kind["529"]


def test_401_names_the_env_var_and_never_shows_the_key(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "sk-ant-wrong-0123456789-SECRET"
    monkeypatch.setenv("ANTHROPIC_API_KEY", wrong)
    p = make_provider(parse_model(f"anthropic/{MODEL}"), base_url=sim.anthropic_url)
    engine, outcomes = run(p, [Request(i, user(f"q{i}")) for i in range(5)])
    exc = outcomes[0]
    assert isinstance(exc, errors.AuthenticationError) and exc.status == 401
    assert "$ANTHROPIC_API_KEY" in str(exc) and wrong not in str(exc)
    assert isinstance(engine.stopped, errors.AuthenticationError)
    assert len(sim.log) == 1  # the first request goes alone: a bad key costs one round trip
    assert wrong not in repr(p) and wrong not in p.endpoint


def test_401_hint_and_scrubbing_whatever_the_key_source() -> None:
    wrong = "sk-ant-wrong-0123456789-SECRET"
    echoed = {"type": "error", "error": {"type": "authentication_error", "message": f"bad {wrong}"}}
    passed = AnthropicMessages(MODEL, "https://api.anthropic.com", Secret(wrong))
    with pytest.raises(errors.AuthenticationError) as caught:
        passed.parse(401, {}, json.dumps(echoed).encode())  # a server that echoes the key
    assert wrong not in str(caught.value) and "the api_key= you passed" in str(caught.value)
    missing = AnthropicMessages(MODEL, "https://api.anthropic.com", None)
    with pytest.raises(errors.AuthenticationError) as caught:
        missing.parse(401, {}, b"{}")
    assert "$ANTHROPIC_API_KEY, which is not set" in str(caught.value)


def test_rate_limit_headers_reach_the_engine() -> None:
    with Simulator(ttft_ms=0, rpm=6000, tpm=6_000_000) as sim:
        p = provider(sim, key=None)
        status, headers, _ = post(sim, body(), {})
        info = p.rate_limits(headers)
        assert info is not None and status == 200
        assert info.limit_requests == 6000 and info.limit_tokens == 6_000_000
        assert info.remaining_requests == 99 and 0 < (info.remaining_tokens or 0) < 100_000
        assert info.reset_requests is not None and 0 <= info.reset_requests <= 2
        engine, _ = run(p, [Request(0, user("hi"))])
        assert engine.limiter.learned_from == "headers"


# -- unit checks of the dialect ------------------------------------------------------------


def test_parse_normalises_cache_usage() -> None:
    p = AnthropicMessages(MODEL, "https://api.anthropic.com", Secret(KEY))
    answer = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {"type": "text", "text": "Hello"},
            {"type": "text", "text": ", world"},
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "output_tokens": 5,
            "cache_creation_input_tokens": 200,
            "cache_read_input_tokens": 3000,
        },
    }
    reply = p.parse(200, {}, json.dumps(answer).encode())
    assert reply.text == "Hello, world" and reply.finish_reason == "stop"
    assert reply.model == "claude-haiku-4-5-20251001"
    assert (reply.usage.input_tokens, reply.usage.cached_tokens, reply.usage.cache_write_tokens) == (
        3212,
        3000,
        200,
    )
    assert reply.usage.output_tokens == 5
    for stop, finish in (("max_tokens", "length"), ("stop_sequence", "stop_sequence"), ("refusal", "refusal")):
        reply = p.parse(200, {}, json.dumps(answer | {"stop_reason": stop}).encode())
        assert reply.finish_reason == finish
    refused = answer | {"content": [], "stop_reason": "refusal", "usage": {"input_tokens": 9, "output_tokens": 0}}
    reply = p.parse(200, {}, json.dumps(refused).encode())
    assert reply.text is None and reply.usage.input_tokens == 9  # no answer, but the usage counts
    with pytest.raises(errors.MalformedResponse):
        p.parse(200, {}, b'{"type": "message", "content": "oops"}')
    with pytest.raises(errors.MalformedResponse):
        p.parse(200, {}, b'{"id": "msg_sim", "type": "message", "content": [{"type": "te')


@pytest.mark.parametrize(
    ("status", "type_", "message", "expected", "kind"),
    [
        (529, "overloaded_error", "Overloaded", errors.OverloadedError, "529"),
        (429, "rate_limit_error", "slow down", errors.RateLimitError, "429"),
        (500, "api_error", "Internal server error", errors.ServerError, "5xx"),
        (401, "authentication_error", "invalid x-api-key", errors.AuthenticationError, "auth"),
        (403, "permission_error", "no access", errors.AuthenticationError, "auth"),
        (404, "not_found_error", "model: claude-x", errors.BadRequestError, "bad request"),
        (413, "request_too_large", "Request exceeds the maximum size", errors.BadRequestError, "bad request"),
        (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum",
         errors.ContextLengthError, "too long"),
        (400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API.",
         errors.QuotaExceededError, "quota"),
        (400, "billing_error", "billing", errors.QuotaExceededError, "quota"),
    ],
)
def test_errors_are_classified(status: int, type_: str, message: str, expected: type, kind: str) -> None:
    p = AnthropicMessages(MODEL, "https://api.anthropic.com", Secret(KEY))
    raw = json.dumps({"type": "error", "error": {"type": type_, "message": message}}).encode()
    with pytest.raises(expected) as caught:
        p.parse(status, {"retry-after": "7"}, raw)
    assert caught.value.kind == kind and caught.value.status == status
    assert message in caught.value.message
    if caught.value.retryable:
        assert caught.value.retry_after == 7.0
    with pytest.raises(errors.ServerError):
        p.parse(502, {}, b"<html>Bad gateway</html>")


def test_rate_limits_read_rfc3339_resets() -> None:
    p = AnthropicMessages(MODEL, "https://api.anthropic.com", None)
    soon = datetime.now(UTC) + timedelta(seconds=30)
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": soon.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "anthropic-ratelimit-input-tokens-limit": "50000",
        "anthropic-ratelimit-input-tokens-remaining": "40000",
        "anthropic-ratelimit-input-tokens-reset": soon.isoformat(),
    }
    info = p.rate_limits(headers)
    assert info is not None
    assert (info.limit_requests, info.remaining_requests) == (50, 49)
    assert (info.limit_tokens, info.remaining_tokens) == (50000, 40000)  # input-tokens stand in
    assert 28 <= (info.reset_requests or 0) <= 30 and 28 <= (info.reset_tokens or 0) <= 30
    headers |= {
        "anthropic-ratelimit-tokens-limit": "90000",
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": (soon - timedelta(seconds=20)).isoformat(),
    }
    info = p.rate_limits(headers)
    assert info is not None and (info.limit_tokens, info.remaining_tokens) == (90000, 0)
    assert 8 <= (info.reset_tokens or 0) <= 10
    assert p.rate_limits({"content-type": "application/json"}) is None
    assert seconds_until("2001-01-01T00:00:00Z") == 0.0 and seconds_until("soon") is None
    assert seconds_until(None) is None
    assert 59 <= (seconds_until(rfc3339_after(60)) or 0) <= 61
    in_paris = (datetime.now(UTC) + timedelta(seconds=90)).astimezone().isoformat()
    assert 88 <= (seconds_until(in_paris) or 0) <= 90


def test_prepare_builds_the_messages_request() -> None:
    p = AnthropicMessages(MODEL, "https://api.anthropic.com/v1/", Secret(KEY))
    url, headers, raw = p.prepare(
        Request(0, [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": "Use English."},
            {"role": "user", "content": "hi", "name": "ann"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "again"}]},
        ], {"temperature": None, "max_tokens": None})
    )
    assert url == "https://api.anthropic.com/v1/messages"  # a trailing /v1 is not doubled
    assert headers == {
        "content-type": "application/json",
        "anthropic-version": API_VERSION,
        "authorization": f"Bearer {KEY}",
    }
    sent = json.loads(raw)
    assert sent == {
        "model": MODEL,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "system": "Be terse.\n\nUse English.",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "again"}]},
        ],
    }
    blocks = [{"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}}]
    system, turns = split_system([{"role": "system", "content": "Rules."}, {"role": "system", "content": blocks}, *user("q")])
    assert system == [{"type": "text", "text": "Rules."}, *blocks] and turns == user("q")
    assert split_system(user("q")) == (None, user("q"))
    _, headers, _ = AnthropicMessages(MODEL, "http://127.0.0.1:1", None).prepare(Request(0, user("q")))
    assert "authorization" not in headers and "x-api-key" not in headers
    assert KEY not in repr(p) and KEY not in p.endpoint


def test_preset_and_names() -> None:
    ref = parse_model("anthropic/claude-haiku-4-5")
    assert (ref.provider, ref.model) == ("anthropic", "claude-haiku-4-5")
    assert parse_model("claude-sonnet-4-5").provider == "anthropic"
    preset = PRESETS["anthropic"]
    assert (preset.base_url, preset.key_env, preset.base_url_env) == (
        "https://api.anthropic.com",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
    )
    p = make_provider(ref, api_key=KEY)
    assert isinstance(p, AnthropicMessages) and p.prepare(Request(0, user("q")))[0] == (
        "https://api.anthropic.com/v1/messages"
    )
    with pytest.raises(errors.InputError, match="ANTHROPIC_API_KEY"):
        make_provider(ref, base_url="https://example.com")


def test_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    p = make_provider(parse_model(f"anthropic/{MODEL}"))  # a local server needs no key
    assert p.prepare(Request(0, user("q")))[0] == "http://127.0.0.1:9/v1/messages"


# -- through the pandas accessor ----------------------------------------------------------


def test_accessor_end_to_end(sim: Simulator) -> None:
    df = pd.DataFrame(
        {"text": ["I love it, great value.", "Arrived broken. Terrible.", "It came on Tuesday."]},
        index=[10, 20, 30],
    )
    out = df.llm.apply(
        SENTIMENT.format("{text}"),
        model=f"anthropic/{MODEL}",
        output="sentiment",
        system="You label reviews.",
        base_url=sim.anthropic_url,
        api_key=KEY,
        progress=False,
    )
    assert list(out.index) == [10, 20, 30]
    assert list(out["sentiment"]) == ["positive", "negative", "neutral"]
    assert out["sentiment_error"].isna().all()
    assert {e["path"] for e in sim.log} == {"/v1/messages"} and len(sim.log) == 3
    assert all(c["body"]["system"] == "You label reviews." for c in sim.captured)
    assert all(c["headers"]["anthropic-version"] == API_VERSION for c in sim.captured)
