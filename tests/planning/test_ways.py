"""The ways a model can run the rows, priced side by side: figures computed by hand from
published prices, and the choice of the cheapest within a budget and a wall-time limit; then
the same through ``df.llm.estimate`` against the simulator (nothing sent)."""

import dataclasses

import pandas as pd
import pytest

from llmbatch_pd import InputError
from llmbatch_pd.planning import estimate as plan
from llmbatch_pd.planning.pricing import Price
from llmbatch_pd.planning.ways import Offer, Way

from ..conftest import BATCH_DISCOUNT, KEY

# gpt-4.1-mini, published: $0.40 input, $0.10 cached input, $1.60 output per million tokens
PRICE = Price(0.40, 1.60, cached_input_per_mtok=0.10)
N, PROMPT, STATIC, OUT = 100, 2000, 1800, 100  # requests, tokens each, static start, output


def build(offer: Offer, budget: float | None = None, concurrency: int = 10) -> plan.Estimate:
    return plan.build("openai/gpt-4.1-mini", rows=N, duplicates=0, cached=0, skipped=0,
                      too_long=0, input_counts=[PROMPT] * N, exact=True, token_counting="exact",
                      price=PRICE, max_tokens=None, concurrency=concurrency, rpm=None, tpm=None,
                      budget=budget, offer=offer)


# what the provider offers: 1,792 tokens (1,800 in 128-token steps) cacheable, batch, flex
OFFER = Offer(tokens=1792, minimum=1024, step=128, static=STATIC, batch=True, flex=True)


def by_name(ways: list[Way]) -> dict[str, Way]:
    return {w.name: w for w in ways}


def test_each_way_is_priced_from_the_price_table() -> None:
    est = build(OFFER)
    ways = by_name(est.ways)
    output = N * OUT * 1.60 / 1e6
    plain = N * PROMPT * 0.40 / 1e6 + output
    # the first request (sent alone) misses, the other 99 read 1,792 tokens each
    read = 99 * 1792
    cached = (N * PROMPT - read) * 0.40 / 1e6 + read * 0.10 / 1e6 + output
    assert ways["per row"].cost == pytest.approx(plain)
    assert ways["per row, prompt cached"].cost == pytest.approx(cached)
    assert ways["flex"].cost == pytest.approx(cached / 2)
    assert ways["batch"].cost == pytest.approx(plain / 2)
    assert ways["batch"].option == 'mode="batch"' and ways["flex"].option == 'tier="flex"'
    # the run as given (real time, standard tier) expects the cached figure
    assert est.cost == pytest.approx(cached)
    assert est.cached_input_tokens == read and est.cache_write_tokens == 0
    assert est.prompt_cache_saves == pytest.approx(plain - cached)
    # packed: fewer requests, each row's own 200 tokens plus the instructions once per pack
    for k in (5, 10, 20):
        packed = ways[f"packed {k}"]
        assert packed.requests == N // k and packed.option == f"pack={k}"
        assert packed.cost < ways["per row"].cost
    assert ways["packed 20"].cost < ways["packed 5"].cost
    assert sum(w.cheapest for w in est.ways) == 1
    assert est.cheapest.cost == min(w.cost for w in est.ways)


def test_cheapest_respects_budget_and_wall_time() -> None:
    est = build(OFFER)
    cheapest = est.cheapest
    within_an_hour = est.ways_within(max_wall_s=3600)
    assert not by_name(within_an_hour)["batch"].fits  # 24 h window
    best = next(w for w in within_an_hour if w.cheapest)
    assert best.wall_s <= 3600 and best.cost == min(w.cost for w in within_an_hour if w.fits)
    # a budget below every way: nothing fits, nothing is marked
    none_fit = est.ways_within(budget=cheapest.cost / 2)
    assert not any(w.fits or w.cheapest for w in none_fit)
    # a budget only the per-row run breaks
    per_row = by_name(est.ways)["per row"].cost
    fits = by_name(build(OFFER, budget=per_row * 0.99).ways)
    assert not fits["per row"].fits and fits["per row, prompt cached"].fits


