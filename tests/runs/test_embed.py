"""s.llm.embed / df.llm.embed end to end, over real HTTP against the loopback simulator."""

import asyncio
import base64
import io
import json
import urllib.error
import urllib.request

import numpy as np
import openai
import pandas as pd
import pytest

import llmbatch_pd
from llmbatch_pd import BudgetError, InputError
from llmbatch_pd.sim import Simulator
from llmbatch_pd.sim.embeddings import vector
from llmbatch_pd.store.db import Store
from tests.conftest import KEY, bill, cancel_once_batched, wait_until

MODEL = "openai/text-embedding-3-small"
NAME = "text-embedding-3-small"


@pytest.fixture
def emb(sim):
    return {"model": MODEL, "base_url": sim.base_url, "api_key": KEY, "progress": False}


def texts(n, prefix="text number"):
    return pd.Series([f"{prefix} {i}" for i in range(n)], index=[f"r{i}" for i in range(n)])


def sent_inputs(sim):
    return sum(e.get("inputs", 0) for e in sim.log if e["path"] == "/v1/embeddings")


def test_series_embed_one_vector_per_row_on_the_index(emb, sim):
    s = texts(30)
    out = s.llm.embed(**emb)
    assert list(out.index) == list(s.index) and out.name == "embedding" and out.dtype == object
    assert all(v.dtype == np.float32 and v.shape == (1536,) for v in out)
    for text, v in zip(s, out, strict=True):
        np.testing.assert_array_equal(v, vector(NAME, text))
    assert out.attrs["llm_errors"] == {}
    report = out.attrs["llm_report"]
    assert report.rows == 30 and report.requests == 1 and report.answered_rows == 30
    assert report.stats.output_tokens == 0
    assert len(sim.log) == 1
    # $0.02 a million input tokens (text-embedding-3-small's list price), on the tokens the
    # simulator counted
    assert report.cost == pytest.approx(sim.log[0]["prompt_tokens"] * 0.02 / 1e6) and report.cost > 0


def test_sdk_gets_the_same_vectors_and_we_send_the_same_body():
    with Simulator(ttft_ms=0, api_key=KEY, capture_requests=10) as sim:
        items = ["alpha", "beta gamma", "xin chào"]
        client = openai.OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
        b64 = client.embeddings.create(model=NAME, input=items)  # the SDK asks for base64
        floats = client.embeddings.create(model=NAME, input=items, encoding_format="float")
        ours = pd.Series(items).llm.embed(model=MODEL, base_url=sim.base_url, api_key=KEY,
                                          progress=False, cache=False)
        sdk_b64, sdk_float, mine = sim.captured[0], sim.captured[1], sim.captured[2]
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(b64.data[i].embedding, dtype=np.float32), ours.iloc[i])
        np.testing.assert_array_equal(np.asarray(floats.data[i].embedding, dtype=np.float32), ours.iloc[i])
    assert sdk_float["body"]["encoding_format"] == "float"
    assert mine["path"] == sdk_b64["path"] == "/v1/embeddings"
    assert mine["body"] == sdk_b64["body"]  # model, input, encoding_format="base64"
    assert list(mine["body"]) == list(sdk_b64["body"])  # even the field order
    assert mine["headers"]["authorization"] == sdk_b64["headers"]["authorization"]
    assert mine["headers"]["content-type"].startswith("application/json")
    assert KEY not in json.dumps([sdk_b64, mine])


def test_ten_thousand_rows_take_few_requests(emb, sim):
    s = texts(10_000)
    out = s.llm.embed(dimensions=64, **emb)
    assert len(sim.log) <= 100  # measured: 5 (2048 inputs a request)
    assert all(e["status"] == 200 and e["inputs"] <= 2048 for e in sim.log)
    assert out.notna().all()
    np.testing.assert_array_equal(out.iloc[9_999], vector(NAME, "text number 9999", 64))
    assert out.attrs["llm_report"].requests == len(sim.log)


def test_packing_keeps_to_the_token_limits(emb, sim):
    long = pd.Series([f"{i} " + "word " * 5000 for i in range(150)])  # ~750,000 tokens
    huge = pd.Series(["word " * 20_000])  # over 8192 tokens: never sent
    edge = pd.Series(["word " * 7000])  # near the per-input limit: goes alone
    with pytest.warns(UserWarning, match="1 of 152 rows have no embedding"):
        out = pd.concat([long, huge, edge], ignore_index=True).llm.embed(dimensions=8, cache=False, **emb)
    assert all(e["status"] == 200 for e in sim.log)  # the simulator refused nothing
    assert len(sim.log) >= 4 and max(e["prompt_tokens"] for e in sim.log) <= 300_000
    assert out.drop(150).notna().all() and out[150] is None
    assert "8,192 tokens per input" in out.attrs["llm_errors"][150]
    assert any(e["inputs"] == 1 and 6000 < e["prompt_tokens"] <= 8192 for e in sim.log)


