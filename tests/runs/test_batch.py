"""mode="batch": OpenAI's Batch API and Anthropic's Message Batches, over real HTTP against the
simulator. The simulator's endpoints are proven with the official SDKs; our client gives the
same answers as real time at half the cost, never submits (or pays for) a job twice across a
SIGKILL, re-submits only the rows that expired or failed, and splits large runs."""

from __future__ import annotations

import io
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from typing import Any

import anthropic
import openai
import pandas as pd
import pytest

import llmbatch_pd  # noqa: F401  (registers df.llm)
from llmbatch_pd.core import errors
from llmbatch_pd.core.types import Request
from llmbatch_pd.providers.anthropic import AnthropicMessages
from llmbatch_pd.providers.openai import OpenAIChat
from llmbatch_pd.providers.registry import make_provider, parse_model
from llmbatch_pd.runs.batch import BatchRunner
from llmbatch_pd.runs.batch_collect import summarize
from llmbatch_pd.sim import Simulator
from llmbatch_pd.store.db import Store, keys_digest

from ..conftest import bill, cancel_once_batched, wait_until

KEY = "sk-test-0123456789abcdefSECRET"
OPENAI_MODEL = "openai/gpt-4.1-mini"
CLAUDE_MODEL = "anthropic/claude-haiku-4-5"
PRICES = {OPENAI_MODEL: (0.4, 1.6), CLAUDE_MODEL: (1.0, 5.0), "deepseek/deepseek-chat": (0.3, 1.2)}
SENTIMENT = "Classify the sentiment of this review as positive, negative or neutral:\n{text}"
FAST = {"poll_interval": 0.02}


def reviews(n: int = 24) -> pd.DataFrame:
    moods = ["I loved it, great value", "Broken on arrival, terrible", "It is a chair"]
    return pd.DataFrame({"text": [f"{moods[i % 3]} (order {i})" for i in range(n)]},
                        index=[f"r{i}" for i in range(n)])


@pytest.fixture
def sim():
    with Simulator(ttft_ms=2, api_key=KEY, batch_seconds=0.3) as s:
        yield s


def openai_kw(sim: Simulator, **extra: Any) -> dict[str, Any]:
    return {"model": OPENAI_MODEL, "base_url": sim.base_url, "api_key": KEY, "progress": False,
            "prices": PRICES, **extra}


def claude_kw(sim: Simulator, **extra: Any) -> dict[str, Any]:
    return {"model": CLAUDE_MODEL, "base_url": sim.anthropic_url, "api_key": KEY,
            "progress": False, "prices": PRICES, **extra}


def batch_bill(sim: Simulator, batch_ids: list[str]) -> float:
    """Dollars for the answers in these batch jobs, by hand: the usage in the simulator's result
    files (read with the official SDKs), at the list prices of PRICES, half price for batch."""
    oa = openai.OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
    an = anthropic.Anthropic(base_url=sim.anthropic_url, api_key=KEY, max_retries=0)
    dollars = 0.0
    for batch_id in batch_ids:
        if batch_id.startswith("batch_"):  # OpenAI's
            job = oa.batches.retrieve(batch_id)
            for line in oa.files.content(job.output_file_id).text.splitlines():
                body = json.loads(line)["response"]["body"]
                usage, (price_in, price_out) = body["usage"], PRICES["openai/" + body["model"]]
                dollars += usage["prompt_tokens"] * price_in + usage["completion_tokens"] * price_out
        else:
            for result in an.messages.batches.results(batch_id):
                if result.result.type == "succeeded":
                    message = result.result.message
                    price_in, price_out = PRICES["anthropic/" + message.model]
                    dollars += (message.usage.input_tokens * price_in
                                + message.usage.output_tokens * price_out)
    return dollars / 1e6 * 0.5


def creations(sim: Simulator) -> list[dict[str, Any]]:
    """The log entries of successful batch creations (either API)."""
    return [e for e in sim.log if e.get("batch") and e["status"] == 200]


