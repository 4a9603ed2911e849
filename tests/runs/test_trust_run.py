"""Hardening of the run's request stream, templates, batch mode and embeddings (issue 10).

Real HTTP against the simulator; the expected outcomes come from the simulator's request log
(what was sent, uploaded, cancelled), hand-computed bills and the rows themselves.
"""

from __future__ import annotations

import asyncio
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import llmbatch_pd  # noqa: F401  (registers df.llm)
from llmbatch_pd.core import errors
from llmbatch_pd.core.prompts import Template
from llmbatch_pd.core.types import Request, Usage
from llmbatch_pd.providers.registry import make_provider, parse_model
from llmbatch_pd.runs.chat import Run
from llmbatch_pd.runs.spec import RunSpec
from llmbatch_pd.sim import Simulator

from ..conftest import cancel_once_batched, wait_until
from .test_batch import FAST, KEY, OPENAI_MODEL, claude_kw, creations, openai_kw

CHAT_PATHS = ("/v1/chat/completions", "/v1/messages")


@pytest.fixture
def sim():
    with Simulator(ttft_ms=2, api_key=KEY, batch_seconds=0.3) as s:
        yield s


def chat_requests(sim: Simulator) -> list[dict[str, Any]]:
    return [e for e in sim.log if e["path"] in CHAT_PATHS]


# -- 1. different values, the same prompt ------------------------------------------------------


def same_prompt_frame() -> pd.DataFrame:
    """Pairs of rows whose values differ but render the same prompt under "{p:.0f} {q}"."""
    return pd.DataFrame({"p": [1.0, 1.001, 2.0, 2.2, 3.0, 3.0],
                         "q": ["a", "a", None, "", "b", "b"]}, index=list("uvwxyz"))


@pytest.mark.parametrize("kw", [openai_kw, claude_kw], ids=["openai", "anthropic"])
def test_batch_rows_with_the_same_prompt_are_all_answered_and_paid_once(sim, kw):
    df = same_prompt_frame()
    out = df.llm.apply("Price {p:.0f} {q}", missing="empty", mode="batch", usage=True,
                       cache=False, **FAST, **kw(sim))
    assert out["llm_output_error"].isna().all(), out["llm_output_error"].tolist()
    assert out["llm_output"].notna().all()
    # three prompts: "Price 1 a", "Price 2 ", "Price 3 b"; one line each in one job
    assert [e["batch_requests"] for e in creations(sim)] == [3]
    assert out.loc["u", "llm_output"] == out.loc["v", "llm_output"]
    assert out.loc["w", "llm_output"] == out.loc["x", "llm_output"]
    # paid once: the rows that shared an answer show no tokens of their own
    paid = out["llm_output_input_tokens"]
    assert (paid > 0).sum() == 3 and paid.sum() == out.llm.report.stats.input_tokens
    report = out.llm.report
    assert report.requests == 3 and report.duplicates == 3 and report.answered_rows == 6


def test_realtime_rows_with_the_same_prompt_are_sent_once(sim):
    df = same_prompt_frame()
    out = df.llm.apply("Price {p:.0f} {q}", missing="empty", cache=False, **openai_kw(sim))
    assert out["llm_output"].notna().all()
    prompts = [e["prompt_sha"] for e in chat_requests(sim)]
    assert len(prompts) == 3 == len(set(prompts))
    assert out.llm.report.duplicates == 3


# -- 2. a cell that does not fit its format spec ------------------------------------------------


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_a_cell_that_does_not_fit_the_format_spec_fails_only_its_row(sim, mode):
    n, bad = 400, 333
    prices: list[Any] = [round(1 + i * 0.01, 2) for i in range(n)]
    prices[bad] = "n/a"
    df = pd.DataFrame({"price": prices}, dtype=object)
    out = df.llm.apply("Is {price:.2f} dollars cheap?", cache=False, mode=mode, **FAST,
                       **openai_kw(sim))
    error = out["llm_output_error"].iloc[bad]
    assert "{price:.2f}" in error and "'n/a'" in error and "(str)" in error and "'.2f'" in error
    assert out["llm_output_error"].drop(index=bad).isna().all()
    assert out["llm_output"].drop(index=bad).notna().all()
    sent = (sum(e["batch_requests"] for e in creations(sim)) if mode == "batch"
            else len(chat_requests(sim)))
    assert sent == n - 1


