"""What the user sees from df.llm.apply/submit/estimate/embed: a run-wide fault raises with what
finished, skipped and failed rows are told in one warning, a misspelled option names the one
meant, a result column never overwrites the frame's, money reads to 3 significant figures,
an estimate needs no key, and a background job reads the frame as it was when submitted.
All over real HTTP against the simulator; expectations come from its request log."""

from __future__ import annotations

import asyncio
import re
import warnings

import pandas as pd
import pytest

import llmbatch_pd
from llmbatch_pd import AuthenticationError, BudgetError, InputError
from llmbatch_pd.core.budget import Ledger
from llmbatch_pd.sim import Simulator

from .conftest import KEY, MODEL

WRONG = "sk-wrong-key-0000000000"
PRICE_IN, PRICE_OUT = 0.40 / 1e6, 1.60 / 1e6  # gpt-4.1-mini, $ per token (OpenAI's price page)


def rows(n: int, prefix: str = "row") -> pd.DataFrame:
    return pd.DataFrame({"t": [f"{prefix} {i}" for i in range(n)]},
                        index=pd.Index([f"r{i}" for i in range(n)], name="rid"))


def user_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


# 1. a wrong key raises, carrying what finished -----------------------------------------------


def test_wrong_key_raises_with_the_finished_rows(llm, sim):
    rows(4).llm.apply("{t}", **llm)  # 4 rows answered and cached with the right key
    assert len(sim.log) == 4
    with pytest.raises(AuthenticationError) as caught:
        rows(20).llm.apply("{t}", **{**llm, "api_key": WRONG})
    err = caught.value
    assert len(sim.log) == 5 and sim.log[-1]["status"] == 401  # one request, then the stop
    out = err.result
    assert out.index.equals(rows(20).index)
    assert out["llm_output"].notna().sum() == 4  # the cached rows are kept
    assert out.loc["r4", "llm_output_error"].startswith("HTTP 401")
    assert err.report.rows == 20 and err.report.answered_rows == 4
    assert "4 of 20 rows answered" in str(err) and ".result" in str(err)
    assert llmbatch_pd.last_result() is out
    assert WRONG not in str(err) and WRONG not in out.to_csv()


def test_aapply_raises_the_same(llm, sim):
    async def main():
        return await rows(5).llm.aapply("{t}", **{**llm, "api_key": WRONG})

    with pytest.raises(AuthenticationError) as caught:
        asyncio.run(main())
    assert len(caught.value.result) == 5 and len(sim.log) == 1


def test_a_pilot_that_meets_a_wrong_key_raises(llm, sim):
    with pytest.raises(AuthenticationError):
        rows(30).llm.apply("{t}", pilot=3, **{**llm, "api_key": WRONG})
    assert len(sim.log) == 1


def test_job_result_and_await_raise(llm, sim):
    job = rows(10).llm.submit("{t}", **{**llm, "api_key": WRONG})
    with pytest.raises(AuthenticationError) as caught:
        job.result(timeout=30)
    assert caught.value.result["llm_output_error"].notna().all()

    async def main():
        return await job

    with pytest.raises(AuthenticationError):
        asyncio.run(main())
    assert len(sim.log) == 1


def test_side_by_side_raises_after_every_model_and_names_it(monkeypatch):
    """openai answers (right key), anthropic meets a wrong key: raised once both finished."""
    with Simulator(ttft_ms=2, api_key=KEY) as sim:
        monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.anthropic_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", WRONG)
        with pytest.raises(AuthenticationError) as caught:
            rows(12).llm.apply("{t}", model=[MODEL, "anthropic/claude-haiku-4-5"], progress=False)
        paths = [e["path"] for e in sim.log]
    err = caught.value
    assert paths.count("/v1/chat/completions") == 12 and paths.count("/v1/messages") == 1
    assert "anthropic/claude-haiku-4-5" in str(err)
    assert err.result["llm_output_gpt-4.1-mini"].notna().all()
    assert err.result["llm_output_claude-haiku-4-5"].isna().all()
    assert [r.model for r in err.report] == [MODEL, "anthropic/claude-haiku-4-5"]


