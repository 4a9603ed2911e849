"""A packed run's accounting, projection and usage shares against the simulator over real
HTTP: rows are counted from the simulator's request log and pack log (a pack of k rows on
the wire stands for k rows), bills computed by hand from conftest's price table."""

from __future__ import annotations

import asyncio
import re
import threading

import pandas as pd
import pytest

from llmbatch_pd.accessor import _spec
from llmbatch_pd.runs.pack import make_run
from llmbatch_pd.sim import Simulator

from ..conftest import KEY, MODEL, bill, paused, wait_until

TEMPLATE = "Review {title} with {stars} stars"


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"title": [f"item {i}" for i in range(n)], "stars": [i % 5 for i in range(n)]})


def _adds_up(acc) -> bool:
    return acc.rows == acc.answered + acc.failed_total + acc.skipped_total + acc.not_sent_total + acc.pending


def _on_a_thread(run):
    loop = asyncio.new_event_loop()
    task = loop.create_task(run.execute())
    thread = threading.Thread(target=lambda: loop.run_until_complete(asyncio.wait([task])))
    thread.start()
    return loop, task, thread


def test_an_interrupted_packed_run_counts_rows_never_sent_as_not_sent():
    """A kernel interrupt (the task cancelled) with 4 packs of 10 on the wire: their 40 rows
    failed ("interrupted": sent, maybe billed), the answered pack's rows are answered, every
    other row is "not sent"; the answered rows reach the rate series and the recent costs."""
    df, k = _frame(200), 10
    with Simulator(ttft_ms=1500, api_key=KEY) as sim:
        spec, rows = _spec(df, TEMPLATE, model=MODEL, base_url=sim.base_url, api_key=KEY,
                           concurrency=4, pack=k)
        run = make_run(spec, rows, len(df))
        loop, task, thread = _on_a_thread(run)
        # the first pack goes alone; once it is answered a wave of 4 packs starts (1.5 s each)
        wait_until(lambda: len(sim.log) == 1 and sim.stats()["in_flight"] == 4, 30, "the first wave")
        loop.call_soon_threadsafe(task.cancel)
        thread.join(30)
        loop.close()
        assert task.cancelled()
        wait_until(lambda: sim.stats()["in_flight"] == 0, 30, "the simulator to finish")
        log = sim.log
    answered = sum(len(e["pack_ids_sent"]) for e in log if e["status"] == 200)
    cut = [e for e in log if e["status"] is None]  # the simulator saw them, the client left
    assert answered == k and len(cut) == 4
    acc = run.report.accounting()
    assert _adds_up(acc) and acc.pending == 0
    assert acc.answered == answered
    assert acc.failed == {"interrupted": k * len(cut)}
    assert acc.not_sent == {"interrupted": len(df) - answered - k * len(cut)}
    assert run.report.cut_requests == len(cut)
    assert sum(rate for _, rate, _ in run.stats.rate_series()) == answered
    assert list(run.stats.recent_costs) == [pytest.approx(bill(log))]


def test_a_cancelled_packed_run_counts_packs_never_sent_as_not_sent():
    """A Cancel mid-run: packs on the wire finish and are kept; rows never sent are "not
    sent", none "failed"."""
    df = _frame(2000)
    with Simulator(ttft_ms=100, api_key=KEY) as sim:
        job = df.llm.submit(TEMPLATE, model=MODEL, base_url=sim.base_url, api_key=KEY, progress=False,
                            concurrency=4, pack=10, cache=False)
        wait_until(lambda: len(sim.log) >= 8, 60, "8 packs answered by the simulator")
        job.cancel()
        out = job.result(timeout=30)
        log = sim.log
    report = out.attrs["llm_report"]
    acc = report.accounting()
    answered = sum(len(e["pack_ids_answered"]) for e in log if e["status"] == 200)
    assert _adds_up(acc) and acc.pending == 0 and acc.failed_total == 0
    assert acc.answered == answered
    assert acc.not_sent_total == len(df) - answered  # (kind "stopped", as a per-row run's)
    assert report.cost == pytest.approx(bill(log))



