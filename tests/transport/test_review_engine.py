"""Review fixes to the engine's judgement of a run (answers cut at max_tokens, a verdict left
unspoken at the end of a run) and to cancelling during a pilot. Checked on the simulator's
request log; every wait has a deadline, nothing sleeps."""

from __future__ import annotations

import warnings

import pandas as pd
import pydantic
import pytest

from llmbatch_pd.core import errors
from llmbatch_pd.sim import Simulator

from ..conftest import KEY, paused, wait_until

DEADLINE = 60.0  # seconds, for a job to finish once it has been cancelled


class Note(pydantic.BaseModel):
    summary: str
    words: list[str]


def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"note number {i}" for i in range(n)]})


def cut(log: list[dict]) -> int:
    return sum(e["finish_reason"] == "length" for e in log)


# -- 1. an answer cut at max_tokens that misses schema= ------------------------------------


def test_answers_cut_before_they_fit_the_schema_stop_the_run_naming_max_tokens(sim, llm):
    with pytest.raises(errors.RepeatedFailure) as caught:
        frame(10).llm.apply("Summarise {text}", schema=Note, max_tokens=5, **llm)
    # three rows, each asked once: the same limit would cut a second answer again
    assert len(sim.log) == 3 and cut(sim.log) == 3
    assert "max_tokens=5" in str(caught.value)
    assert not isinstance(caught.value, errors.StructuredOutputIgnored)
    reasons = caught.value.result["llm_output_error"].tolist()
    assert all(r.startswith("truncated at max_tokens=5: answer does not fit the schema")
               for r in reasons[:3])
    assert all(r.startswith("not sent") for r in reasons[3:])


def test_a_row_cut_before_it_fits_the_schema_fails_alone_asked_once(sim, llm):
    # at max_tokens=30 the simulator's answers for these rows are 25 to 31 tokens long: some
    # rows are cut (row 0 is not, so the run is under way before the first cut one)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = frame(20).llm.apply("Summarise {text}", schema=Note, max_tokens=30, **llm)
    shas = [e["prompt_sha"] for e in sim.log]
    assert len(shas) == 20 and len(set(shas)) == 20  # every row asked exactly once
    n_cut = cut(sim.log)
    assert 0 < n_cut < 20
    reasons = out["llm_output_error"].dropna().tolist()
    assert len(reasons) == n_cut == out.llm.report.failed_rows
    assert all(r.startswith("truncated at max_tokens=30: answer does not fit the schema")
               for r in reasons)
    messages = [str(w.message) for w in caught]  # these rows have no answer indeed
    assert len(messages) == 1 and messages[0].startswith(f"{n_cut} of 20 rows have no answer")


# -- 2. a truncated run's warnings -----------------------------------------------------------


def test_rows_cut_at_max_tokens_keep_their_answer_and_are_not_called_unanswered(sim, llm):
    df = pd.DataFrame({"text": [f"note number {i}" for i in range(20)] + [None]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = df.llm.apply("Write about {text}", max_tokens=35, **llm)
    n_cut = cut(sim.log)
    assert len(sim.log) == 20 and 0 < n_cut < 20
    assert out["llm_output"].notna().sum() == 20
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert messages[0].startswith(f"{n_cut} answers were cut at the output limit")
    # only the row with a missing value has no answer
    assert messages[1].startswith("1 of 21 rows have no answer"), messages[1]
    assert "1 skipped" in messages[1] and "failed" not in messages[1]


# -- 3. cancelling during a pilot -----------------------------------------------------------


def test_cancel_during_a_pilot_stops_the_pilot_and_keeps_the_reason(sim, llm):
    job = frame(200).llm.submit("Write about {text}", pilot=30, concurrency=1, **llm)
    try:
        wait_until(lambda: sim.log, 30, "the pilot's first answer")
        with paused(sim):  # nothing finishes meanwhile: the log is what was answered at cancel
            at = len(sim.log)
            job.cancel()
    finally:
        assert job.wait(DEADLINE), "the job did not end after cancel()"
    # concurrency=1: at most the one request in flight at cancel() finishes; nothing new goes
    assert 1 <= at < 30 and len(sim.log) <= at + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = job.result()
    answered = out["llm_output"].notna().sum()
    assert answered == sum(e["status"] == 200 for e in sim.log)
    assert set(out["llm_output_error"].dropna()) == {"not sent: cancelled by the user"}
    assert len(caught) == 1 and "cancelled by the user" in str(caught[0].message)


# -- 4. a verdict at the end of a run ------------------------------------------------------


@pytest.fixture
def no_such_model():
    """A server that knows gpt-4.1-mini only: every request for another model gets a 404."""
    with Simulator(ttft_ms=2, api_key=KEY, models=["gpt-4.1-mini"], unknown_model_404=True) as s:
        yield s


def unknown(sim) -> dict:
    return {"model": "openai/gpt-4.1-nano", "base_url": sim.base_url, "api_key": KEY}


def test_estimate_with_a_pilot_on_an_unknown_model_raises_after_three_requests(no_such_model):
    with pytest.raises(errors.RepeatedFailure, match="404"):
        frame(40).llm.estimate("Write about {text}", pilot=3, **unknown(no_such_model))
    assert [e["status"] for e in no_such_model.log] == [404, 404, 404]


def test_apply_with_a_pilot_on_an_unknown_model_sends_the_pilot_only(no_such_model):
    with pytest.raises(errors.RepeatedFailure, match="404") as caught:
        frame(40).llm.apply("Write about {text}", pilot=3, progress=False, **unknown(no_such_model))
    assert [e["status"] for e in no_such_model.log] == [404, 404, 404]
    reasons = caught.value.result["llm_output_error"]
    # the pilot's rows keep their own failure; the others say why they were not sent
    assert reasons.str.startswith("HTTP 404").sum() == 3
    assert reasons.str.startswith("not sent: the first 3 requests all failed").sum() == 37
    assert caught.value.report.not_sent == 37


def test_a_finished_run_of_three_rows_on_an_unknown_model_keeps_each_rows_failure(no_such_model):
    # no pilot: every row was tried, nothing is left to save; the rows say why (one warning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = frame(3).llm.apply("Write about {text}", progress=False, **unknown(no_such_model))
    assert [e["status"] for e in no_such_model.log] == [404, 404, 404]
    assert out["llm_output_error"].str.startswith("HTTP 404").all()
    assert len(caught) == 1 and str(caught[0].message).startswith("3 of 3 rows have no answer")
