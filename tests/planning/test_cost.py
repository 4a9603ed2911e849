"""Estimates, budgets and accounting, against the simulator's own record of what it billed."""

import random

import numpy as np
import pandas as pd
import pytest

from llmbatch_pd import BudgetError, InputError
from llmbatch_pd.sim import Simulator
from llmbatch_pd.sim.answers import prompt_sha

from ..conftest import KEY, MODEL

# gpt-4.1-mini's published price, dollars per million tokens (no cached tokens in these runs).
INPUT_PER_MTOK, OUTPUT_PER_MTOK = 0.40, 1.60
# The published list prices of the models compared side by side: (input, output) per million.
LIST_PRICES = {"openai/gpt-4.1-mini": (0.40, 1.60), "openai/gpt-4o-mini": (0.15, 0.60),
               "deepseek/deepseek-chat": (0.27, 1.10), "gemini/gemini-2.5-flash": (0.30, 2.50)}


def billed(log) -> float:
    """Dollars for every answer the simulator gave, by hand: the tokens it returned as usage
    times gpt-4.1-mini's published price."""
    return sum(e["prompt_tokens"] * INPUT_PER_MTOK + e["completion_tokens"] * OUTPUT_PER_MTOK
               for e in log if e["status"] == 200) / 1e6


def entry_for(log, prompt: str) -> dict:
    """The simulator's log entry of the one answered request for ``prompt``."""
    sha = prompt_sha([{"role": "user", "content": prompt}])
    (entry,) = [e for e in log if e["prompt_sha"] == sha and e["status"] == 200]
    return entry


def varied_texts(n, seed=0):
    rng = random.Random(seed)
    words = ["phở", "great", "giao hàng", "slow", "quality", "tuyệt vời", "broken", "price",
             "đóng gói", "recommend", "😊", "shop", "không", "fresh", "coffee"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 120))) for _ in range(n)]


def test_expected_cost_within_15_percent_and_actual_below_high():
    df = pd.DataFrame({"text": varied_texts(1000)})
    with Simulator(ttft_ms=5, answer_tokens=60) as sim:
        opts = dict(model=MODEL, base_url=sim.base_url, api_key=KEY, max_tokens=200, concurrency=100)
        est = df.llm.estimate("Summarise this review: {text}", pilot=20, **opts).iloc[0]
        out = df.llm.apply("Summarise this review: {text}", progress=False, **opts)
        actual = billed(sim.log)
    assert out["llm_output"].notna().all()
    report = out.llm.report
    assert report.cost == pytest.approx(actual - billed(sim.log[:20]), rel=1e-6)  # pilot came from cache
    total = actual
    assert abs(est["cost"] - total) / total <= 0.15, (est["cost"], total)
    assert total <= est["cost_high"]
    assert est["cost_low"] <= total


def test_twenty_random_runs_never_exceed_tight_budgets():
    """Answers far longer than the estimate assumes, so every run meets its budget mid-way."""
    rng = random.Random(42)
    stopped_runs = 0
    for trial in range(20):
        n = rng.randint(50, 300)
        concurrency = rng.choice([1, 4, 16, 64, 200])
        df = pd.DataFrame({"text": varied_texts(n, seed=trial)})
        with Simulator(ttft_ms=rng.choice([1, 5, 20]), jitter_ms=10, answer_tokens=rng.randint(250, 450),
                       seed=trial, fault_429=0.02, fault_retry_after_s=0.05) as sim:
            opts = dict(model=MODEL, base_url=sim.base_url, api_key=KEY, max_tokens=500, cache=False)
            expected = df.llm.estimate("Write at length about: {text}", **opts).iloc[0]["cost"]
            budget = round(expected * rng.uniform(1.0, 1.6), 6)
            out = df.llm.apply("Write at length about: {text}", budget=budget, concurrency=concurrency,
                               progress=False, **opts)
            spent = billed(sim.log)
        assert spent <= budget + 1e-12, (trial, spent, budget)
        assert out.llm.report.cost == pytest.approx(spent)
        both = out["llm_output"].notna() & out["llm_output_error"].notna()  # answers cut at max_tokens
        assert (out["llm_output"].notna() | out["llm_output_error"].notna()).all()
        assert out.loc[both, "llm_output_error"].str.startswith("truncated at max_tokens=").all()
        reached = out["llm_output_error"].str.contains("budget reached", na=False)
        if reached.any():
            stopped_runs += 1
            assert "budget reached" in out.llm.report.summary()
            assert spent >= 0.5 * budget  # it used the budget, not stopped needlessly early
    assert stopped_runs >= 15