@pytest.mark.parametrize("budget", [None, 1.0])
def test_a_packed_runs_projection_at_mid_run_is_near_its_final_bill(budget):
    """With and without an estimate made first (``budget=``): mid-run (the simulator held still with packs on the wire), the projected total is the
    run's own bill within 15 %: cost per row (a pack's cost over its rows), rows left. The
    look-ahead of rows walked but not yet sent does not make it grow."""
    df = _frame(600)
    with Simulator(ttft_ms=5, api_key=KEY) as sim:
        job = df.llm.submit(TEMPLATE, model=MODEL, base_url=sim.base_url, api_key=KEY, progress=False,
                            concurrency=4, pack=10, cache=False, budget=budget)
        projections = []
        for answered in (8, 24):
            wait_until(lambda n=answered: len(sim.log) >= n, 60, f"{answered} packs answered")
            with paused(sim):
                report = job.report
                wait_until(lambda r=report, n=answered: r.stats.done >= n, 30, "the answers to be heard")
                assert (report.estimate is None) == (budget is None)
                projections.append(report.projection())
        out = job.result(timeout=60)
        log = sim.log
    assert out["llm_output"].notna().all()
    final = bill(log)
    assert len(log) == 60 and out.attrs["llm_report"].cost == pytest.approx(final)
    for p in projections:
        assert p.projected_total == pytest.approx(final, rel=0.15)
        assert p.cost_per_row == pytest.approx(final / len(df), rel=0.15)


def test_refused_packed_answers_are_in_the_rows_usage_columns():
    """Packs the simulator breaks (JSON cut short, a field dropped) are paid and asked again:
    their usage goes to their rows' usage columns, which add up to the bill by hand and to the
    tokens the simulator billed."""
    with Simulator(ttft_ms=5, api_key=KEY, seed=11, fault_invalid_json=0.4) as sim:
        out = _frame(100).llm.apply(TEMPLATE, model=MODEL, base_url=sim.base_url, api_key=KEY, pack=10,
                                    usage=True, progress=False, cache=False,
                                    schema={"label": str, "score": float}, schema_retries=3)
        log = sim.log
        faults = sim.stats()["by_fault"].get("invalid_json", 0)
    paid = [e for e in log if e["status"] == 200]
    assert faults >= 3
    assert out["llm_output_input_tokens"].sum() == sum(e["prompt_tokens"] for e in paid)
    assert out["llm_output_output_tokens"].sum() == sum(e["completion_tokens"] for e in paid)
    assert out["llm_output_cost"].sum() == pytest.approx(bill(log))


def test_estimate_with_a_packed_pilot_keeps_pilot_and_comparison_within_one_budget():
    """``estimate(pilot=20, pack=10, budget=B)``: the packed pilot and its rows asked again one
    by one share B (alone each would fit; together they would pass it), and what each way
    spent shows in the estimate, equal to the bill by hand."""
    words = ["great", "terrible", "loved it", "awful"]
    df = pd.DataFrame({"review": [f"The lamp was {words[i % 4]}, order {i}" for i in range(60)]})
    budget = 0.0018  # the packed pilot costs ~$0.0011, its 20 rows one by one ~$0.0013
    with Simulator(ttft_ms=5, api_key=KEY) as sim:
        est = df.llm.estimate("Summarise: {review}", pilot=20, pack=10, model=MODEL, base_url=sim.base_url,
                              api_key=KEY, budget=budget, cache=False, max_tokens=40)
        log = sim.log
    packed = [e for e in log if "pack_ids_sent" in e]
    single = [e for e in log if "pack_ids_sent" not in e]
    assert len(packed) == 2 and 0 < len(single) < 20  # the budget stopped the comparison
    assert bill(log) <= budget
    basis = est.loc[MODEL, "output_basis"]
    spent = re.search(r"the pilot spent \$([0-9.]+) packed and \$([0-9.]+) one by one", basis)
    assert spent is not None, basis
    assert float(spent[1]) == pytest.approx(bill(packed), rel=0.01)
    assert float(spent[2]) == pytest.approx(bill(single), rel=0.01)


def test_a_packed_run_leaves_the_endpoints_latency_history_alone(llm, sim):
    """The endpoint's history times new templates' requests of one row: a packed run's packs
    (k rows of answer each) stay out of it; a run of one row a request adds its requests."""
    df = _frame(60)
    spec, rows = _spec(df, TEMPLATE, pack=10, **{k: v for k, v in llm.items() if k != "progress"})
    run = make_run(spec, rows, len(df))
    asyncio.run(run.execute())
    assert len(sim.log) == 6 and run.report.answered_rows == 60

    def history():
        run._open_store()
        try:
            return run._endpoint_history()
        finally:
            run._close_store()

    assert history() is None
    df.llm.apply("Other {title}", **llm)
    assert history().requests == len(sim.log) - 6 == 60