def test_anthropic_style_writes_are_priced_and_under_the_minimum_nothing_is_cached() -> None:
    sonnet = Price(3.00, 15.00, cached_input_per_mtok=0.30, cache_write_per_mtok=3.75)
    offer = Offer(tokens=1800, minimum=1024, writes=True, static=STATIC, batch=True)
    est = plan.build("anthropic/claude-sonnet-4-5", rows=N, duplicates=0, cached=0, skipped=0,
                     too_long=0, input_counts=[PROMPT] * N, exact=False, token_counting="h",
                     price=sonnet, max_tokens=None, concurrency=10, rpm=None, tpm=None,
                     budget=None, offer=offer)
    # the first request writes 1,800 tokens, 99 read them, the rest at the input price
    written, read = 1800, 99 * 1800
    expected = ((N * PROMPT - written - read) * 3.00 + written * 3.75 + read * 0.30
                + N * OUT * 15.00) / 1e6
    assert est.cost == pytest.approx(expected)
    # the high end assumes no hits: every request writes
    high_in = est.input_tokens_high
    worst = ((high_in - N * 1800) * 3.00 + N * 1800 * 3.75 + est.output_tokens_high * 15.00) / 1e6
    assert est.cost_high == pytest.approx(worst)
    assert "flex" not in by_name(est.ways)
    under = dataclasses.replace(offer, tokens=0)
    plain = plan.build("anthropic/claude-haiku-4-5", rows=N, duplicates=0, cached=0, skipped=0,
                       too_long=0, input_counts=[PROMPT] * N, exact=False, token_counting="h",
                       price=sonnet, max_tokens=None, concurrency=10, rpm=None, tpm=None,
                       budget=None, offer=under)
    assert plain.cached_input_tokens == plain.cache_write_tokens == 0
    assert plain.cost == pytest.approx((N * PROMPT * 3.00 + N * OUT * 15.00) / 1e6)


def test_estimate_frame_lists_the_ways(sim) -> None:
    df = pd.DataFrame({"text": [f"review {i}" for i in range(60)]})
    template = "Rule: label the review as positive or negative. " * 200 + "\n\nReview: {text}"
    frame = df.llm.estimate(template, model=["openai/gpt-4.1-mini", "openai/gpt-4o-mini"],
                            base_url=sim.base_url, api_key=KEY)
    assert sim.log == []  # an estimate sends nothing
    mini, four_o = frame.loc["openai/gpt-4.1-mini"], frame.loc["openai/gpt-4o-mini"]
    # each way's dollars by hand from the token counts and the published prices per million
    # tokens (input, cached input, output): gpt-4.1-mini 0.40, 0.10, 1.60; gpt-4o-mini 0.15,
    # 0.075, 0.60. The batch APIs halve input and output (no cache discount); OpenAI's flex tier
    # is "priced at Batch API rates, with additional discounts from prompt caching" (its
    # flex-processing guide): gpt-4.1-mini 0.20, 0.05, 0.80
    for row, (price_in, price_cached, price_out), flex in (
            (mini, (0.40, 0.10, 1.60), (0.20, 0.05, 0.80)), (four_o, (0.15, 0.075, 0.60), None)):
        n_in, n_out, read = row["input_tokens"], row["output_tokens"], row["cached_input_tokens"]
        assert 0 < read < n_in and read % (60 - 1) == 0  # the first request misses, 59 read the start
        assert read // 59 % 128 == 0  # in 128-token steps
        plain = (n_in * price_in + n_out * price_out) / 1e6
        cached = ((n_in - read) * price_in + read * price_cached + n_out * price_out) / 1e6
        assert row["per row $"] == pytest.approx(plain, rel=1e-4)
        assert row["per row, prompt cached $"] == pytest.approx(cached, rel=1e-4)
        assert row["batch $"] == pytest.approx(plain * BATCH_DISCOUNT, rel=1e-4)
        assert row["cost"] == pytest.approx(cached, rel=1e-4)  # real time, standard tier: the cached figure
        if flex:
            by_hand = ((n_in - read) * flex[0] + read * flex[1] + n_out * flex[2]) / 1e6
            assert row["flex $"] == pytest.approx(by_hand, rel=1e-4)
    assert mini["flex $"] == pytest.approx(mini["per row, prompt cached $"] / 2)
    assert mini["batch $"] == pytest.approx(mini["per row $"] / 2)
    assert pd.isna(four_o.get("flex $"))  # gpt-4o-mini has no flex tier
    assert mini["cheapest way"] in {"flex", "batch", "packed 5", "packed 10", "packed 20"}
    assert mini["cost"] == pytest.approx(mini["per row, prompt cached $"])


def test_estimate_with_tier_flex_expects_the_flex_figure(sim) -> None:
    df = pd.DataFrame({"text": [f"review {i}" for i in range(60)]})
    template = "Rule: label the review as positive or negative. " * 200 + "\n\nReview: {text}"
    options = dict(model="openai/gpt-4.1-mini", base_url=sim.base_url, api_key=KEY)
    standard = df.llm.estimate(template, **options).iloc[0]
    flex = df.llm.estimate(template, tier="flex", **options).iloc[0]
    assert flex["cost"] == pytest.approx(standard["cost"] / 2)
    assert flex["flex $"] == pytest.approx(standard["flex $"])  # the ways are the same
    with pytest.raises(InputError, match="flex"):
        df.llm.estimate(template, tier="flex", mode="batch", **options)
    assert sim.log == []