def test_budget_refuses_to_start_when_expected_cost_is_above_it(llm, sim):
    df = pd.DataFrame({"text": varied_texts(200)})
    with pytest.raises(BudgetError, match="expected cost is above the budget"):
        df.llm.apply("Summarise: {text}", budget=0.0001, **llm)
    assert sim.log == []


def test_unknown_model_cannot_run_under_budget_without_prices(sim):
    df = pd.DataFrame({"text": ["a"]})
    opts = dict(base_url=sim.base_url, api_key=KEY, progress=False)
    with pytest.raises(InputError, match="prices="):
        df.llm.apply("{text}", model="my-local-model", budget=1.0, **opts)
    out = df.llm.apply("{text}", model="my-local-model", **opts)  # without a budget it runs
    assert out["llm_output"].notna().all()
    sim.reset()
    out = df.llm.apply("{text}", model="my-local-model", budget=1.0, prices={"my-local-model": (1.0, 2.0)},
                       usage=True, cache=False, **opts)
    (answer,) = sim.log  # the usage the simulator returned, priced by hand at $1 / $2 a million
    assert out.iloc[0]["llm_output_cost"] == pytest.approx(
        (answer["prompt_tokens"] * 1.0 + answer["completion_tokens"] * 2.0) / 1e6)
    assert out.llm.report.cost == pytest.approx(out.iloc[0]["llm_output_cost"])


def test_usage_columns_and_report_totals(llm, sim):
    df = pd.DataFrame({"text": ["alpha", "beta", "alpha", None]})
    out = df.llm.apply("Say {text}", usage=True, **llm)
    assert str(out["llm_output_input_tokens"].dtype) == "Int64"
    assert str(out["llm_output_cost"].dtype) == "Float64"
    # the duplicate row paid nothing; the skipped row has no usage
    assert out.loc[2, "llm_output_cost"] == 0 and pd.isna(out.loc[3, "llm_output_cost"])
    assert len(sim.log) == 2
    alpha, beta = entry_for(sim.log, "Say alpha"), entry_for(sim.log, "Say beta")
    for row, entry in ((0, alpha), (1, beta)):  # each row's tokens and dollars, as the sim billed
        assert out.loc[row, "llm_output_input_tokens"] == entry["prompt_tokens"]
        assert out.loc[row, "llm_output_output_tokens"] == entry["completion_tokens"]
        assert out.loc[row, "llm_output_cost"] == pytest.approx(billed([entry]))
    assert out["llm_output_cost"].sum() == pytest.approx(billed(sim.log))
    report = out.llm.report
    assert report.cost == pytest.approx(billed(sim.log))
    assert report.saved_by_dedup == pytest.approx(billed([alpha]))  # row 2 repeats row 0
    again = df.llm.apply("Say {text}", usage=True, **llm)
    assert again.llm.report.saved_by_cache == pytest.approx(billed(sim.log))
    assert again.llm.report.cost == 0


def test_estimate_compares_models_side_by_side(llm, sim):
    df = pd.DataFrame({"text": varied_texts(50)})
    models = ["openai/gpt-4.1-mini", "openai/gpt-4o-mini", "deepseek/deepseek-chat", "gemini/gemini-2.5-flash"]
    est = df.llm.estimate("Classify: {text}", model=models, base_url=sim.base_url, api_key=KEY, max_tokens=5)
    assert list(est.index) == models
    assert (est["requests"] == 50).all()
    # the dollars follow from the estimated tokens at each model's published price, by hand
    by_hand = [(est.loc[m, "input_tokens"] * LIST_PRICES[m][0] + est.loc[m, "output_tokens"] * LIST_PRICES[m][1])
               / 1e6 for m in models]
    assert np.allclose(est["cost"], by_hand, rtol=1e-9)
    assert np.allclose(est["batch_cost"], np.array(by_hand) * 0.5, rtol=1e-9)  # batch APIs: half price
    assert (est["cost_low"] <= est["cost"]).all() and (est["cost"] <= est["cost_high"]).all()
    assert est.loc["openai/gpt-4o-mini", "cost"] < est.loc["openai/gpt-4.1-mini", "cost"]
    assert sim.log == []  # an estimate without a pilot sends nothing