def test_cache_second_run_sends_nothing_and_only_new_texts_later(emb, sim, private_cache):
    first = texts(40).llm.embed(**emb)
    assert sent_inputs(sim) == 40
    sim.reset()
    again = texts(40).llm.embed(**emb)
    assert len(sim.log) == 0
    assert again.attrs["llm_report"].cached == 40
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    more = texts(50).llm.embed(**emb)
    assert sent_inputs(sim) == 10 and more.notna().all()
    other_dims = texts(40).llm.embed(dimensions=32, **emb)  # another size is another key
    assert sent_inputs(sim) == 50 and other_dims.iloc[0].shape == (32,)


def test_identical_texts_are_sent_once(emb, sim):
    s = pd.Series(["same"] * 50 + ["other"])
    out = s.llm.embed(**emb)
    assert sent_inputs(sim) == 2
    assert out.attrs["llm_report"].duplicates == 49
    np.testing.assert_array_equal(out[0], out[49])
    out[0][0] = 42.0  # each row owns its cells: changing one changes no other
    assert out[1][0] != 42.0


def test_missing_values_are_skipped_and_explained(emb, sim):
    s = pd.Series(["a", None, np.nan, pd.NA, "b"], dtype=object)
    with pytest.warns(UserWarning, match="3 of 5 rows have no embedding"):
        out = s.llm.embed(**emb)
    assert out.isna().tolist() == [False, True, True, True, False]
    assert sorted(out.attrs["llm_errors"]) == [1, 2, 3]
    assert out.attrs["llm_errors"][1].startswith("missing value")
    assert sent_inputs(sim) == 2
    with pytest.warns(UserWarning, match="empty text"):
        out2 = s.llm.embed(missing="empty", **emb)  # "" is refused by the API: not sent
    assert out2.isna().sum() == 3 and sent_inputs(sim) == 2


def test_budget_refusal_before_anything_is_sent(emb, sim):
    with pytest.raises(BudgetError, match="budget"):
        texts(100).llm.embed(budget=1e-9, **emb)
    assert sim.log == []
    out = texts(100).llm.embed(budget=0.01, **emb)
    assert out.notna().all() and 0 < bill(sim.log) <= 0.01
    assert out.attrs["llm_report"].cost == pytest.approx(bill(sim.log))


def test_as_array_shape_dtype_and_nan_rows(emb):
    arr = texts(7).llm.embed(as_array=True, dimensions=256, **emb)
    assert isinstance(arr, np.ndarray) and arr.shape == (7, 256) and arr.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, rtol=1e-5)
    with pytest.warns(UserWarning, match="1 of 3 rows have no embedding.*NaN"):
        partial = pd.Series(["x", None, "y"]).llm.embed(as_array=True, **emb)
    assert partial.shape == (3, 1536)
    assert np.isnan(partial[1]).all() and not np.isnan(partial[[0, 2]]).any()
    assert llmbatch_pd.last_report().failed_rows == 1


def test_template_on_a_dataframe(emb):
    df = pd.DataFrame({"title": ["Tea", "Coffee"], "body": ["green", "black"]}, index=[10, 20])
    out = df.llm.embed("{title}: {body}", output="vec", **emb)
    assert out.name == "vec" and list(out.index) == [10, 20]
    np.testing.assert_array_equal(out[20], vector(NAME, "Coffee: black"))
    with pytest.raises(llmbatch_pd.TemplateError):
        df.llm.embed("{nope}", **emb)


def test_injected_faults_still_give_every_row_a_vector():
    with Simulator(ttft_ms=1, api_key=KEY, fault_429=0.3, fault_5xx=0.15, fault_retry_after_s=0.01,
                   seed=3) as sim:
        s = pd.Series([f"{i} " + "word " * 7000 for i in range(30)])  # one input per request
        out = s.llm.embed(model=MODEL, base_url=sim.base_url, api_key=KEY, progress=False,
                          dimensions=8, cache=False, concurrency=8)
        faults = [e["fault"] for e in sim.log if e["fault"]]
    assert out.notna().all()
    assert "429" in faults and "5xx" in faults