# -- the simulator speaks the protocol: the official SDKs -----------------------------------


def test_openai_sdk_creates_and_reads_a_batch(sim):
    client = openai.OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
    prompts = [f"Answer yes or no: is {i} even?" for i in range(5)]
    lines = [{"custom_id": f"q-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": p}]}}
             for i, p in enumerate(prompts)]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    uploaded = client.files.create(file=("requests.jsonl", io.BytesIO(data)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(data)
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    assert batch.status == "validating" and batch.request_counts.total == 5
    seen = {batch.status}

    def ended():
        nonlocal batch
        batch = client.batches.retrieve(batch.id)
        seen.add(batch.status)
        return batch.status in ("completed", "failed", "expired", "cancelled")

    wait_until(ended, 30, "the OpenAI batch job to end")
    assert batch.status == "completed" and {"in_progress", "completed"} <= seen
    assert batch.request_counts.completed == 5 and batch.error_file_id is None
    results = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    by_id = {r["custom_id"]: r["response"]["body"]["choices"][0]["message"]["content"] for r in results}
    # the same prompt asked in real time gets the same answer
    for i, prompt in enumerate(prompts):
        live = client.chat.completions.create(model="gpt-4.1-mini",
                                              messages=[{"role": "user", "content": prompt}])
        assert by_id[f"q-{i}"] == live.choices[0].message.content


def test_openai_sdk_cancels_a_batch(sim):
    sim.configure(batch_seconds=30)
    client = openai.OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hi"}]}}
    uploaded = client.files.create(file=("r.jsonl", io.BytesIO(json.dumps(line).encode())), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    assert client.batches.cancel(batch.id).status == "cancelling"
    batch = wait_until(lambda: (b := client.batches.retrieve(batch.id)).status == "cancelled" and b, 30,
                       "the batch job to be cancelled")
    errors_file = client.files.content(batch.error_file_id).text
    assert json.loads(errors_file)["error"]["code"] == "batch_cancelled"


def test_upload_keeps_every_byte_with_request_capture_on(sim):
    sim.configure(capture_requests=5)  # capture reads the body before the handler does
    client = openai.OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
    data = '{"note": "tuyệt vời 😀"}\n\n  \r\n'.encode() + bytes(range(256))
    uploaded = client.files.create(file=("x.jsonl", io.BytesIO(data)), purpose="batch")
    assert client.files.content(uploaded.id).content == data
    assert client.files.retrieve(uploaded.id).filename == "x.jsonl"
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("x.jsonl", io.BytesIO(data)), purpose="nonsense")  # type: ignore[arg-type]


def test_anthropic_sdk_creates_and_reads_a_batch(sim):
    client = anthropic.Anthropic(base_url=sim.anthropic_url, api_key=KEY, max_retries=0)
    prompts = [f"Answer yes or no: is {i} odd?" for i in range(4)]
    batch = client.messages.batches.create(requests=[
        {"custom_id": f"q-{i}", "params": {"model": "claude-haiku-4-5", "max_tokens": 64,
                                           "system": "Be brief.",
                                           "messages": [{"role": "user", "content": p}]}}
        for i, p in enumerate(prompts)])
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 4
    batch = wait_until(lambda: (b := client.messages.batches.retrieve(batch.id)).processing_status == "ended"
                       and b, 30, "the Anthropic batch job to end")
    assert batch.request_counts.succeeded == 4 and batch.results_url
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert {r.type for r in results.values()} == {"succeeded"}
    for i, prompt in enumerate(prompts):
        live = client.messages.create(model="claude-haiku-4-5", max_tokens=64, system="Be brief.",
                                      messages=[{"role": "user", "content": prompt}])
        assert results[f"q-{i}"].message.content[0].text == live.content[0].text
    with pytest.raises(anthropic.BadRequestError, match="custom_id"):
        client.messages.batches.create(requests=[
            {"custom_id": "not ok!", "params": {"model": "claude-haiku-4-5", "max_tokens": 5,
                                                "messages": [{"role": "user", "content": "x"}]}}])


def test_anthropic_sdk_sees_errored_and_expired_results(sim):
    sim.configure(batch_fail_rate=0.3, batch_expire=0.25)
    client = anthropic.Anthropic(base_url=sim.anthropic_url, api_key=KEY, max_retries=0)
    batch = client.messages.batches.create(requests=[
        {"custom_id": f"q{i}", "params": {"model": "claude-haiku-4-5", "max_tokens": 16,
                                          "messages": [{"role": "user", "content": f"n {i}"}]}}
        for i in range(40)])
    batch = wait_until(lambda: (b := client.messages.batches.retrieve(batch.id)).processing_status == "ended"
                       and b, 30, "the Anthropic batch job to end")
    kinds = [r.result.type for r in client.messages.batches.results(batch.id)]
    counts = batch.request_counts
    assert counts.expired == kinds.count("expired") == 10
    assert counts.errored == kinds.count("errored") > 0
    assert counts.succeeded == kinds.count("succeeded") == 40 - 10 - counts.errored


# -- apply(mode="batch") ----------------------------------------------------------------------


@pytest.mark.parametrize("kw", [openai_kw, claude_kw], ids=["openai", "anthropic"])
def test_batch_gives_realtime_answers_at_half_the_cost(sim, kw):
    df = reviews()
    live = df.llm.apply(SENTIMENT, usage=True, cache=False, **kw(sim))
    live_bill = bill(sim.log, {m.split("/")[1]: p for m, p in PRICES.items()})
    sim.reset()
    batch = df.llm.apply(SENTIMENT, usage=True, cache=False, mode="batch", **FAST, **kw(sim))
    assert batch.index.equals(df.index)
    assert batch["llm_output"].tolist() == live["llm_output"].tolist()
    assert batch["llm_output_error"].isna().all()
    assert batch["llm_output_input_tokens"].tolist() == live["llm_output_input_tokens"].tolist()
    report, live_report = batch.llm.report, live.llm.report
    assert report.mode == "batch" and live_report.mode == "realtime"
    assert report.cost == pytest.approx(live_report.cost / 2) and report.cost > 0
    # both bills by hand: the simulator's usage at the list prices, half of it through batches
    assert live_report.cost == pytest.approx(live_bill)
    assert report.cost == pytest.approx(batch_bill(sim, report.stats.batch_ids))
    assert report.cost == pytest.approx(live_bill / 2)
    assert batch["llm_output_cost"].sum() == pytest.approx(report.cost)
    assert len(creations(sim)) == 1
    assert not [e for e in sim.log if e["path"] in ("/v1/chat/completions", "/v1/messages")]
    stats = report.stats
    assert stats.done == len(df) and stats.failed == 0 and stats.sent == len(df)
    assert stats.batch_counts["succeeded"] == len(df) and stats.batch_counts["processing"] == 0
    assert stats.batch_status in ("completed", "ended") and len(stats.batch_ids) == 1
    assert "Batch jobs" in report.summary()


def test_batch_skips_cached_and_duplicate_rows(sim, tmp_path):
    cache = tmp_path / "c.sqlite"
    df = pd.concat([reviews(10), reviews(10)], ignore_index=True)  # every row twice
    df.head(4).llm.apply(SENTIMENT, cache=str(cache), **openai_kw(sim))
    out = df.llm.apply(SENTIMENT, cache=str(cache), mode="batch", **FAST, **openai_kw(sim))
    assert out["llm_output"].notna().all()
    assert [e["batch_requests"] for e in creations(sim)] == [6]  # 10 unique prompts, 4 cached
    assert out.llm.report.cached == 4 and out.llm.report.duplicates == 10


def test_progress_fields_follow_the_job(sim):
    sim.configure(batch_seconds=1.0)
    df = reviews(30)
    job = df.llm.submit(SENTIMENT, mode="batch", cache=False, **FAST, **openai_kw(sim))
    stats = job.report.stats
    statuses, processing = set(), set()

    def sample_until_done() -> bool:
        statuses.add(stats.batch_status)
        if stats.batch_counts:
            processing.add(stats.batch_counts["processing"])
            assert stats.batch_counts["total"] == 30
        return job.done()

    wait_until(sample_until_done, 60, "the batch run to end")
    out = job.result()
    assert {"validating", "in_progress"} <= statuses and stats.batch_status == "completed"
    assert len(processing) > 2  # the counts moved while the job ran
    assert stats.done == 30 and stats.in_flight == 0
    assert out["llm_output"].notna().all()


def test_split_above_the_batch_size(sim, monkeypatch):
    monkeypatch.setattr(OpenAIChat, "max_batch_requests", 7)
    df = reviews(20)
    out = df.llm.apply(SENTIMENT, cache=False, mode="batch", **FAST, **openai_kw(sim))
    assert sorted(e["batch_requests"] for e in creations(sim)) == [6, 7, 7]
    assert out["llm_output"].notna().all()
    assert len(out.llm.report.stats.batch_ids) == 3
    assert out.llm.report.stats.batch_status == "completed (3 jobs)"


def test_split_by_bytes(sim, monkeypatch):
    line = len(AnthropicMessages("claude-haiku-4-5", "http://x", None).batch_line(
        Request(0, [{"role": "user", "content": SENTIMENT.format(text="I loved it, great value (order 10)")}],
                {"temperature": None, "max_tokens": None}, key="k" * 32)))
    monkeypatch.setattr(AnthropicMessages, "max_batch_bytes", 4096 + 5 * (line + 1))
    out = reviews(12).llm.apply(SENTIMENT, cache=False, mode="batch", **FAST, **claude_kw(sim))
    sizes = [e["batch_requests"] for e in creations(sim)]
    assert sum(sizes) == 12 and len(sizes) >= 3 and max(sizes) <= 5
    assert out["llm_output"].notna().all()


def test_expired_rows_get_errors_and_a_rerun_resubmits_only_them(sim, tmp_path):
    cache = str(tmp_path / "c.sqlite")
    sim.configure(batch_expire=0.25)
    df = reviews(20)
    first = df.llm.apply(SENTIMENT, cache=cache, mode="batch", **FAST, **openai_kw(sim))
    expired = first["llm_output_error"].notna()
    assert expired.sum() == 5 and first["llm_output"].notna().sum() == 15
    assert first.loc[expired, "llm_output_error"].str.contains("expired").all()
    assert first.llm.report.stats.batch_status == "expired"
    assert first.llm.report.stats.batch_counts["expired"] == 5
    sim.configure(batch_expire=0.0)
    second = df.llm.apply(SENTIMENT, cache=cache, mode="batch", **FAST, **openai_kw(sim))
    assert [e["batch_requests"] for e in creations(sim)] == [20, 5]
    assert second["llm_output"].notna().all() and second.llm.report.cached == 15
    # a third run sends nothing at all
    third = df.llm.apply(SENTIMENT, cache=cache, mode="batch", **FAST, **openai_kw(sim))
    assert len(creations(sim)) == 2 and third.llm.report.cached == 20


def test_failed_lines_are_row_errors_then_resubmitted(sim, tmp_path):
    cache = str(tmp_path / "c.sqlite")
    sim.configure(batch_fail_rate=0.3)
    df = reviews(30)
    first = df.llm.apply(SENTIMENT, cache=cache, mode="batch", **FAST, **claude_kw(sim))
    failed = first["llm_output_error"].notna()
    assert 0 < failed.sum() < 30
    assert first.loc[failed, "llm_output"].isna().all()
    assert first.llm.report.stats.batch_counts["errored"] == failed.sum()
    sim.configure(batch_fail_rate=0.0)
    second = df.llm.apply(SENTIMENT, cache=cache, mode="batch", **FAST, **claude_kw(sim))
    assert [e["batch_requests"] for e in creations(sim)] == [30, int(failed.sum())]
    assert second["llm_output"].notna().all()


def test_restart_reattaches_instead_of_submitting_again(tmp_path):
    """SIGKILL the process while its job runs; the same call in a new process collects it."""
    cache = tmp_path / "restart.sqlite"
    n = 40
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys, pandas as pd, llmbatch_pd
        df = pd.DataFrame({{"t": [f"row {{i}}: yes or no?" for i in range({n})]}})
        out = df.llm.apply("Answer yes or no: {{t}}", model="{OPENAI_MODEL}", base_url=sys.argv[1],
                           api_key="{KEY}", progress=False, cache={str(cache)!r}, mode="batch",
                           poll_interval=0.05)
        r = out.llm.report
        print(int(out["llm_output"].notna().sum()), r.stats.sent, ",".join(r.stats.batch_ids), flush=True)
    """))
    with Simulator(ttft_ms=2, api_key=KEY, batch_seconds=4.0) as sim:
        proc = subprocess.Popen([sys.executable, str(script), sim.base_url])
        def recorded_jobs() -> list[tuple[str]]:
            assert proc.poll() is None, "the script ended before it was killed"
            if not cache.exists():
                return []
            try:
                with closing(sqlite3.connect(cache)) as db:
                    return db.execute("SELECT id FROM batches").fetchall()
            except sqlite3.OperationalError:  # not migrated yet
                return []

        recorded = wait_until(recorded_jobs, 60, "the script to record its batch job in the cache")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert [j["status"] for j in sim.batches] != ["completed"]  # killed while it ran
        done = subprocess.run([sys.executable, str(script), sim.base_url], capture_output=True,
                              text=True, timeout=120, check=True)
        answered, sent, ids = done.stdout.split()
        assert len(creations(sim)) == 1 and len(sim.batches) == 1
        assert not [e for e in sim.log if e["path"] == "/v1/chat/completions"]
    assert int(answered) == n and int(sent) == 0 and ids == recorded[0][0]
    store = Store(cache)
    assert len(store) == n
    assert store.get_batch(ids).collected


def test_a_cancelled_task_leaves_the_job_open_for_the_next_run(sim, tmp_path):
    cache = tmp_path / "c.sqlite"
    sim.configure(batch_seconds=1.5)
    df = reviews(8)

    cancel_once_batched(
        sim, lambda: df.llm.aapply(SENTIMENT, cache=str(cache), mode="batch", **FAST, **openai_kw(sim)))
    (job,) = Store(cache).open_batches(f"openai:{sim.base_url}", "gpt-4.1-mini")
    assert len(job.keys) == 8 and not job.collected
    out = df.llm.apply(SENTIMENT, cache=str(cache), mode="batch", **FAST, **openai_kw(sim))
    assert out["llm_output"].notna().all() and len(creations(sim)) == 1
    assert Store(cache).get_batch(job.id).collected


def test_a_rerun_on_fewer_rows_attaches_and_caches_the_rest(sim, tmp_path):
    cache = str(tmp_path / "c.sqlite")
    sim.configure(batch_seconds=1.0)
    df = reviews(12)  # interrupted (an explicit cancel would cancel the job: test_trust_run.py)
    cancel_once_batched(
        sim, lambda: df.llm.aapply(SENTIMENT, cache=cache, mode="batch", **FAST, **openai_kw(sim)))
    head = df.head(5).llm.apply(SENTIMENT, cache=cache, mode="batch", **FAST, **openai_kw(sim))
    assert head["llm_output"].notna().all() and len(creations(sim)) == 1
    # the other 7 answers were paid for: they are in the cache, nothing is sent for them
    full = df.llm.apply(SENTIMENT, cache=cache, **openai_kw(sim))
    assert full.llm.report.cached == 12 and full.llm.report.stats.sent == 0


# -- refusals before anything is sent -------------------------------------------------------


@pytest.mark.parametrize("model", ["deepseek/deepseek-chat", "gemini/gemini-2.5-flash"])
def test_providers_without_a_batch_api_are_refused_before_sending(sim, model):
    with pytest.raises(errors.InputError, match="no batch API"):
        reviews(3).llm.apply(SENTIMENT, model=model, base_url=sim.base_url, api_key=KEY,
                             progress=False, mode="batch")
    assert sim.log == [] and sim.batches == []


def test_bad_mode_and_poll_interval_are_input_errors(sim):
    with pytest.raises(errors.InputError, match="mode="):
        reviews(2).llm.apply(SENTIMENT, mode="bulk", **openai_kw(sim))
    with pytest.raises(errors.InputError, match="poll_interval="):
        reviews(2).llm.apply(SENTIMENT, mode="batch", poll_interval=0, **openai_kw(sim))
    assert sim.log == []


def test_budget_must_hold_the_worst_case_before_a_job_is_sent(sim):
    df = reviews(20)
    # the expected batch cost fits, but 20 answers of max_tokens (4096) each would not
    with pytest.raises(errors.BudgetError, match="worst case"):
        df.llm.apply(SENTIMENT, mode="batch", budget=0.01, cache=False, **FAST, **openai_kw(sim))
    assert sim.log == []
    # a bound on the answers that fits: it runs, within budget, at batch prices
    out = df.llm.apply(SENTIMENT, mode="batch", budget=0.01, max_tokens=50, cache=False, **FAST,
                       **openai_kw(sim))
    assert out["llm_output"].notna().all()
    spent = batch_bill(sim, out.llm.report.stats.batch_ids)
    assert 0 < spent <= 0.01 and out.llm.report.cost == pytest.approx(spent)


def test_budget_check_uses_batch_prices(sim):
    df = reviews(20)
    estimate = df.llm.estimate(SENTIMENT, max_tokens=20, cache=False, **openai_kw(sim))
    batch_cost = float(estimate["batch_cost"].iloc[0])
    tokens_in, tokens_out = estimate["input_tokens"].iloc[0], estimate["output_tokens"].iloc[0]
    realtime = (tokens_in * 0.40 + tokens_out * 1.60) / 1e6  # gpt-4.1-mini's list price, by hand
    assert float(estimate["cost"].iloc[0]) == pytest.approx(realtime)
    assert batch_cost == pytest.approx(realtime * 0.5)
    budget = batch_cost * 1.5  # below the real-time cost, above the batch one
    assert float(estimate["cost"].iloc[0]) > budget
    with pytest.raises(errors.BudgetError):
        df.llm.apply(SENTIMENT, budget=budget, max_tokens=20, cache=False, **openai_kw(sim))
    fits = {mode: bool(df.llm.estimate(SENTIMENT, max_tokens=20, cache=False, budget=budget, mode=mode,
                                       **openai_kw(sim))["within_budget"].iloc[0])
            for mode in ("realtime", "batch")}
    assert fits == {"realtime": False, "batch": True}


# -- pieces -----------------------------------------------------------------------------------


def test_store_records_batches(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.add_batch("b1", provider="openai", endpoint="openai:http://x", model="m",
                    keys=["k2", "k1"], status="validating")
    store.add_batch("b2", provider="openai", endpoint="openai:http://x", model="other",
                    keys=["k3"], status="validating")
    (found,) = store.open_batches("openai:http://x", "m")
    assert found.id == "b1" and found.keys == ("k2", "k1") and not found.collected
    store.set_batch_status("b1", "in_progress")
    assert store.get_batch("b1").status == "in_progress"
    store.set_batch_status("b1", "completed", collected=True)
    assert store.open_batches("openai:http://x", "m") == []
    store.set_batch_status("b1", "completed")  # collected stays collected
    assert store.get_batch("b1").collected
    assert keys_digest(["a", "b"]) == keys_digest(["b", "a"]) != keys_digest(["a"])
    assert store.db.execute("SELECT keys_digest, size FROM batches WHERE id='b1'").fetchone() == (
        keys_digest(["k1", "k2"]), 2)


def test_openai_batch_lines_and_results():
    p = make_provider(parse_model(OPENAI_MODEL), base_url="http://127.0.0.1:9/v1", api_key=KEY)
    request = Request(0, [{"role": "user", "content": "hi"}], {"max_tokens": 5, "temperature": None}, key="a" * 32)
    line = json.loads(p.batch_line(request))
    assert line == {"custom_id": "a" * 32, "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hi"}],
                             "max_completion_tokens": 5}}
    ok = {"custom_id": "x", "response": {"status_code": 200, "body": {
        "choices": [{"message": {"content": "yes"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1}}}, "error": None}
    key, reply, exc = p.parse_batch_result(ok)
    assert key == "x" and reply.text == "yes" and reply.usage.input_tokens == 7 and exc is None
    expired = {"custom_id": "y", "response": None,
               "error": {"code": "batch_expired", "message": "not executed in time"}}
    _, reply, exc = p.parse_batch_result(expired)
    assert reply is None and exc.kind == "expired" and "not executed" in str(exc)
    bad = {"custom_id": "z", "response": {"status_code": 400, "body": {"error": {
        "message": "bad temperature", "type": "invalid_request_error"}}}, "error": None}
    _, reply, exc = p.parse_batch_result(bad)
    assert isinstance(exc, errors.BadRequestError) and "bad temperature" in str(exc)
    info = p._batch_info({"id": "b", "status": "expired", "output_file_id": "f1", "error_file_id": None,
                          "request_counts": {"total": 10, "completed": 6, "failed": 1}})
    assert info.ended and info.counts == {"total": 10, "processing": 0, "succeeded": 6,
                                          "errored": 1, "expired": 3, "canceled": 0}
    assert info.result_urls == ["http://127.0.0.1:9/v1/files/f1/content"]
    failed = p._batch_info({"id": "b", "status": "failed", "errors": {"data": [{"message": "bad line"}]}})
    assert failed.ended and failed.error == "bad line" and failed.result_urls == []


def test_anthropic_batch_lines_and_results():
    p = make_provider(parse_model(CLAUDE_MODEL), base_url="http://127.0.0.1:9", api_key=KEY)
    request = Request(0, [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
                      {"max_tokens": None}, key="b" * 32)
    line = json.loads(p.batch_line(request))
    assert line == {"custom_id": "b" * 32, "params": {"model": "claude-haiku-4-5", "max_tokens": 1024,
                                                      "system": "S",
                                                      "messages": [{"role": "user", "content": "hi"}]}}
    ok = {"custom_id": "x", "result": {"type": "succeeded", "message": {
        "content": [{"type": "text", "text": "yes"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 2}}}}
    _, reply, exc = p.parse_batch_result(ok)
    assert reply.text == "yes" and reply.usage.input_tokens == 7 and reply.finish_reason == "stop"
    for kind, expected in (("expired", "expired"), ("canceled", "cancelled")):
        _, reply, exc = p.parse_batch_result({"custom_id": "y", "result": {"type": kind}})
        assert reply is None and exc.kind == expected
    errored = {"custom_id": "z", "result": {"type": "errored", "error": {
        "type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: too big"}}}}
    _, _, exc = p.parse_batch_result(errored)
    assert isinstance(exc, errors.BadRequestError) and "too big" in str(exc)
    info = p._batch_info({"id": "m", "processing_status": "ended", "results_url": "/v1/messages/batches/m/results",
                          "request_counts": {"processing": 0, "succeeded": 3, "errored": 1,
                                             "canceled": 0, "expired": 2}})
    assert info.ended and info.counts["total"] == 6 and info.counts["expired"] == 2
    assert info.result_urls == ["http://127.0.0.1:9/v1/messages/batches/m/results"]


def test_runner_refuses_providers_without_batches_and_summarizes_statuses():
    p = make_provider(parse_model("deepseek/deepseek-chat"), base_url="http://127.0.0.1:9", api_key=KEY)
    with pytest.raises(errors.InputError):
        BatchRunner(p, on_done=lambda *a: None)
    assert summarize(["completed"]) == "completed"
    assert summarize(["in_progress", "in_progress"]) == "in_progress (2 jobs)"
    assert summarize(["completed", "in_progress", "completed"]) == "completed 2, in_progress 1"


def test_sim_log_and_listing_show_batch_creations(sim):
    reviews(6).llm.apply(SENTIMENT, cache=False, mode="batch", **FAST, **claude_kw(sim))
    (created,) = creations(sim)
    assert created["path"] == "/v1/messages/batches" and created["batch_requests"] == 6
    assert created["model"] == "claude-haiku-4-5"
    assert sim.batches == [{"id": created["batch"], "api": "anthropic", "requests": 6,
                            "model": "claude-haiku-4-5", "status": "ended"}]


# -- jobs the cache never recorded: found again by their label (OpenAI metadata) --------------


def test_a_run_without_a_cache_collects_its_earlier_job_instead_of_paying_again(sim):
    df = reviews(6)
    first = df.llm.apply(SENTIMENT, cache=False, mode="batch", **FAST, **openai_kw(sim))
    second = df.llm.apply(SENTIMENT, cache=False, mode="batch", **FAST, **openai_kw(sim))
    assert len(creations(sim)) == 1
    pd.testing.assert_series_equal(first["llm_output"], second["llm_output"])
    assert second.llm.report.stats.sent == 0 and second.llm.report.stats.batch_ids == first.llm.report.stats.batch_ids
    job = openai.OpenAI(base_url=sim.base_url, api_key=KEY).batches.retrieve(first.llm.report.stats.batch_ids[0])
    label = job.metadata["llmbatch_pd_requests"]  # a digest of the request keys, never a prompt
    assert len(label) == 32 and set(label) <= set("0123456789abcdef")


def test_a_job_whose_record_was_lost_is_found_and_recorded(sim, tmp_path):
    cache = tmp_path / "c.sqlite"
    sim.configure(batch_seconds=1.0)
    df = reviews(8)
    cancel_once_batched(
        sim, lambda: df.llm.aapply(SENTIMENT, cache=str(cache), mode="batch", **FAST, **openai_kw(sim)))
    with sqlite3.connect(cache) as db:  # as if killed between the provider's answer and the write
        db.execute("DELETE FROM batches")
    out = df.llm.apply(SENTIMENT, cache=str(cache), mode="batch", **FAST, **openai_kw(sim))
    assert out["llm_output"].notna().all() and len(creations(sim)) == 1
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT count(*) FROM batches").fetchone()[0] == 1


def test_a_cancelled_job_is_not_reused(sim):
    sim.configure(batch_seconds=5.0)
    df = reviews(4)
    job = df.llm.submit(SENTIMENT, cache=False, mode="batch", **FAST, **openai_kw(sim))
    wait_until(lambda: job.report.stats.batch_ids, 30, "the run to create its batch job")
    openai.OpenAI(base_url=sim.base_url, api_key=KEY).batches.cancel(job.report.stats.batch_ids[0])
    job.cancel()
    job.result(timeout=10)
    sim.configure(batch_seconds=0.2)
    out = df.llm.apply(SENTIMENT, cache=False, mode="batch", **FAST, **openai_kw(sim))
    assert out["llm_output"].notna().all() and len(creations(sim)) == 2


def test_the_simulator_lists_batches_newest_first_as_the_sdk_pages_them(sim):
    client = openai.OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hi"}]}})
    upload = client.files.create(file=("in.jsonl", line.encode()), purpose="batch")
    made = [client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"n": str(i)}).id for i in range(3)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == made[::-1][:2] and page.has_more
    assert [b.id for b in client.batches.list(limit=2)] == made[::-1]  # the SDK follows `after`