def test_pilot_answers_are_kept_not_paid_twice(llm, sim):
    df = pd.DataFrame({"text": varied_texts(100)})
    est = df.llm.estimate("Summarise: {text}", pilot=10, **{k: v for k, v in llm.items() if k != "progress"})
    assert len(sim.log) == 10
    assert est.iloc[0]["output_basis"].startswith("pilot of 10")
    out = df.llm.apply("Summarise: {text}", **llm)
    assert len(sim.log) == 100  # the pilot's 10 came from the cache
    assert out.llm.report.cached == 10


# -- earlier runs of a template stand in for a pilot ----------------------------------------

TEMPLATE = "Classify the sentiment of this review as positive, negative or neutral.\nReview: {t}"


def test_a_second_run_of_a_template_is_estimated_from_the_first(llm, sim):
    df = pd.DataFrame({"t": varied_texts(300, seed=3)})
    first = df.llm.estimate(TEMPLATE, **llm)
    assert "default" in df.head(100).llm.apply(TEMPLATE, budget=1.0, **llm).llm.report.estimate.output_basis
    rest = df.iloc[100:]
    later = rest.llm.estimate(TEMPLATE, **llm)
    sim.reset()
    out = rest.llm.apply(TEMPLATE, budget=1.0, **llm)
    report = out.llm.report
    assert "earlier answers to this template" in report.estimate.output_basis
    assert len(sim.log) == 200  # what this run was answered and billed, by the simulator's record
    answered_tokens = sum(e["completion_tokens"] for e in sim.log)
    assert later["output_tokens"].iloc[0] == pytest.approx(answered_tokens, rel=0.25)
    assert later["cost"].iloc[0] == pytest.approx(billed(sim.log), rel=0.15)
    # the defaults (100 output tokens an answer) were far off for a one-word answer
    assert first["output_tokens"].iloc[0] / 300 > 5 * later["output_tokens"].iloc[0] / 200
    other = rest.llm.estimate("Summarise: {t}", **llm)  # another template has no history
    assert other["output_tokens"].iloc[0] == 100 * len(rest)


def test_learned_rate_limits_shape_the_next_wall_time_estimate(private_cache):
    with Simulator(ttft_ms=5, api_key=KEY, rpm=600) as limited:
        kw = {"model": MODEL, "base_url": limited.base_url, "api_key": KEY, "progress": False}
        df = pd.DataFrame({"t": [f"review {i}" for i in range(400)]})
        before = df.llm.estimate(TEMPLATE, **kw)["wall_time_s"].iloc[0]
        df.head(20).llm.apply(TEMPLATE, **kw)  # the headers say 600 requests a minute
        after = df.llm.estimate(TEMPLATE, **kw)["wall_time_s"].iloc[0]
    assert before < 15 and 35 < after < 50  # 380 requests at ~10 a second


def test_no_history_without_a_cache(llm, sim):
    df = pd.DataFrame({"t": varied_texts(30, seed=4)})
    df.llm.apply(TEMPLATE, cache=False, **llm)
    assert df.llm.estimate(TEMPLATE, cache=False, **llm)["output_tokens"].iloc[0] == 100 * 30


def test_cache_reads_and_writes_are_priced_from_the_catalogue() -> None:
    """claude-sonnet-4-5's published prices per million: $3 input, $0.30 cache reads, $3.75
    five-minute writes, $6 one-hour writes, $15 output; flex = half (OpenAI: batch rates)."""
    from llmbatch_pd.core.types import Usage
    from llmbatch_pd.planning.pricing import cost, flex_price, price_for, prompt_cache_saving

    price = price_for("anthropic", "claude-sonnet-4-5")
    usage = Usage(input_tokens=10_000, output_tokens=1_000, cached_tokens=4_000,
                  cache_write_tokens=3_000, cache_write_1h_tokens=1_000)
    by_hand = (3_000 * 3.00 + 4_000 * 0.30 + 2_000 * 3.75 + 1_000 * 6.00 + 1_000 * 15.00) / 1e6
    assert cost(usage, price) == pytest.approx(by_hand)
    plain = (10_000 * 3.00 + 1_000 * 15.00) / 1e6
    assert prompt_cache_saving(usage, price) == pytest.approx(plain - by_hand)
    mini = price_for("openai", "gpt-4.1-mini")
    read = Usage(input_tokens=2_000, output_tokens=100, cached_tokens=1_536)
    by_hand = (464 * 0.40 + 1_536 * 0.10 + 100 * 1.60) / 1e6
    assert cost(read, mini) == pytest.approx(by_hand)
    assert cost(read, flex_price(mini)) == pytest.approx(by_hand / 2)
