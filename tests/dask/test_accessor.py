"""``ddf.llm`` on a real LocalCluster (in-process workers: quick) against the simulator over
loopback: the lazy result's shape (the pandas call's columns and dtypes, the same index), the
answers on their own rows (the simulator's answer to each row's own prompt), the estimate over
every partition, the driver as the one cache writer (a second apply sends nothing), and bad
input refused before anything is sent. The full-size cluster checks are in test_scale.py."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import llmbatch_pd.dask  # noqa: E402,F401  (registers ddf.llm)
from llmbatch_pd import InputError  # noqa: E402
from llmbatch_pd.sim.answers import make_answer  # noqa: E402
from tests.conftest import MODEL, bill  # noqa: E402

TEMPLATE = "Classify the title: {title}"


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture
def frame() -> pd.DataFrame:
    # 45 rows, 30 distinct titles, on an index that is not 0..n-1
    titles = [f"title number {i % 30}" for i in range(45)]
    return pd.DataFrame({"title": titles, "n": range(45)}, index=pd.Index(range(1000, 1045), name="id"))


def expected_answer(title: str) -> str:
    """The simulator's own answer to the prompt a row renders (no system prompt)."""
    messages = [{"role": "user", "content": TEMPLATE.format(title=title)}]
    return make_answer(messages, MODEL.split("/", 1)[1]).text


def test_without_a_client_it_says_what_to_start(sim, llm, frame):
    if distributed.client._get_global_client() is not None:
        pytest.skip("a Client of another test is the default here")
    with pytest.raises(InputError, match="Client"):
        dd.from_pandas(frame, npartitions=2).llm.apply(TEMPLATE, **llm)


def test_apply_is_lazy_and_shaped_like_the_pandas_call(client, sim, llm, frame):
    ddf = dd.from_pandas(frame, npartitions=3)
    out = ddf.llm.apply(TEMPLATE, **llm)
    assert isinstance(out, dd.DataFrame)
    assert sim.stats()["total"] == 0  # nothing sent before compute
    pandas_call = frame.iloc[:0].llm.apply(TEMPLATE, **{**llm, "cache": False})
    new = [c for c in pandas_call.columns if c not in frame.columns]
    assert list(out.columns) == list(pandas_call.columns) and new
    # the frame's own columns keep dask's dtypes (it may convert strings); the new ones are pandas'
    assert dict(out.dtypes) == {**dict(ddf.dtypes), **dict(pandas_call.dtypes[new])}

    result = out.compute()
    report = out.llm.wait(60)
    assert result.index.equals(frame.index)
    assert dict(result.dtypes) == dict(out.dtypes)
    assert result["llm_output"].notna().all() and result["llm_output_error"].isna().all()
    for title, answer in zip(result["title"], result["llm_output"], strict=True):
        assert answer == expected_answer(title)
    log = [e for e in sim.log if e["path"] == "/v1/chat/completions"]
    assert len(log) <= 45 and {e["status"] for e in log} == {200}
    assert report.answered_rows == 45 and report.failed_rows == 0
    assert report.cost == pytest.approx(bill(log), rel=1e-9)
    acc = report.accounting()  # the same accounting as a pandas run's
    assert (acc.rows, acc.answered, acc.pending, acc.sent) == (45, 45, 0, len(log))


def test_the_driver_writes_the_cache_and_the_next_apply_sends_nothing(client, sim, llm, frame, private_cache):
    ddf = dd.from_pandas(frame, npartitions=3)
    out = ddf.llm.apply(TEMPLATE, **llm)
    first = out.compute()
    out.llm.wait(60)
    sent = sim.stats()["total"]
    with sqlite3.connect(private_cache) as db:  # the answers are on disk, written by this process
        stored = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    assert stored == len(set(frame["title"]))

    again = ddf.llm.apply(TEMPLATE, **llm)
    second = again.compute()
    report = again.llm.wait(60)
    assert sim.stats()["total"] == sent  # every row answered from the driver's cache
    pd.testing.assert_frame_equal(first, second)
    assert report.cached == 45 - report.duplicates and report.cost == 0