def test_gemini_preset_serves_embeddings(sim):
    out = pd.Series(["hello"]).llm.embed(model="gemini/gemini-embedding-001", base_url=sim.base_url,
                                         api_key=KEY, progress=False)
    assert out[0].shape == (3072,)
    assert sim.log[0]["path"] == "/v1/embeddings"


def test_anthropic_has_no_embeddings_api(sim, monkeypatch):
    with pytest.raises(InputError, match="no embeddings API"):
        pd.Series(["x"]).llm.embed(model="anthropic/claude-haiku-4-5", base_url=sim.anthropic_url,
                                   api_key=KEY, progress=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(InputError, match="no embeddings API"):  # not "no API key"
        pd.Series(["x"]).llm.embed(model="anthropic/claude-haiku-4-5", progress=False)
    assert sim.log == []


def test_empty_input_sends_nothing(emb, sim):
    out = pd.Series([], dtype=object).llm.embed(**emb)
    assert len(out) == 0 and out.name == "embedding"
    assert pd.Series([], dtype=object).llm.embed(as_array=True, dimensions=8, **emb).shape == (0, 8)
    assert sim.log == []


def test_bad_options_fail_before_sending(emb, sim):
    for bad in ({"dimensions": 0}, {"output": ""}, {"missing": "drop"}, {"concurrency": 0}):
        with pytest.raises(InputError):
            texts(3).llm.embed(**{**emb, **bad})
    assert sim.log == []


def test_secrets_stay_out_of_the_cache_and_errors(emb, sim, private_cache):
    texts(5).llm.embed(**emb)
    assert private_cache.exists() and KEY.encode() not in private_cache.read_bytes()
    with pytest.raises(llmbatch_pd.AuthenticationError, match="Incorrect API key") as caught:
        texts(2, "new").llm.embed(**{**emb, "api_key": KEY + "x"})  # a wrong key stops the run
    out = caught.value.result
    assert KEY not in str(caught.value)
    message = " ".join(out.attrs["llm_errors"].values())
    assert "Incorrect API key" in message and KEY not in message
    assert KEY not in repr(out.attrs["llm_report"]) and KEY not in out.attrs["llm_report"].summary()


def test_aembed_inside_a_running_loop(emb):
    async def main():
        return await texts(5).llm.aembed(**emb)

    out = asyncio.run(main())
    assert out.notna().all()


def test_the_store_keeps_vectors_as_float32_bytes(tmp_path):
    store = Store(tmp_path / "c.sqlite")
    v = np.arange(5, dtype=np.float32) / 7
    store.put_vectors([("k1", "m", v, 3)])
    got = store.get_vectors(["k1", "k2"])
    assert set(got) == {"k1"} and got["k1"][1] == 3
    np.testing.assert_array_equal(got["k1"][0], v)
    assert store.db.execute("SELECT length(data), dim FROM vectors").fetchone() == (20, 5)
    store.close()


def _post(sim, body):
    request = urllib.request.Request(f"{sim.base_url}/embeddings", data=json.dumps(body).encode(),
                                     headers={"authorization": f"Bearer {KEY}",
                                              "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_simulator_validates_like_openai(sim):
    status, body = _post(sim, {"model": NAME, "input": "hi", "encoding_format": "base64"})
    assert status == 200 and body["usage"] == {"prompt_tokens": 1, "total_tokens": 1}
    decoded = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(decoded, vector(NAME, "hi"))
    status, body = _post(sim, {"model": "text-embedding-3-large", "input": ["hi"]})
    assert status == 200 and len(body["data"][0]["embedding"]) == 3072
    refused = [
        {"model": NAME, "input": ["x"] * 2049},
        {"model": NAME, "input": ["ok", ""]},
        {"model": NAME, "input": ["word " * 9000]},
        {"model": NAME, "input": ["word " * 8000] * 40},
        {"model": NAME, "input": ["x"], "encoding_format": "int8"},
        {"model": NAME, "input": ["x"], "dimensions": 5000},
    ]
    for bad in refused:
        status, body = _post(sim, bad)
        assert status == 400 and body["error"]["type"] == "invalid_request_error", bad
    assert "max 300000 tokens per request" in _post(sim, refused[3])[1]["error"]["message"]


# -- mode="batch": OpenAI's Batch API on /v1/embeddings ---------------------------------------

FAST = {"mode": "batch", "poll_interval": 0.02}


def batch_creations(sim):
    return [e for e in sim.log if e.get("batch") and e["status"] == 200]


def sdk_embeddings_batch(client, lines):
    """Upload ``lines`` and start an embeddings job with the official SDK; poll until it ends."""
    data = "\n".join(json.dumps(line) for line in lines).encode()
    uploaded = client.files.create(file=("emb.jsonl", io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings",
                                  completion_window="24h")
    return wait_until(lambda: (b := client.batches.retrieve(batch.id)).status in (
        "completed", "failed", "expired", "cancelled") and b, 30, "the embeddings batch job to end")


def test_batch_mode_gives_realtime_vectors_at_half_the_cost(emb, sim):
    sim.configure(batch_seconds=0.3)
    s = texts(3000)
    batch = s.llm.embed(dimensions=16, cache=False, **FAST, **emb)
    assert not [e for e in sim.log if e["path"] == "/v1/embeddings"]  # nothing in real time
    (created,) = batch_creations(sim)  # one job: 2 requests (2048 + 952 inputs)
    assert created["batch_requests"] == 2 and created["batch_inputs"] == 3000
    live = s.llm.embed(dimensions=16, cache=False, **emb)
    live_bill = bill(sim.log)  # the real-time requests' tokens at $0.02 a million
    for a, b in zip(batch, live, strict=True):
        np.testing.assert_array_equal(a, b)
    rb, rl = batch.attrs["llm_report"], live.attrs["llm_report"]
    assert rb.mode == "batch" and rb.answered_rows == 3000
    assert rb.cost == pytest.approx(rl.cost / 2) and rb.stats.input_tokens == rl.stats.input_tokens
    assert rl.cost == pytest.approx(live_bill) and rb.cost == pytest.approx(live_bill / 2) and live_bill > 0
    assert rb.stats.batch_status == "completed" and rb.stats.batch_counts["succeeded"] == 2
    assert "Batch jobs" in rb.summary() and "at batch prices" in rb.summary()


def test_batch_jobs_split_at_the_input_cap(emb, sim, monkeypatch):
    from llmbatch_pd.providers.embeddings import OpenAIEmbeddings

    monkeypatch.setattr(OpenAIEmbeddings, "max_batch_inputs", 4096)  # OpenAI's is 50,000
    sim.configure(batch_seconds=0.2)
    out = texts(5000).llm.embed(dimensions=8, cache=False, **FAST, **emb)
    assert out.notna().all()
    assert [e["batch_inputs"] for e in batch_creations(sim)] == [4096, 904]


def test_batch_restart_reattaches_instead_of_submitting_again(emb, sim, tmp_path):
    cache = tmp_path / "c.sqlite"
    sim.configure(batch_seconds=1.0)
    s = texts(300)

    cancel_once_batched(sim, lambda: s.llm.aembed(cache=str(cache), dimensions=8, **FAST, **emb))
    (job,) = Store(cache).open_batches(f"openai-embeddings:{sim.base_url}", NAME)
    assert not job.collected
    out = s.llm.embed(cache=str(cache), dimensions=8, **FAST, **emb)
    assert out.notna().all() and len(batch_creations(sim)) == 1
    assert out.attrs["llm_report"].stats.batch_ids == [job.id]
    assert Store(cache).get_batch(job.id).collected
    np.testing.assert_array_equal(out["r7"], vector(NAME, "text number 7", 8))
    again = s.llm.embed(cache=str(cache), dimensions=8, **emb)  # every vector was cached
    assert again.attrs["llm_report"].cached == 300 and sent_inputs(sim) == 0


def test_batch_without_a_cache_finds_its_job_by_label(emb, sim):
    sim.configure(batch_seconds=0.2)
    first = texts(50).llm.embed(cache=False, dimensions=8, **FAST, **emb)
    second = texts(50).llm.embed(cache=False, dimensions=8, **FAST, **emb)
    assert len(batch_creations(sim)) == 1 and second.attrs["llm_report"].stats.sent == 0
    np.testing.assert_array_equal(np.stack(first), np.stack(second))


def test_openai_sdk_runs_an_embeddings_batch_on_the_simulator(sim):
    sim.configure(batch_seconds=0.2)
    client = openai.OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
    groups = [["alpha", "beta gamma"], ["xin chào"]]
    lines = [{"custom_id": f"g{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": NAME, "input": group, "dimensions": 32}}
             for i, group in enumerate(groups)]
    batch = sdk_embeddings_batch(client, lines)
    assert batch.status == "completed" and batch.endpoint == "/v1/embeddings"
    assert batch.request_counts.completed == 2
    results = {r["custom_id"]: r for r in map(json.loads, client.files.content(batch.output_file_id).text.splitlines())}
    for i, group in enumerate(groups):
        body = results[f"g{i}"]["response"]["body"]
        assert body["object"] == "list" and body["usage"]["prompt_tokens"] > 0
        live = client.embeddings.create(model=NAME, input=group, dimensions=32, encoding_format="float")
        for item, text, want in zip(body["data"], group, live.data, strict=True):
            np.testing.assert_array_equal(np.asarray(item["embedding"], dtype=np.float32), vector(NAME, text, 32))
            np.testing.assert_array_equal(np.asarray(want.embedding, dtype=np.float32), vector(NAME, text, 32))
    # a line whose url is not the job's endpoint, and a job over 50,000 inputs, fail validation
    wrong = [{**lines[0], "url": "/v1/chat/completions"}]
    failed = sdk_embeddings_batch(client, wrong)
    assert failed.status == "failed" and failed.errors.data[0].code == "invalid_url"
    big = [{"custom_id": f"b{i}", "method": "POST", "url": "/v1/embeddings",
            "body": {"model": NAME, "input": ["x"] * 2048}} for i in range(25)]  # 51,200 inputs
    failed = sdk_embeddings_batch(client, big)
    assert failed.status == "failed" and failed.errors.data[0].code == "too_many_embedding_inputs"


def test_batch_budget_uses_batch_prices(emb, sim):
    sim.configure(batch_seconds=0.2)
    s = texts(400, "a somewhat longer text to embed, number")
    est = s.llm.embed(cache=False, dimensions=8, **emb).attrs["llm_report"].estimate
    assert est.cost == pytest.approx(est.input_tokens * 0.02 / 1e6)  # $0.02 a million, by hand
    assert est.batch_cost == pytest.approx(est.input_tokens * 0.02 / 1e6 * 0.5)
    sim.reset()
    budget = est.batch_cost * 1.9  # below the real-time cost, above the batch worst case
    with pytest.raises(BudgetError):
        s.llm.embed(cache=False, dimensions=8, budget=budget, **emb)
    out = s.llm.embed(cache=False, dimensions=8, budget=budget, **FAST, **emb)
    assert out.notna().all()
    # what the job cost, by hand from the usage in the simulator's result file, at half price
    client = openai.OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
    (batch_id,) = out.attrs["llm_report"].stats.batch_ids
    result = client.files.content(client.batches.retrieve(batch_id).output_file_id).text
    tokens = sum(json.loads(line)["response"]["body"]["usage"]["prompt_tokens"]
                 for line in result.splitlines())
    spent = tokens * 0.02 / 1e6 * 0.5
    assert 0 < spent <= budget and out.attrs["llm_report"].cost == pytest.approx(spent)
    sim.reset()
    with pytest.raises(BudgetError, match="worst case"):  # expected fits, worst case does not
        s.llm.embed(cache=False, dimensions=8, budget=est.batch_cost * 1.01, **FAST, **emb)
    assert sim.log == []


@pytest.mark.parametrize("model", ["gemini/gemini-embedding-001", "deepseek/deepseek-chat"])
def test_batch_refused_for_providers_without_a_batch_api(sim, model):
    with pytest.raises(InputError, match="no batch API"):
        texts(3).llm.embed(model=model, base_url=sim.base_url, api_key=KEY, progress=False, **FAST)
    with pytest.raises(InputError, match="mode="):
        texts(3).llm.embed(model=MODEL, base_url=sim.base_url, api_key=KEY, progress=False, mode="bulk")
    assert sim.log == [] and sim.batches == []


def test_packs_a_fatal_error_left_unsent_count_as_not_sent():
    """A wrong key stops an embeddings run after its first pack: the rows of the packs never
    sent are counted "not sent" (``BaseRun`` counts them for chat and embeddings alike), the
    first pack's rows failed. The reference is what reached the simulator: the inputs in the
    bodies it captured."""
    s = texts(5_000)
    with Simulator(ttft_ms=0, api_key=KEY, capture_requests=20) as sim:
        with pytest.raises(llmbatch_pd.AuthenticationError) as caught:
            s.llm.embed(model=MODEL, base_url=sim.base_url, api_key=KEY + "x", progress=False,
                        cache=False, dimensions=8, concurrency=1)
        reached = sum(len(c["body"]["input"]) for c in sim.captured if c["path"] == "/v1/embeddings")
    report = caught.value.result.attrs["llm_report"]
    assert 0 < reached < len(s)
    assert report.not_sent == len(s) - reached
    assert report.answered_rows == 0
