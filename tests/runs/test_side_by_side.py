"""model=[...]: one call, every model at once, side-by-side columns, one budget, one display."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

import llmbatch_pd
from llmbatch_pd import BudgetError, InputError
from llmbatch_pd.core.budget import Ledger
from llmbatch_pd.core.report import RunReports
from llmbatch_pd.core.types import Usage
from llmbatch_pd.sim import Simulator

from ..conftest import bill, wait_until

KEY = "sk-test-0123456789abcdefSECRET"
PROMPT = "Classify the sentiment as positive, negative or neutral: {text}"
MODELS = ["openai/gpt-4.1-mini", "anthropic/claude-haiku-4-5", "openai/gpt-4.1-nano"]


@pytest.fixture
def sim():
    with Simulator(ttft_ms=2, api_key=KEY) as running:
        yield running


def frame(n: int = 8) -> pd.DataFrame:
    texts = ["I love it, great", "broken and bad", "it is fine", "awful"]
    return pd.DataFrame({"text": [f"{texts[i % 4]} #{i}" for i in range(n)]},
                        index=pd.Index([f"r{i}" for i in range(n)], name="rid"))


def endpoint(sim, **options):
    return {"base_url": sim.base_url, "api_key": KEY, "progress": False, **options}


def test_columns_side_by_side_match_single_runs(sim):
    df = frame()
    out = df.llm.apply(PROMPT, model=MODELS, output="s", **endpoint(sim))
    labels = ["gpt-4.1-mini", "claude-haiku-4-5", "gpt-4.1-nano"]
    assert list(out.columns) == ["text", *(f"s_{m}" for m in labels), *(f"s_{m}_error" for m in labels)]
    pd.testing.assert_index_equal(out.index, df.index)
    for name, label in zip(MODELS, labels, strict=True):
        alone = df.llm.apply(PROMPT, model=name, output="s", cache=False, **endpoint(sim))
        assert out[f"s_{label}"].tolist() == alone["s"].tolist()
    assert {e["path"] for e in sim.log} == {"/v1/chat/completions", "/v1/messages"}


def test_one_report_per_model_and_totals(sim):
    out = frame().llm.apply(PROMPT, model=MODELS, **endpoint(sim))
    reports = out.llm.report
    assert isinstance(reports, RunReports) and len(reports) == 3
    assert [r.model for r in reports] == MODELS
    assert reports["anthropic/claude-haiku-4-5"] is reports[1]
    assert reports.answered_rows == 24 and reports.failed_rows == 0
    assert reports.cost == pytest.approx(sum(r.cost for r in reports)) and reports.cost > 0
    # each model's bill, by hand: the usage the simulator returned at that model's list price
    for report, name in zip(reports, ["gpt-4.1-mini", "claude-haiku-4-5", "gpt-4.1-nano"], strict=True):
        answered = [e for e in sim.log if e["model"] == name]
        assert len(answered) == 8 and report.cost == pytest.approx(bill(answered))
    assert reports.cost == pytest.approx(bill(sim.log))
    assert "claude-haiku-4-5" in reports.summary() and "claude-haiku-4-5" in reports._repr_html_()
    assert llmbatch_pd.last_report() is reports
    with pytest.raises(KeyError, match="models"):
        reports["openai/gpt-5"]


def test_the_models_run_at_the_same_time(sim):
    """One request at a time per model, and every first request hangs at the server until the
    client gives up on it: the server holds three at once only if the models run side by side."""
    sim.configure(fault_hang=1.0, hang_seconds=60, capture_requests=20)
    # timeout=3: the three first requests must all be in before the first one times out and is
    # sent again (which would put a retry among the first three captured)
    job = frame(4).llm.submit(PROMPT, model=MODELS, concurrency=1, timeout=3.0, **endpoint(sim))
    wait_until(lambda: sim.stats()["max_in_flight"] >= 3, 30, "a request of each model at once")
    sim.configure(fault_hang=0.0)  # the hung ones time out at the client, and are sent again
    out = job.result(timeout=60)
    assert out.filter(like="_error").isna().all().all()
    first_three = {c["body"]["model"] for c in sim.captured[:3]}
    assert first_three == {"gpt-4.1-mini", "claude-haiku-4-5", "gpt-4.1-nano"}


def test_one_budget_for_all_models(sim):
    df = frame(40)
    costs = df.llm.estimate(PROMPT, model=MODELS, **endpoint(sim))["cost"]
    budget = float(costs.sum()) * 0.8  # each model alone fits, together they do not
    assert (costs < budget).all()
    with pytest.raises(BudgetError, match="3 models"):
        df.llm.apply(PROMPT, model=MODELS, budget=budget, **endpoint(sim))
    assert len(sim.log) == 0
    out = df.llm.apply(PROMPT, model=MODELS, budget=float(costs.sum()) * 1.5, **endpoint(sim))
    assert len(sim.log) == 120 and bill(sim.log) <= float(costs.sum()) * 1.5
    assert out.llm.report.cost == pytest.approx(bill(sim.log))


def test_a_tight_shared_budget_is_never_exceeded(sim):
    df = frame(40)
    options = endpoint(sim, max_tokens=20)
    expected = float(df.llm.estimate(PROMPT, model=MODELS, **options)["cost"].sum())
    out = df.llm.apply(PROMPT, model=MODELS, budget=expected * 1.02, **options)
    spent = bill(sim.log)  # every answer the simulator gave, priced by hand
    assert spent <= expected * 1.02
    assert out.llm.report.cost == pytest.approx(spent)


def test_models_share_one_account():
    """Each model prices its own usage, but all of them draw on the same money."""
    cheap = Ledger(1.0, lambda u: u.input_tokens * 1e-3)
    dear = cheap.share(lambda u: u.input_tokens * 1e-2)
    assert cheap.try_reserve(0.6) and not dear.try_reserve(0.6)
    cheap.settle(0.6, Usage(100))  # $0.10 spent
    assert dear.committed == pytest.approx(0.1) and dear.holds == 0
    assert dear.try_reserve(0.85) and not cheap.try_reserve(0.1)
    assert dear.settle(0.85, Usage(10)) == pytest.approx(0.1)
    assert cheap.spent == pytest.approx(0.2)


def test_structured_output_for_every_model(sim):
    out = frame(4).llm.apply(PROMPT, model=MODELS[:2], schema={"label": str, "n": int}, **endpoint(sim))
    assert list(out.columns)[1:] == ["label_gpt-4.1-mini", "label_claude-haiku-4-5", "n_gpt-4.1-mini",
                                     "n_claude-haiku-4-5", "llm_output_gpt-4.1-mini_error",
                                     "llm_output_claude-haiku-4-5_error"]
    assert str(out["n_claude-haiku-4-5"].dtype) == "Int64"


def test_same_model_name_from_two_providers_gets_full_labels(sim):
    out = frame(2).llm.apply(PROMPT, model=["openai/same-model", "deepseek/same-model"], **endpoint(sim))
    assert "llm_output_openai_same-model" in out and "llm_output_deepseek_same-model" in out


@pytest.mark.parametrize("model, words", [([], "at least one"), (["openai/a", "openai/a"], "more than once"),
                                          (["openai/a", 3], "list of names")])
def test_bad_model_lists(sim, model, words):
    with pytest.raises(InputError, match=words):
        frame().llm.apply(PROMPT, model=model, **endpoint(sim))


def test_submit_and_aapply_take_a_list(sim):
    job = frame(4).llm.submit(PROMPT, model=MODELS[:2], **endpoint(sim))
    out = job.result(timeout=30)
    assert out.filter(like="_error").isna().all().all() and "2 models" not in repr(job)
    assert "openai/gpt-4.1-mini, anthropic/claude-haiku-4-5" in repr(job)
    again = asyncio.run(frame(4).llm.aapply(PROMPT, model=MODELS[:2], **endpoint(sim)))
    pd.testing.assert_frame_equal(out, again)


def test_one_tqdm_bar_for_all_models(sim, capsys):
    frame(4).llm.apply(PROMPT, model=MODELS, **endpoint(sim, progress="tqdm"))
    err = capsys.readouterr().err
    assert "gpt-4.1-nano" in err and "claude-haiku-4-5" in err
    assert "12/12" in err  # one bar over rows x models