def test_estimate_counts_every_partition(client, sim, llm, frame):
    ddf = dd.from_pandas(frame, npartitions=4)
    options = {k: v for k, v in llm.items() if k != "progress"}
    spread = ddf.llm.estimate(TEMPLATE, **options)
    whole = frame.llm.estimate(TEMPLATE, **options)
    assert spread.loc[MODEL, "rows"] == 45
    # per partition, a prompt repeated in another partition is not a duplicate
    assert spread.loc[MODEL, "requests"] + spread.loc[MODEL, "duplicates"] == 45
    assert whole.loc[MODEL, "requests"] == 30
    per_request = whole.loc[MODEL, "input_tokens"] / 30
    assert spread.loc[MODEL, "input_tokens"] == pytest.approx(per_request * spread.loc[MODEL, "requests"], rel=0.05)
    assert sim.stats()["total"] == 0


def test_series_apply_names_the_cell(client, sim, llm, frame):
    ds = dd.from_pandas(frame, npartitions=2)["title"]
    out = ds.llm.apply("Classify the title: {}", **llm)
    result = out.compute()
    out.llm.wait(60)
    assert result.index.equals(frame.index)
    assert list(result["llm_output"]) == [expected_answer(t) for t in frame["title"]]


def test_bad_input_is_refused_before_anything_is_sent(client, sim, llm, frame):
    ddf = dd.from_pandas(frame, npartitions=2)
    with pytest.raises(InputError, match="concurrency"):
        ddf.llm.apply(TEMPLATE, **llm, concurency=4)
    with pytest.raises(InputError, match="nope"):
        ddf.llm.apply("Classify: {nope}", **llm)
    with pytest.raises(InputError, match="pilot"):
        ddf.llm.apply(TEMPLATE, **llm, pilot=5)
    with pytest.raises(InputError, match="one model"):
        ddf.llm.apply(TEMPLATE, **{**llm, "model": [MODEL, "openai/gpt-4.1-nano"]})
    assert sim.stats()["total"] == 0


def test_pack_is_refused_not_silently_sent_row_by_row(client, sim, llm, frame):
    """pack= is not honoured by the partitions (one request a row): refused before anything is
    sent, for apply and estimate alike; pack=1 (one row a request) is the plain run."""
    ddf = dd.from_pandas(frame, npartitions=2)
    for pack in (10, "auto"):
        with pytest.raises(InputError, match="pack="):
            ddf.llm.apply(TEMPLATE, **llm, pack=pack)
        with pytest.raises(InputError, match="pack="):
            ddf.llm.estimate(TEMPLATE, **llm, pack=pack)
    assert sim.stats()["total"] == 0
    out = ddf.llm.apply(TEMPLATE, **llm, pack=1).compute()
    assert out["llm_output"].notna().all()
    # one request a row (no title repeats inside either partition, and duplicates are found per partition)
    assert sim.stats()["total"] == len(frame)


def test_a_bad_key_stops_every_partition_and_raises(client, sim, llm, frame):
    from llmbatch_pd import AuthenticationError

    ddf = dd.from_pandas(frame, npartitions=3)
    out = ddf.llm.apply(TEMPLATE, **{**llm, "api_key": "sk-wrong-key-0000"})
    with pytest.raises(AuthenticationError) as raised:
        out.compute()
    assert "sk-wrong-key-0000" not in str(raised.value)
    statuses = [e["status"] for e in sim.log if e["path"] == "/v1/chat/completions"]
    assert statuses and set(statuses) == {401} and len(statuses) <= 6  # a wave at most, not every row
    report = out.llm.wait(30)  # the driver ends too, though the compute that raised ran no more partitions
    assert report.stats.stop_reason and report.cost == 0


def test_a_budget_the_estimate_exceeds_is_refused_before_anything_is_sent(client, sim, llm, frame):
    from llmbatch_pd import BudgetError

    ddf = dd.from_pandas(frame, npartitions=3)
    with pytest.raises(BudgetError, match="not started"):
        ddf.llm.apply(TEMPLATE, **llm, budget=0.000001)
    assert sim.stats()["total"] == 0


