"""Prompt caching and the flex tier, over real HTTP against the simulator: what goes on the
wire (prompt_cache_key, cache_control on the static prefix, service_tier), what comes back
(cached reads and writes in the usage), and what it costs, checked against bills computed by
hand from the simulator's request log and published prices."""

import json

import pandas as pd
import pytest

from llmbatch_pd import InputError
from llmbatch_pd.sim import Simulator
from llmbatch_pd.sim.tokens import count_tokens

from ..conftest import KEY

# Published prices, dollars per million tokens, typed in by hand (OpenAI's and Anthropic's
# pricing pages): input, cached input (read), 5-minute cache write, output.
GPT41_MINI = {"input": 0.40, "read": 0.10, "write": 0.40, "output": 1.60}
SONNET45 = {"input": 3.00, "read": 0.30, "write": 3.75, "write_1h": 6.00, "output": 15.00}
HAIKU45 = {"input": 1.00, "read": 0.10, "write": 1.25, "output": 5.00}
ROWS = 400
WORDS = ("shipping", "quality", "refund", "packaging", "price", "delivery", "support", "taste")


def instruction(tokens: int) -> str:
    """A task description of about ``tokens`` tokens by the simulator's own count."""
    sentences, i = [], 0
    while count_tokens(" ".join(sentences)) < tokens:
        word = WORDS[i % len(WORDS)]
        sentences.append(f"Rule {i}: when the review mentions {word}, weigh it as a {word} issue.")
        i += 1
    return " ".join(sentences)


def reviews(n: int = ROWS) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"review {i}: {WORDS[i % 8]} was {'good' if i % 3 else 'bad'}"
                                  for i in range(n)]})


def hand_bill(entries: list[dict], price: dict) -> tuple[float, float]:
    """(dollars billed, dollars the same answers cost without prompt caching), by hand from
    the simulator's log: cached tokens at the read price, written ones at the write price, the
    rest at the input price."""
    billed = plain = 0.0
    for e in entries:
        if e["status"] != 200:
            continue
        read, written = e.get("cached_tokens", 0), e.get("cache_write_tokens", 0)
        rest = e["prompt_tokens"] - read - written
        out = e["completion_tokens"] * price["output"]
        billed += rest * price["input"] + read * price["read"] + written * price["write"] + out
        plain += e["prompt_tokens"] * price["input"] + out
    return billed / 1e6, plain / 1e6


@pytest.fixture
def sim():
    with Simulator(ttft_ms=2, api_key=KEY, capture_requests=1000) as s:
        yield s


def test_openai_long_instruction_is_mostly_read_from_the_cache(sim: Simulator) -> None:
    template = instruction(2500) + "\n\nReview: {text}"
    options = dict(model="openai/gpt-4.1-mini", base_url=sim.base_url, api_key=KEY, progress=False)
    # a pilot measures the answers' length (and our token count); its answers are reused
    estimate = reviews().llm.estimate(template, pilot=10, **options)
    piloted = len(sim.log)
    out = reviews().llm.apply(template, **options)
    assert out["llm_output"].notna().all()
    entries = [e for e in sim.log if e["status"] == 200]
    assert len(entries) == ROWS
    run = [e for e in sim.log[piloted:] if e["status"] == 200]  # the apply's (the pilot's are reused)
    cached = sum(e.get("cached_tokens", 0) for e in entries)
    prompt = sum(e["prompt_tokens"] for e in entries)
    assert cached >= 0.60 * prompt, f"only {cached / prompt:.0%} of input tokens cached"
    # every request carried the same prompt_cache_key, and nothing else marked the prompt
    keys = {c["body"]["prompt_cache_key"] for c in sim.captured if c["path"].endswith("/chat/completions")}
    assert len(keys) == 1
    billed, plain = hand_bill(run, GPT41_MINI)
    report = out.llm.report
    assert report.cost == pytest.approx(billed, rel=1e-9)
    assert report.saved_by_prompt_cache == pytest.approx(plain - billed, rel=1e-6)
    expected = estimate.loc["openai/gpt-4.1-mini", "cost"]
    assert 0.75 <= expected / billed <= 1.33, (expected, billed)