def test_batch_mode_raises_the_same(llm, sim):
    with pytest.raises(AuthenticationError) as caught:
        rows(5).llm.apply("{t}", mode="batch", poll_interval=0.1, **{**llm, "api_key": WRONG})
    assert caught.value.result["llm_output_error"].str.contains("HTTP 401").all()
    assert {e["status"] for e in sim.log} == {401} and not sim.batches


def test_embed_raises_with_its_vectors(sim):
    s = pd.Series(["a", "b", "c"])
    with pytest.raises(AuthenticationError) as caught:
        s.llm.embed(model="openai/text-embedding-3-small", base_url=sim.base_url, api_key=WRONG,
                    progress=False)
    out = caught.value.result
    assert isinstance(out, pd.Series) and out.isna().all() and len(sim.log) == 1
    assert llmbatch_pd.last_result() is out


# 2. failed rows: one warning, with the commonest reasons -------------------------------------


def test_failed_rows_are_told_in_one_warning(llm, sim):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # the API refuses it: a 400 per row (3 rows: a 4th would make it a run-wide stop)
        out = rows(3).llm.apply("{t}", temperature=2.5, **llm)
    told = user_warnings(caught)
    assert len(told) == 1
    assert told[0].startswith("3 of 3 rows have no answer")
    assert "Invalid 'temperature'" in told[0] and "(3)" in told[0] and "'llm_output_error'" in told[0]
    assert out["llm_output_error"].notna().all() and len(sim.log) == 3