def test_a_result_computed_after_its_run_ended_sends_nothing_and_says_why(client, sim, llm, frame):
    out = dd.from_pandas(frame, npartitions=2).llm.apply(TEMPLATE, **llm)
    out.compute()
    out.llm.wait(60)
    sent = sim.stats()["total"]
    with pytest.raises(InputError, match="has ended"):
        out.compute()
    assert sim.stats()["total"] == sent


def test_embed_is_lazy_and_gives_each_row_its_vector(client, sim, llm, frame, private_cache):
    np = pytest.importorskip("numpy")
    ddf = dd.from_pandas(frame, npartitions=3)
    options = {**llm, "model": "openai/text-embedding-3-small"}
    out = ddf.llm.embed("Title: {title}", **options)
    assert sim.stats()["total"] == 0
    pandas_call = frame.llm.embed("Title: {title}", **{**options, "cache": False})
    vectors = out.compute()
    report = out.llm.wait(60)
    assert vectors.index.equals(frame.index) and vectors.dtype == pandas_call.dtype
    for ours, theirs in zip(vectors, pandas_call, strict=True):  # the simulator's vector per text
        np.testing.assert_array_equal(ours, theirs)
    assert report.answered_rows == 45
    with sqlite3.connect(private_cache) as db:  # written by this process, one per distinct text
        assert db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == 30

    sent = sim.stats()["total"]
    again = ddf.llm.embed("Title: {title}", **options)
    again.compute()
    again.llm.wait(60)
    assert sim.stats()["total"] == sent  # every text from the driver's cache


def test_series_embed(client, sim, llm, frame):
    ds = dd.from_pandas(frame, npartitions=2)["title"]
    out = ds.llm.embed(**{**llm, "model": "openai/text-embedding-3-small"})
    vectors = out.compute()
    assert out.llm.wait(60).answered_rows == 45 and vectors.index.equals(frame.index)
    assert all(v is not None and len(v) > 0 for v in vectors)


def _runs_on_scheduler(client) -> list[str]:
    from llmbatch_pd.dask.coordinator import PLUGIN

    return client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.plugins[PLUGIN].runs))


def test_a_result_dropped_before_it_is_computed_ends_its_driver_and_run(client, sim, llm, frame):
    import gc

    from llmbatch_pd.dask.driver import RUNS
    from tests.conftest import wait_until

    ddf = dd.from_pandas(frame, npartitions=2)
    out = ddf.llm.apply(TEMPLATE, **llm)
    run_id = out.llm.run_id
    thread = RUNS[run_id]._thread
    assert thread.is_alive() and run_id in _runs_on_scheduler(client)
    del out
    gc.collect()
    wait_until(lambda: not thread.is_alive(), 10, "the driver thread of a dropped result to end")
    assert run_id not in RUNS
    assert run_id not in _runs_on_scheduler(client)
    assert sim.stats()["total"] == 0


def test_a_partition_that_raises_ends_the_run_and_wait_returns(client, sim, llm, frame):
    """An ordinary error inside one partition (here its rows lack the template's column):
    wait() returns the report with the error named, it does not wait for ever."""
    ddf = dd.from_pandas(frame, npartitions=3)
    broken = ddf.map_partitions(lambda p: p.drop(columns="title") if p.index[0] >= 1030 else p, meta=ddf._meta,
                              enforce_metadata=False)
    out = broken.llm.apply(TEMPLATE, **llm)
    with pytest.raises(Exception, match="title"):
        out.compute()
    report = out.llm.wait(timeout=20)
    assert any("raised" in w and "title" in w for w in report.warnings)
    assert out.llm.run_id not in _runs_on_scheduler(client)


def _take_handler(dask_scheduler=None):
    dask_scheduler._llmbatch_take = dask_scheduler.handlers.pop("llmbatch_take")


def _give_handler(dask_scheduler=None):
    dask_scheduler.handlers["llmbatch_take"] = dask_scheduler._llmbatch_take