@pytest.mark.parametrize("model,price,marked", [
    ("claude-sonnet-4-5", SONNET45, True),  # minimum 1,024: a 2,500-token prefix is cached
    ("claude-haiku-4-5", HAIKU45, False),   # minimum 4,096: not marked, nothing cached
])
def test_anthropic_marks_the_static_prefix_above_the_minimum(sim: Simulator, model: str,
                                                             price: dict, marked: bool) -> None:
    head = instruction(2500)
    template = head + "\n\nReview: {text}"
    options = dict(model=f"anthropic/{model}", base_url=sim.anthropic_url, api_key=KEY, progress=False,
                   system="You label product reviews.")
    estimate = reviews().llm.estimate(template, pilot=10, **options)
    piloted = len(sim.log)
    out = reviews().llm.apply(template, **options)
    assert out["llm_output"].notna().all()
    sent = [c["body"] for c in sim.captured if c["path"] == "/v1/messages"]
    assert len(sent) == ROWS
    for body in sent:
        content = body["messages"][-1]["content"]
        if marked:  # the static part first, marked; the row after it
            assert content[0] == {"type": "text", "text": head + "\n\nReview: ",
                                  "cache_control": {"type": "ephemeral"}}
            assert content[1]["text"].startswith("review ") and "cache_control" not in content[1]
        else:
            assert "cache_control" not in json.dumps(body)
    entries = [e for e in sim.log if e["status"] == 200]
    read = sum(e.get("cached_tokens", 0) for e in entries)
    written = sum(e.get("cache_write_tokens", 0) for e in entries)
    prompt = sum(e["prompt_tokens"] for e in entries)
    billed, plain = hand_bill([e for e in sim.log[piloted:] if e["status"] == 200], price)
    report = out.llm.report
    assert report.cost == pytest.approx(billed, rel=1e-9)
    est = estimate.loc[f"anthropic/{model}"]
    if marked:
        assert read >= 0.60 * prompt and written > 0
        assert report.saved_by_prompt_cache == pytest.approx(plain - billed, rel=1e-6)
        assert est["cached_input_tokens"] > 0.5 * est["input_tokens"]
    else:
        assert read == written == 0 and report.saved_by_prompt_cache == 0
        assert est["cached_input_tokens"] == 0 and est["cache_write_tokens"] == 0
    assert 0.75 <= est["cost"] / billed <= 1.33, (est["cost"], billed)


def test_anthropic_batch_lines_mark_with_a_one_hour_ttl(sim: Simulator) -> None:
    head = instruction(1500)
    df = reviews(20)
    out = df.llm.apply(head + "\n\nReview: {text}", model="anthropic/claude-sonnet-4-5",
                       base_url=sim.anthropic_url, api_key=KEY, progress=False, mode="batch",
                       poll_interval=0.05)
    assert out["llm_output"].notna().all()
    (create,) = [c["body"] for c in sim.captured if c["path"] == "/v1/messages/batches"]
    for line in create["requests"]:
        assert line["params"]["messages"][-1]["content"][0]["cache_control"] == {
            "type": "ephemeral", "ttl": "1h"}


def test_flex_sends_service_tier_and_bills_batch_rates(sim: Simulator) -> None:
    df = reviews(30)
    options = dict(model="openai/gpt-4.1-mini", base_url=sim.base_url, api_key=KEY, progress=False)
    out = df.llm.apply("Label: {text}", tier="flex", **options)
    assert out["llm_output"].notna().all()
    bodies = [c["body"] for c in sim.captured if c["path"].endswith("/chat/completions")]
    assert len(bodies) == 30 and all(b["service_tier"] == "flex" for b in bodies)
    entries = [e for e in sim.log if e["status"] == 200]
    assert all(e.get("service_tier") == "flex" for e in entries)
    billed, _ = hand_bill(entries, GPT41_MINI)
    assert out.llm.report.cost == pytest.approx(billed / 2, rel=1e-9)  # batch rates: half


def test_flex_capacity_429s_are_waited_out(sim: Simulator) -> None:
    sim.configure(fault_flex_429=0.3, fault_retry_after_s=0.05)
    out = reviews(20).llm.apply("Label: {text}", tier="flex", model="openai/gpt-4.1-mini",
                                base_url=sim.base_url, api_key=KEY, progress=False, max_retries=0)
    assert out["llm_output"].notna().all()  # max_retries=0: only a rate-limit-like wait gets here
    assert any(e.get("fault") == "flex_429" for e in sim.log)