def test_an_embedding_cell_that_does_not_fit_fails_only_its_row(sim):
    df = pd.DataFrame({"price": [1.5, "n/a", 2.5]}, dtype=object)
    with pytest.warns(UserWarning, match="1 of 3 rows"):
        out = df.llm.embed("{price:.2f}", model="openai/text-embedding-3-small",
                           base_url=sim.base_url, api_key=KEY, progress=False, cache=False)
    assert out.iloc[0] is not None and out.iloc[2] is not None and out.iloc[1] is None
    assert "'.2f'" in out.attrs["llm_errors"][1]


def test_text_that_is_not_valid_unicode_fails_only_its_row(sim):
    # object dtype: pandas' pyarrow-backed str columns refuse a lone surrogate outright
    df = pd.DataFrame({"t": pd.Series([f"text {i}" for i in range(400)], dtype=object)})
    df.loc[333, "t"] = "bad \ud800 cell"  # a lone surrogate: cannot be sent as JSON
    out = df.llm.apply("{t}", cache=False, **openai_kw(sim))
    assert "not valid Unicode" in out.loc[333, "llm_output_error"]
    assert out["llm_output"].drop(index=333).notna().all() and len(chat_requests(sim)) == 399
    with pytest.warns(UserWarning, match="1 of 400 rows"):
        vectors = df["t"].llm.embed(model="openai/text-embedding-3-small", base_url=sim.base_url,
                                    api_key=KEY, progress=False, cache=False)
    assert "not valid Unicode" in vectors.attrs["llm_errors"][333]


# -- 3. JSON braces in a template ---------------------------------------------------------------


def test_json_braces_say_to_double_them_and_show_the_fix(sim):
    df = pd.DataFrame({"text": ["great", "awful"]})
    with pytest.raises(errors.TemplateError) as info:
        df.llm.apply('Return {"label": ...} for {text}', **openai_kw(sim))
    message = str(info.value)
    assert "{{" in message and "}}" in message and "double" in message
    assert 'Return {{"label": ...}} for {text}' in message
    assert sim.log == []
    fixed = df.llm.apply('Return {{"label": ...}} for {text}', cache=False, **openai_kw(sim))
    assert fixed["llm_output"].notna().all()


def test_nested_json_braces_show_the_fix_too():
    with pytest.raises(errors.TemplateError) as info:
        Template.parse('Answer as {"a": {"b": 1}} for {text}')
    assert 'Answer as {{"a": {{"b": 1}}}} for {text}' in str(info.value)


# -- 5. cancelling a batch run cancels its jobs ------------------------------------------------


@pytest.mark.parametrize(("kw", "cancel_path"), [
    (openai_kw, "/v1/batches/{}/cancel"), (claude_kw, "/v1/messages/batches/{}/cancel")],
    ids=["openai", "anthropic"])
def test_cancel_cancels_the_providers_jobs_after_saying_so(sim, kw, cancel_path):
    sim.configure(batch_seconds=30.0)
    df = pd.DataFrame({"text": [f"review {i}" for i in range(6)]})
    job = df.llm.submit("Sentiment of {text}", mode="batch", **FAST, **kw(sim))
    wait_until(lambda: job.report.stats.batch_ids, 20, "the run to create its batch job")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        job.cancel()
        out = job.result(timeout=30)
    (batch_id,) = job.report.stats.batch_ids
    cancels = [e for e in sim.log if e["path"] == cancel_path.format(batch_id)]
    assert len(cancels) == 1 and cancels[0]["status"] == 200
    said = [str(w.message) for w in caught] + job.report.warnings
    assert any(batch_id in m and "cancelling" in m for m in said)
    assert sim.batches[0]["status"] in ("cancelled", "ended")
    assert out["llm_output"].isna().all()
    assert out["llm_output_error"].str.contains("cancel").all()


