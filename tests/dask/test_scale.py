"""Issue 13's checks on a LocalCluster of 2 worker processes x 2 threads (Nanny workers), the
simulator in its own process: one pace for the whole cluster (a limit the client is not told),
one budget (answers that grow long after the first 100 requests), and a worker killed mid-run.
Every figure is read from the simulator's own log and stats, every bill computed by hand from
the price table (``conftest.bill``).

Slow (a cluster of processes, ~15 s of sending at the limit): ``-m slow`` selects them."""

from __future__ import annotations

import os
from collections import Counter

import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import llmbatch_pd.dask  # noqa: E402,F401  (registers ddf.llm)
from llmbatch_pd.dask.driver import driver  # noqa: E402
from llmbatch_pd.sim import Simulator  # noqa: E402
from llmbatch_pd.sim.answers import make_answer  # noqa: E402
from tests.conftest import KEY, MODEL, bill, wait_until  # noqa: E402

pytestmark = pytest.mark.slow

TEMPLATE = "Classify the title: {title}"
RPM = 6000  # the simulator's limit: never told to the client


@pytest.fixture(scope="module")
def sim():
    with Simulator(ttft_ms=30, api_key=KEY, process=True) as s:
        yield s


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture
def fresh(sim):
    sim.reset()
    sim.configure(rpm=RPM, answer_tokens_after=None)
    return sim


def rows(n: int, tag: str) -> pd.DataFrame:
    titles = [f"{tag} title {i}" for i in range(n)]  # every prompt its own
    return pd.DataFrame({"title": titles}, index=pd.Index(range(10_000, 10_000 + 2 * n, 2), name="id"))


def answer_of(title: str) -> str:
    return make_answer([{"role": "user", "content": TEMPLATE.format(title=title)}], MODEL.split("/", 1)[1]).text


def chat(log: list[dict]) -> list[dict]:
    return [e for e in log if e["path"] == "/v1/chat/completions"]


def options(sim) -> dict:
    return {"model": MODEL, "base_url": sim.base_url, "api_key": KEY, "progress": False}


def test_one_pace_for_the_cluster_uses_the_limit_without_429s(client, fresh):
    frame = rows(1500, "pace")
    out = dd.from_pandas(frame, npartitions=8).llm.apply(TEMPLATE, **options(fresh))
    result = out.compute()
    report = out.llm.wait(120)

    assert result.index.equals(frame.index)
    assert result["llm_output_error"].isna().all()
    assert list(result["llm_output"]) == [answer_of(t) for t in frame["title"]]
    log = chat(fresh.log)
    ok = [e for e in log if e["status"] == 200]
    limited = [e for e in log if e["status"] == 429]
    assert len(ok) == 1500 and len({e["prompt_sha"] for e in ok}) == 1500  # none paid twice
    window = max(e["t"] for e in ok) - min(e["t"] for e in log)
    used = len(ok) / (window * RPM / 60)
    assert used >= 0.85, f"{used:.0%} of the limit used over {window:.1f} s"
    assert len(limited) <= 0.05 * len(log), f"{len(limited)} of {len(log)} requests answered 429"
    assert report.answered_rows == 1500 and report.stats.by_kind["429"] == len(limited)


def test_one_budget_for_the_cluster_holds_when_answers_grow(client, fresh):
    frame = rows(1500, "budget")
    ddf = dd.from_pandas(frame, npartitions=8)
    expected = ddf.llm.estimate(TEMPLATE, **{k: v for k, v in options(fresh).items() if k != "progress"})
    budget = 1.05 * float(expected.loc[MODEL, "cost"])
    fresh.configure(answer_tokens_after=(100, 800))  # 20x the default answer from request 101 on

    out = ddf.llm.apply(TEMPLATE, **options(fresh), budget=budget)
    result = out.compute()
    report = out.llm.wait(120)

    spent = bill(chat(fresh.log))
    assert spent <= budget, f"spent ${spent:.4f} of a ${budget:.4f} budget"
    assert spent >= budget / 2, f"stopped at ${spent:.4f} of a ${budget:.4f} budget"
    answered = result["llm_output"].notna()
    assert 100 < answered.sum() < 1500  # the budget stopped it, after the answers grew
    assert result.loc[~answered, "llm_output_error"].str.contains("budget").all()
    assert report.cost == pytest.approx(spent, rel=1e-6)
    acc = report.accounting()  # every row accounted for: answered, or not sent for the budget
    assert acc.answered == answered.sum() and acc.rows == 1500 and acc.pending == 0
    assert acc.answered + sum(acc.not_sent.values()) + sum(acc.failed.values()) == 1500


def test_a_worker_killed_mid_run_pays_nothing_twice(client, fresh):
    frame = rows(1200, "kill")
    out = dd.from_pandas(frame, npartitions=8).llm.apply(TEMPLATE, **options(fresh))
    future = client.compute(out)
    wait_until(lambda: fresh.stats()["by_status"].get("200", 0) >= 300, 60, "300 answers")
    in_flight = fresh.stats()["in_flight"]
    victim = next(iter(client.scheduler_info()["workers"]))
    client.run(os._exit, 1, workers=[victim], on_error="return")  # its Nanny starts a new one
    result = future.result(timeout=180)
    report = out.llm.wait(120)

    assert result.index.equals(frame.index)
    assert list(result["llm_output"]) == [answer_of(t) for t in frame["title"]]
    ok = [e for e in chat(fresh.log) if e["status"] == 200]
    twice = sum(n - 1 for n in Counter(e["prompt_sha"] for e in ok).values())
    # only what was in flight when the worker died (or answered in the last hand-over window)
    # may be paid again; the rows its partitions had finished come from the coordinator
    assert twice <= in_flight + 10, f"{twice} prompts paid twice ({in_flight} were in flight)"
    assert report.answered_rows == 1200
    parts = driver(out.llm.run_id).parts.values()  # the partitions' own end reports
    assert sum(p["known"] for p in parts) > 0  # a re-run partition took answers from the coordinator