def test_flex_is_refused_before_sending_for_a_model_without_it(sim: Simulator) -> None:
    for model, base in (("openai/gpt-4o-mini", sim.base_url), ("anthropic/claude-sonnet-4-5",
                                                                sim.anthropic_url)):
        with pytest.raises(InputError, match="flex"):
            reviews(3).llm.apply("Label: {text}", tier="flex", model=model, base_url=base,
                                 api_key=KEY, progress=False)
    with pytest.raises(InputError, match="tier="):
        reviews(3).llm.apply("Label: {text}", tier="fast", model="openai/gpt-4.1-mini",
                             base_url=sim.base_url, api_key=KEY, progress=False)
    assert sim.log == []


DEEPSEEK_CHAT = {"input": 0.27, "read": 0.07, "write": 0.27, "output": 1.10}


def test_deepseek_cache_hits_are_billed_at_the_cached_price(sim: Simulator) -> None:
    template = instruction(1500) + "\n\nReview: {text}"
    out = reviews(80).llm.apply(template, model="deepseek/deepseek-chat", base_url=sim.base_url,
                                api_key=KEY, progress=False, concurrency=4, usage=True)
    entries = [e for e in sim.log if e["status"] == 200]
    assert sum(e.get("cached_tokens", 0) for e in entries) > 0
    billed, plain = hand_bill(entries, DEEPSEEK_CHAT)
    assert billed < plain
    assert out["llm_output_cost"].sum() == pytest.approx(billed, rel=1e-9)


def test_deepseek_usage_without_details_still_counts_hits() -> None:
    """DeepSeek's documented usage: prompt_cache_hit_tokens / _miss_tokens, no details block."""
    from llmbatch_pd.providers.registry import make_provider, parse_model

    provider = make_provider(parse_model("deepseek/deepseek-chat"), api_key="sk-x")
    body = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1500, "completion_tokens": 5,
                      "prompt_cache_hit_tokens": 1280, "prompt_cache_miss_tokens": 220}}
    reply = provider.parse(200, {}, json.dumps(body).encode())
    assert (reply.usage.input_tokens, reply.usage.cached_tokens) == (1500, 1280)


def test_anthropic_cuts_at_the_rows_marker_only_in_a_pack(sim: Simulator) -> None:
    """A row whose value holds the packed rows marker's text (``\\n\\n<rows>\\n``) is no pack:
    without a template prefix nothing is marked (no cache write paid on every row). A pack is
    marked up to where its rows start, and later packs read that start from the cache."""
    head = instruction(2500)
    options = dict(model="anthropic/claude-sonnet-4-5", base_url=sim.anthropic_url, api_key=KEY,
                   progress=False)
    rows = pd.DataFrame({"text": [f"{head}\n\n<rows>\nrow {i}" for i in range(4)]})
    out = rows.llm.apply("{text}", **options)
    assert out["llm_output"].notna().all()
    sent = [c["body"] for c in sim.captured if c["path"] == "/v1/messages"]
    assert len(sent) == 4 and "cache_control" not in json.dumps(sent)
    assert not any(e.get("cache_write_tokens") for e in sim.log)
    before = len(sim.captured)
    out = reviews(40).llm.apply(head + "\n\nReview: {text}", pack=10, **options)
    assert out["llm_output"].notna().all()
    packs = [c["body"] for c in sim.captured[before:] if c["path"] == "/v1/messages"]
    assert len(packs) == 4
    for body in packs:
        static = body["messages"][-1]["content"][0]
        assert static["cache_control"] == {"type": "ephemeral"}
        assert static["text"].endswith("\n\nReview: <text>") and "<rows>" not in static["text"]
    assert sum(e.get("cached_tokens", 0) for e in sim.log[4:]) > 0


@pytest.mark.parametrize("model", ["claude-3-5-haiku", "claude-sonnet-4-5"])  # a forced tool; output_config
def test_a_pack_is_known_by_its_packed_answer_both_ways(model: str) -> None:
    from llmbatch_pd.core.schema import OutputSchema, PackedSchema
    from llmbatch_pd.providers.anthropic import AnthropicMessages, _is_pack

    provider = AnthropicMessages(model, "http://127.0.0.1:9", None)
    user = OutputSchema.from_user({"label": str})
    assert _is_pack(provider.structured(PackedSchema())) and _is_pack(provider.structured(PackedSchema(user)))
    assert not _is_pack(provider.structured(user)) and not _is_pack({})
    assert not _is_pack(provider.structured(OutputSchema.from_user({"rows": list[str]})))