def test_side_by_side_failures_in_one_warning_naming_the_models(llm, sim):
    models = [MODEL, "openai/gpt-4.1-nano"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows(3).llm.apply("{t}", **{**llm, "model": models}, temperature=2.5)
    told = user_warnings(caught)
    assert len(told) == 1 and all(f"{m}: 3 of 3 rows have no answer" in told[0] for m in models)


def test_the_warning_names_the_three_commonest_reasons():
    from llmbatch_pd.core.outcome import row_warning

    errors = [None] * 4 + ["HTTP 400: a"] * 5 + ["HTTP 500: b"] * 3 + ["timeout"] * 2 + ["x", "y"]
    text = row_warning(errors, ())
    assert text.startswith("12 of 16 rows have no answer")
    assert "HTTP 400: a (5); HTTP 500: b (3); timeout (2); and 2 other reasons" in text
    assert row_warning([None, None], ()) is None


def test_a_budget_stop_warns_and_does_not_raise():
    """Answers ten times longer than the estimate assumes (100 tokens): the budget stops the
    run part-way. No exception; the 80 % warning and the stop are told."""
    with Simulator(ttft_ms=2, api_key=KEY, answer_tokens=400) as sim:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = rows(40).llm.apply("{t}", model=MODEL, base_url=sim.base_url, api_key=KEY,
                                     progress=False, budget=0.0075, max_tokens=600)
        log = sim.log
    told = user_warnings(caught)
    spent = sum(e["prompt_tokens"] * PRICE_IN + e["completion_tokens"] * PRICE_OUT for e in log)
    assert 0 < spent <= 0.0075 and out["llm_output"].notna().sum() == len(log) < 40
    assert any("of $0.0075)" in t for t in told)  # the 80 % warning shows the budget as given
    assert any("have no answer" in t and "budget reached" in t for t in told)


def test_a_cancelled_job_warns_and_does_not_raise(llm, sim):
    job = rows(5).llm.submit("{t}", confirm=True, **llm)
    job.cancel()
    with pytest.warns(UserWarning, match=r"(?s)5 of 5 rows have no answer.*cancelled by the user"):
        out = job.result(timeout=10)
    assert out["llm_output"].isna().all() and sim.log == []


# 3. missing="skip": one warning with the count and the columns ------------------------------


def test_skipped_rows_are_counted_by_column(llm, sim):
    df = pd.DataFrame({"a": [f"a{i}" for i in range(50)], "b": [f"b{i}" for i in range(50)]})
    df.loc[0:9, "a"] = None  # 10 rows miss a
    df.loc[20:24, "b"] = None  # 5 rows miss b
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df.llm.apply("{a} {b}", **llm)
    told = user_warnings(caught)
    assert len(told) == 1 and len(sim.log) == 35
    assert told[0].startswith("15 of 50 rows have no answer")
    assert "15 skipped" in told[0] and "'a' (10), 'b' (5)" in told[0] and "missing='empty'" in told[0]


# 4. a misspelled option names the one meant, before anything is sent ------------------------


def test_misspelled_options_name_the_option_meant(llm, sim):
    df = rows(3)
    est = {k: v for k, v in llm.items() if k != "progress"}
    with pytest.raises(InputError, match=r"apply\(\).*temprature=.*did you mean temperature=\?"):
        df.llm.apply("{t}", temprature=0.2, **llm)
    with pytest.raises(InputError, match="did you mean temperature="):
        asyncio.run(df.llm.aapply("{t}", temprature=0.2, **llm))
    with pytest.raises(InputError, match="did you mean max_tokens="):
        df.llm.submit("{t}", max_token=5, **llm)
    with pytest.raises(InputError, match="did you mean budget="):
        df.llm.estimate("{t}", budgett=1.0, **est)
    with pytest.raises(InputError, match="did you mean dimensions="):
        df.llm.embed("{t}", dimension=8, **llm)
    with pytest.raises(InputError, match="dimensions= belongs to embed"):
        df.llm.apply("{t}", dimensions=8, **llm)
    with pytest.raises(InputError, match="confirm= belongs to submit"):
        df.llm.apply("{t}", confirm=True, **llm)
    with pytest.raises(InputError, match="did you mean confirm="):
        df.llm.submit("{t}", confirmed=True, **llm)
    with pytest.raises(InputError, match="the options are .*temperature"):
        df["t"].llm.apply("{}", frobnicate=1, **llm)
    assert sim.log == []


# 5. a result column never overwrites one of the frame's --------------------------------------


def test_output_that_would_overwrite_a_column_is_refused(llm, sim):
    df = pd.DataFrame({"text": ["a", "b"], "label_error": ["x", "y"], "llm_output_gpt-4.1-nano": [1, 2]})
    with pytest.raises(InputError, match=r"output='text' would overwrite .*\['text'\]"):
        df.llm.apply("{text}", output="text", **llm)
    with pytest.raises(InputError, match=r"\['label_error'\]"):
        df.llm.apply("{text}", output="label", **llm)
    with pytest.raises(InputError, match=r"\['llm_output_gpt-4.1-nano'\]"):
        df.llm.apply("{text}", **{**llm, "model": [MODEL, "openai/gpt-4.1-nano"]})
    with pytest.raises(InputError, match=r"\['text2_cost'\]"):
        df.assign(text2_cost=0).llm.submit("{text}", output="text2", usage=True, **llm)
    with pytest.raises(InputError, match=r"\['text', 'text_error'\], which the template reads"):
        df.assign(text_error="").llm.apply("{text}", output="text", **llm)
    assert sim.log == []


def test_rerunning_a_cell_on_its_own_result_replaces_that_result(llm, sim):
    """``df = df.llm.apply(...)`` run twice: the frame holds every column the call makes (and
    the template reads none of them), so they are replaced, not refused."""
    df = pd.DataFrame({"text": ["a", "b"]})
    df = df.llm.apply("{text}", output="label", **llm)
    df = df.llm.apply("{text} again", output="label", **llm)
    assert list(df.columns) == ["text", "label", "label_error"]
    assert len(sim.log) == 4 and df["label"].notna().all()  # the second prompts were asked


# 6. money to 3 significant figures -----------------------------------------------------------


def test_a_small_budget_is_shown_as_given(llm, sim):
    big = rows(200, "a longer row of text to price " * 5)
    with pytest.raises(BudgetError, match=r"above the budget of \$0\.001\.") as caught:
        big.llm.apply("{t}", budget=0.001, max_tokens=50, **llm)
    assert "$0.00." not in str(caught.value) and sim.log == []
    assert "Ledger(limit=$0.0015, spent=$0.00" in repr(Ledger(0.0015, lambda u: 0.0))


def test_a_budget_too_small_for_one_request_says_what_would_fit(llm, sim):
    """With budget= and no max_tokens=, a request's worst case is 4,096 output tokens:
    $0.0066 at gpt-4.1-mini's price, more than budget=0.001. Refused before sending."""
    with pytest.raises(BudgetError, match=r"budget=\$0\.001 cannot cover one request") as caught:
        rows(1).llm.apply("{t}", budget=0.001, **llm)
    assert sim.log == []
    fits = int(re.search(r"pass max_tokens=(\d+) or less", str(caught.value)).group(1))
    out = rows(1).llm.apply("{t}", budget=0.001, max_tokens=fits, **llm)  # the advice works
    assert out["llm_output"].notna().all() and len(sim.log) == 1


def test_a_truly_cheap_run_fits_a_tiny_budget(llm, sim):
    out = rows(3).llm.apply("{t}", budget=0.001, max_tokens=50, **llm)
    assert out["llm_output"].notna().all() and len(sim.log) == 3
    spent = sum(e["prompt_tokens"] * PRICE_IN + e["completion_tokens"] * PRICE_OUT for e in sim.log)
    assert out.llm.report.cost == pytest.approx(spent) and spent <= 0.001


# 7. an estimate sends nothing, so it needs no key --------------------------------------------


def test_estimate_needs_no_key(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    est = rows(10).llm.estimate("Classify: {t}", model=MODEL)
    assert est.loc[MODEL, "requests"] == 10 and est.loc[MODEL, "cost"] > 0
    with pytest.raises(InputError, match="no API key"):  # a pilot sends: it needs one
        rows(10).llm.estimate("Classify: {t}", model=MODEL, pilot=2)
    with pytest.raises(InputError, match="no API key"):
        rows(10).llm.apply("Classify: {t}", model=MODEL, progress=False)


# 8. a background job reads the frame as it was when submitted -------------------------------


@pytest.mark.parametrize("edit", ["values", "rows"])
def test_submit_takes_the_values_when_called(edit):
    """Another cell edits the frame between submit(confirm=True) and start(): the job still
    sends the values it was given (the simulator's captured prompts say so)."""
    with Simulator(ttft_ms=2, api_key=KEY, capture_requests=50) as sim:
        df = rows(6)
        job = df.llm.submit("Echo {t}", model=MODEL, base_url=sim.base_url, api_key=KEY,
                            progress=False, confirm=True)
        if edit == "values":
            df.loc["r0", "t"] = "changed in place"
            df["t"] = df["t"].str.upper()
        else:
            df.loc["r6", "t"] = "a row added later"
        job.start()
        out = job.result(timeout=30)
        sent = sorted(c["body"]["messages"][-1]["content"] for c in sim.captured)
    assert sent == [f"Echo row {i}" for i in range(6)]
    assert list(out["t"]) == [f"row {i}" for i in range(6)] and out["llm_output"].notna().all()


# 9. a host that cannot be reached, through apply ---------------------------------------------


def test_apply_to_an_unreachable_host_raises_naming_base_url_with_every_row():
    """No server at base_url (a loopback port bound and closed): apply raises HostUnreachable
    at once (not after a minute of retries), names the URL but never the key, and carries a
    frame with every row's reason; nothing was paid."""
    import socket

    from llmbatch_pd import HostUnreachable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    df = pd.DataFrame({"t": [f"row {i}" for i in range(50)]})
    with pytest.raises(HostUnreachable) as caught:
        df.llm.apply("{t}", model=MODEL, base_url=url, api_key=KEY, progress=False)
    message = str(caught.value)
    assert url in message and KEY not in message
    out = caught.value.result
    assert len(out) == 50 and out["llm_output"].isna().all()
    assert out["llm_output_error"].notna().all()
    assert caught.value.report.stats.sent <= 2  # the first request, tried once more
    assert llmbatch_pd.last_result() is out