def test_an_interrupt_leaves_the_jobs_running(sim, tmp_path):
    sim.configure(batch_seconds=1.5)
    df = pd.DataFrame({"text": [f"review {i}" for i in range(5)]})
    cache = str(tmp_path / "c.sqlite")
    cancel_once_batched(
        sim, lambda: df.llm.aapply("Sentiment of {text}", cache=cache, mode="batch", **FAST,
                                   **openai_kw(sim)))
    assert not [e for e in sim.log if e["path"].endswith("/cancel")]
    again = df.llm.apply("Sentiment of {text}", cache=cache, mode="batch", **FAST, **openai_kw(sim))
    assert again["llm_output"].notna().all() and len(creations(sim)) == 1


# -- 4. batch requests stream through a temporary file ----------------------------------------


def test_batch_requests_are_spooled_to_a_temporary_file_and_removed(sim, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    sim.configure(batch_seconds=30.0)  # the job outlives the look at the spool, however slow
    df = pd.DataFrame({"text": [f"review {i}" for i in range(50)]})
    job = df.llm.submit("Sentiment of {text}", cache=False, mode="batch", **FAST, **openai_kw(sim))
    wait_until(lambda: job.report.stats.batch_ids, 20, "the run to create its batch job")
    spooled = list((tmp_path / "tmp").glob("llmbatch_pd-batch-*/requests.sqlite"))
    assert len(spooled) == 1 and spooled[0].stat().st_size > 50 * 100  # the 50 lines are there
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cancel names the job it cancels
        job.cancel()
        job.result(timeout=60)
    assert list((tmp_path / "tmp").iterdir()) == []  # the spool is gone with the run


# -- 7, 8. a stopped run: every row keeps its own reason; counts exact -------------------------


def _run(sim: Simulator, rows: list[dict], key: str, cache: Path) -> Run:
    ref = parse_model(OPENAI_MODEL, base_url=sim.base_url)
    spec = RunSpec(template=Template.parse("Sentiment of {text}"), model=ref,
                   provider=make_provider(ref, base_url=sim.base_url, api_key=key),
                   cache_path=cache, concurrency=4, max_retries=0)
    return Run(spec, lambda: iter(rows), len(rows))


def test_after_a_stop_missing_and_cached_rows_keep_their_own_outcome(sim, tmp_path):
    cache = tmp_path / "c.sqlite"
    texts: list[Any] = [f"review {i}" for i in range(40)]
    for i in (12, 30, 38):
        texts[i] = None
    rows = [{"text": t} for t in texts]
    warm = _run(sim, [rows[25]], KEY, cache)  # row 25 is in the cache
    asyncio.run(warm.execute())
    sim.reset()
    run = _run(sim, rows, "sk-wrong-key-000000000000", cache)  # 401: the run stops at once
    report = asyncio.run(run.execute())
    assert run.stats.stop_reason and len(chat_requests(sim)) == 1
    for i in (12, 30, 38):
        assert "missing value" in run.errors[i]
    assert run.answers[25] is not None and run.errors[25] is None
    assert report.skipped == 3 and report.cached == 1
    unsent = [i for i in range(40) if (run.errors[i] or "").startswith("not sent")]
    assert report.not_sent == len(unsent) == 40 - 3 - 1 - 1  # all but NA, cached, the one sent
    assert report.answered_rows + report.failed_rows == 40


def test_after_a_circuit_breaker_stop_missing_rows_keep_their_reason(sim, tmp_path, monkeypatch):
    import functools

    from llmbatch_pd.runs import base as run_module
    from llmbatch_pd.transport import breaker

    # the real breaker, quicker to give up than its defaults (3 failures, 1 probe)
    monkeypatch.setattr(run_module, "CircuitBreaker", functools.partial(
        breaker.CircuitBreaker, threshold=3, cooldown=0.01, max_probes=1))
    sim.configure(fault_5xx=1.0)
    texts: list[Any] = [f"review {i}" for i in range(30)]
    texts[20] = texts[27] = None
    run = _run(sim, [{"text": t} for t in texts], KEY, tmp_path / "c.sqlite")
    report = asyncio.run(run.execute())
    assert "the provider is failing" in run.stats.stop_reason
    assert len(chat_requests(sim)) < 30
    assert "missing value" in run.errors[20] and "missing value" in run.errors[27]
    assert report.skipped == 2
    sent = len(chat_requests(sim))  # each sent row failed with the provider's error
    assert sum(e.startswith("HTTP 5") for e in run.errors if e) == sent
    assert report.not_sent == 30 - 2 - sent


def test_a_job_cancelled_before_it_started_counts_its_skipped_rows(sim):
    df = pd.DataFrame({"text": ["a", None, "b", None, None]})
    job = df.llm.submit("Sentiment of {text}", confirm=True, cache=False, **openai_kw(sim))
    job.cancel()
    out = job.result(timeout=10)
    assert job.report.skipped == 3 and sim.log == []
    assert out["llm_output_error"].str.contains("missing value").sum() == 3


def test_embedding_batch_failures_are_counted_by_kind(sim):
    sim.configure(batch_fail_rate=1.0)
    s = pd.Series([f"text {i}" for i in range(5)])
    with pytest.warns(UserWarning, match="5 of 5 rows"):
        out = s.llm.embed(model="openai/text-embedding-3-small", base_url=sim.base_url,
                          api_key=KEY, progress=False, cache=False, mode="batch", **FAST)
    report = out.attrs["llm_report"]
    assert sum(report.stats.by_kind.values()) == 1  # one pack, one failed line
    kinds = [line for line in report.summary().splitlines() if "Errors by kind" in line]
    assert kinds and "none" not in kinds[0], kinds  # the failed line is counted by its kind


# -- 6. the budget's worst case: hidden prompt tokens and tiered prices -----------------------


def _spec(model: str, schema: Any = None, base_url: str = "http://127.0.0.1:9/v1") -> RunSpec:
    from llmbatch_pd.core.schema import OutputSchema
    from llmbatch_pd.planning.pricing import price_for

    ref = parse_model(model, base_url=base_url)
    return RunSpec(template=Template.parse("Classify: {text}"), model=ref,
                   provider=make_provider(ref, base_url=base_url, api_key=KEY),
                   price=price_for(ref.provider, ref.model),
                   schema=OutputSchema.from_user(schema) if schema is not None else None)


def test_worst_case_uses_the_dearer_tier_a_long_prompt_falls_into():
    # genai-prices, claude-sonnet-4-5: $3 in / $15 out per million tokens; above 200,000
    # prompt tokens every token costs $6 in / $22.5 out. Our Claude token counts are
    # estimates, so the worst case takes the prompt at 1.35 x 1.2 = 1.62 times the count + 16.
    spec = _spec("anthropic/claude-sonnet-4-5")
    assert not spec.counter.exact
    short = Request(index=0, messages=[], est_input_tokens=1_000, max_output_tokens=1_000)
    assert spec.worst_cost(short) == pytest.approx((1_636 * 3 + 1_000 * 15) / 1e6)
    # 150,000 counted tokens fit under the threshold, their worst case (243,016) does not
    # (rel=1e-5: the float product may round one token up)
    long = Request(index=0, messages=[], est_input_tokens=150_000, max_output_tokens=1_000)
    assert spec.worst_cost(long) == pytest.approx((243_016 * 6 + 1_000 * 22.5) / 1e6, rel=1e-5)
    spec.mode = "batch"
    assert spec.worst_cost(long) == pytest.approx((243_016 * 6 + 1_000 * 22.5) / 1e6 / 2, rel=1e-5)
    # and what such a request is settled at, from its real usage, is the tier's price too

    spec.mode = "realtime"
    assert spec.cost(Usage(210_000, 500)) == pytest.approx((210_000 * 6 + 500 * 22.5) / 1e6)
    assert spec.cost(Usage(190_000, 500)) == pytest.approx((190_000 * 3 + 500 * 15) / 1e6)


def test_worst_case_counts_the_forced_tools_hidden_system_prompt():
    from pydantic import BaseModel

    class Sentiment(BaseModel):
        label: str

    rows = [{"text": "I loved it"}]
    plain = _spec("anthropic/claude-3-5-haiku-latest")
    forced = _spec("anthropic/claude-3-5-haiku-latest", schema=Sentiment)
    (without,) = Run(plain, lambda: iter(rows), 1)._requests()
    (with_tool,) = Run(forced, lambda: iter(rows), 1)._requests()
    # Anthropic bills a tool-use system prompt of 313-346 tokens around a forced tool
    # (its pricing page), on top of the schema itself
    assert with_tool.est_input_tokens - without.est_input_tokens >= 346 + 5
    assert forced.worst_cost(with_tool) > plain.worst_cost(without) + 346 * 0.8 / 1e6


def test_answers_given_before_a_cancel_are_kept_and_cached(sim, tmp_path):
    sim.configure(batch_seconds=12.0)  # slack between the 5th answer and the job's end
    cache = str(tmp_path / "c.sqlite")
    df = pd.DataFrame({"text": [f"review {i}" for i in range(40)]})
    job = df.llm.submit("Sentiment of {text}", cache=cache, mode="batch", **FAST, **openai_kw(sim))
    wait_until(lambda: job.report.stats.batch_counts.get("succeeded", 0) >= 5, 20,
               "5 answers from the batch job")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job.cancel()
        out = job.result(timeout=30)
    answered = int(out["llm_output"].notna().sum())
    assert 5 <= answered < 40  # what the job answered before the cancel was paid for: kept
    assert out.loc[out["llm_output"].isna(), "llm_output_error"].str.contains("cancel").all()
    sim.configure(batch_seconds=0.3)
    again = df.llm.apply("Sentiment of {text}", cache=cache, mode="batch", **FAST, **openai_kw(sim))
    assert again["llm_output"].notna().all() and again.llm.report.cached == answered
    assert [e["batch_requests"] for e in creations(sim)] == [40, 40 - answered]


def test_a_bare_name_sent_to_a_gateway_keeps_its_catalogue_tiers():
    """``model="claude-sonnet-4-5", base_url=<gateway>`` is sent as given and priced from the
    catalogue's model of that name: its dearer tier above 200,000 prompt tokens too ($6 in /
    $22.5 out per million, genai-prices), or a long prompt's budget reservation is too low."""
    spec = _spec("claude-sonnet-4-5")
    assert spec.model.provider == "openai-compatible" and spec.price.input_per_mtok == 3
    assert spec.cost(Usage(210_000, 500)) == pytest.approx((210_000 * 6 + 500 * 22.5) / 1e6)
    assert spec.cost(Usage(190_000, 500)) == pytest.approx((190_000 * 3 + 500 * 15) / 1e6)


def test_the_estimate_prices_a_long_prompt_at_its_tier(sim):
    # genai-prices, gemini-2.5-pro: $1.25 in / $10 out per million tokens; $2.50 / $15 for
    # every token of a request whose prompt passes 200,000 tokens
    df = pd.DataFrame({"text": ["lorem ipsum dolor sit amet " * 32_000]})  # ~160k tokens
    est = df.llm.estimate("{text}", model="gemini/gemini-2.5-pro", base_url=sim.base_url,
                          api_key=KEY, max_tokens=100, cache=False).iloc[0]
    assert 120_000 < est["input_tokens"] < 200_000 < est["input_tokens_high"]
    assert est["cost"] == pytest.approx((est["input_tokens"] * 1.25 + est["output_tokens"] * 10) / 1e6)
    assert est["cost_high"] == pytest.approx((est["input_tokens_high"] * 2.5 + 100 * 15) / 1e6)
    assert est["batch_cost_high"] == pytest.approx(est["cost_high"] / 2)
    assert sim.log == []