def test_the_driver_rides_out_a_failed_read_of_the_coordinator(client, sim, llm, frame, private_cache):
    """The scheduler briefly cannot hand over the answers (its handler is gone: a real failed
    call): the driver warns, tries again, and still writes every paid answer to the cache."""
    from llmbatch_pd.dask.driver import RUNS
    from tests.conftest import wait_until

    ddf = dd.from_pandas(frame, npartitions=3)
    with pytest.warns(RuntimeWarning, match="trying again"):
        out = ddf.llm.apply(TEMPLATE, **llm)
        driver = RUNS[out.llm.run_id]
        client.run_on_scheduler(_take_handler)
        try:
            wait_until(lambda: driver.poll_failures >= 1, 10, "the driver to fail a read")
        finally:
            client.run_on_scheduler(_give_handler)
    out.compute()
    report = out.llm.wait(60)
    assert report.answered_rows == len(frame)
    with sqlite3.connect(private_cache) as db:
        stored = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    assert stored == frame["title"].nunique()  # every distinct prompt paid is on disk


def test_a_dask_run_is_in_the_journal_once_it_ends_with_its_rows_and_dollars(client, sim, llm, frame):
    from llmbatch_pd.core import journal

    journal.clear()
    ddf = dd.from_pandas(frame, npartitions=3)
    out = ddf.llm.apply(TEMPLATE, **llm)
    vectors = ddf.llm.embed("{title}", **{**llm, "model": "openai/text-embedding-3-small"})
    assert journal.entries() == []  # the checks on the empty _meta are no runs
    out.compute()
    out.llm.wait(60)
    [entry] = journal.entries()
    assert (entry.rows, entry.answered, entry.status) == (len(frame), len(frame), "done")
    assert entry.dollars == pytest.approx(bill(sim.log), rel=1e-9)
    assert journal.total_spend() == pytest.approx(bill(sim.log), rel=1e-9)
    del vectors


def test_an_embed_result_computed_after_its_run_ended_says_why(client, sim, llm, frame):
    """Not a Series of None vectors: the run is over, its vectors are in the cache file."""
    out = dd.from_pandas(frame, npartitions=2).llm.embed("{title}", **{**llm, "model": "openai/text-embedding-3-small"})
    out.compute()
    out.llm.wait(60)
    sent = sim.stats()["total"]
    with pytest.raises(InputError, match="has ended"):
        out.compute()
    assert sim.stats()["total"] == sent


def test_the_cache_goes_to_the_cluster_once_not_inside_every_task(client, sim, llm, frame, private_cache):
    """Finding 10: the model's cached answers were pickled into every partition task; they are
    scattered once, and the graph carries only their key (and they still answer the rows)."""
    import cloudpickle

    ddf = dd.from_pandas(frame, npartitions=3)
    first = ddf.llm.apply(TEMPLATE, **llm)
    first.compute()
    first.llm.wait(60)
    sent = sim.stats()["total"]
    again = ddf.llm.apply(TEMPLATE, **llm)
    graph = cloudpickle.dumps(dict(again.__dask_graph__()))
    assert expected_answer(frame["title"].iloc[0]).encode() not in graph
    result = again.compute()
    report = again.llm.wait(60)
    assert sim.stats()["total"] == sent  # every row answered from the scattered cache
    assert list(result["llm_output"]) == [expected_answer(t) for t in frame["title"]]
    assert report.cached == len(frame) - report.duplicates


def test_the_driver_ends_when_its_client_closes(client, sim, llm, frame):
    from llmbatch_pd.dask.driver import RUNS
    from tests.conftest import wait_until

    with distributed.Client(client.cluster) as other:  # the default client while it is open
        out = dd.from_pandas(frame, npartitions=2).llm.apply(TEMPLATE, **llm)
        driver = RUNS[out.llm.run_id]
        assert driver.client is other
    wait_until(lambda: not driver._thread.is_alive(), 10, "the driver of a closed client to end")
    with pytest.raises(RuntimeError, match="stopped|failed"):
        out.llm.wait(1)
