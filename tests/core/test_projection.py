"""Cost projection (``RunReport.projection``) and the rate series (``EngineStats.rate_series``)
against real runs over loopback HTTP; figures by hand from the simulator's request log and
the price table typed into conftest.py."""

from __future__ import annotations

import pandas as pd
import pytest

from llmbatch_pd.accessor import _spec
from llmbatch_pd.core.report import RunReport
from llmbatch_pd.core.stats import RateSeries
from llmbatch_pd.runs.chat import Run
from llmbatch_pd.sim import Simulator
from llmbatch_pd.ui.lines import plan_lines, projection_line

from ..conftest import KEY, MODEL, bill, paused, wait_until

ROWS = 50
BUDGET = 0.012


def ok(log) -> list[dict]:
    return [e for e in log if e["status"] == 200]


def test_projection_says_where_the_budget_stops_the_run(private_cache):
    """Answers of ~400 tokens where the estimate assumes 100: at the rate the first answers
    cost, the budget pays for budget / (cost per request) of the 50 rows; the projection says
    so mid-run, flags the cost as over the estimate, and the run does stop near there."""
    df = pd.DataFrame({"t": [f"review {i}" for i in range(ROWS)]})
    with Simulator(ttft_ms=60, api_key=KEY, answer_tokens=400) as sim:
        job = df.llm.submit("{t}", model=MODEL, base_url=sim.base_url, api_key=KEY, progress=False,
                            budget=BUDGET, max_tokens=600, concurrency=2)
        wait_until(lambda: len(ok(sim.log)) >= 6, 30, "six answers")
        with paused(sim):  # nothing more is answered: the client catches up, then we look
            report = job.report
            answered = wait_until(lambda: (n := len(ok(sim.log))) == report.stats.done and n, 30,
                                  "the client to hear every answer")
            p = report.projection()
            spent = bill(sim.log)
            line = projection_line(report)
        with pytest.warns(UserWarning):
            out = job.result(timeout=60)
        final = sim.log
    per_request = spent / answered  # by hand: the simulator's token counts at the list price
    assert p.cost_per_row == pytest.approx(per_request, rel=1e-6)
    assert p.spent == pytest.approx(spent, rel=1e-6)
    assert p.projected_total == pytest.approx(per_request * ROWS, rel=1e-6)
    assert p.budget == BUDGET and p.projected_total > BUDGET
    by_hand = BUDGET / per_request / ROWS  # the share of the rows the budget pays for
    assert p.stops_at_fraction == pytest.approx(by_hand, rel=1e-6) and 0.2 < by_hand < 0.6
    assert p.over_estimate and p.expected_total is not None and p.expected_total < BUDGET
    assert p.eta_s is not None and p.eta_s > 0
    assert line is not None and line.tone == "bad" and "stops the run at about" in line.note
    # the run stopped where it said (the ledger keeps a worst case in reserve: a little sooner)
    stopped_at = len(ok(final)) / ROWS
    assert 0.7 * by_hand <= stopped_at <= by_hand + 1 / ROWS
    acc = out.attrs["llm_report"].accounting()
    assert acc.answered == len(ok(final)) and acc.not_sent == {"budget": ROWS - len(final)}


def test_projection_follows_answers_that_grow(private_cache):
    """The first 10 answers are short (~20 tokens), the rest ~600: once 30 are in, the
    projection prices the rest at the last 20 answers' cost (all long ones), not the run's
    average (a third of them short, which would promise far more rows), and the run stops
    about where it says."""
    rows, budget = 60, 0.03
    df = pd.DataFrame({"t": [f"review {i}" for i in range(rows)]})
    with Simulator(ttft_ms=20, api_key=KEY, answer_tokens=20, answer_tokens_after=(10, 600)) as sim:
        job = df.llm.submit("{t}", model=MODEL, base_url=sim.base_url, api_key=KEY, progress=False,
                            budget=budget, max_tokens=1000, concurrency=1)
        wait_until(lambda: len(ok(sim.log)) >= 30, 60, "thirty answers")
        with paused(sim):
            report = job.report
            answered = wait_until(lambda: (n := len(ok(sim.log))) == report.stats.done and n, 30,
                                  "the client to hear every answer")
            p = report.projection()
            log = ok(sim.log)
        with pytest.warns(UserWarning):
            out = job.result(timeout=60)
        final = ok(sim.log)
    spent = bill(log)
    recent = bill(log[-20:]) / 20  # one request in flight at a time: the log is in answer order
    assert p.cost_per_row == pytest.approx(recent, rel=1e-6)
    assert p.average_per_row == pytest.approx(spent / answered, rel=1e-6)
    assert p.average_per_row < 0.8 * recent
    by_hand = (answered + (budget - spent) / recent) / rows
    assert p.stops_at_fraction == pytest.approx(by_hand, rel=1e-6)
    average_says = (answered + (budget - spent) / (spent / answered)) / rows
    stopped_at = len(final) / rows
    assert abs(stopped_at - by_hand) < abs(stopped_at - average_says)
    assert 0.85 * by_hand <= stopped_at <= by_hand + 1 / rows
    assert out.attrs["llm_report"].accounting().not_sent == {"budget": rows - len(final)}


def test_no_projection_before_an_answer_and_none_left_after_the_run(llm, sim):
    assert RunReport(model=MODEL, rows=10).projection() is None
    out = pd.DataFrame({"t": ["a", "b", "c"]}).llm.apply("{t}", **llm)
    p = out.attrs["llm_report"].projection()
    assert p.projected_total == pytest.approx(bill(sim.log)) and p.stops_at_fraction is None
    assert p.eta_s == 0


def test_rate_series_counts_answered_rows_and_marks_429s(private_cache):
    """Per second: the answered rows add up to the simulator's 200s; a second that saw a 429
    is marked, and only a run that met one has a mark."""
    df = pd.DataFrame({"t": [f"row {i}" for i in range(40)]})
    with Simulator(ttft_ms=5, api_key=KEY, fault_429=0.2, fault_retry_after_s=0.05, seed=5) as sim:
        out = df.llm.apply("{t}", model=MODEL, base_url=sim.base_url, api_key=KEY, progress=False)
        log = sim.log
    series = out.attrs["llm_report"].stats.rate_series(window_s=600)
    assert series and [t for t, _, _ in series] == list(range(len(series)))
    assert sum(r for _, r, _ in series) == len(ok(log)) == 40
    assert any(e["status"] == 429 for e in log) and any(mark for _, _, mark in series)
    with Simulator(ttft_ms=5, api_key=KEY) as calm:
        again = df.llm.apply("{t} again", model=MODEL, base_url=calm.base_url, api_key=KEY, progress=False)
    assert not any(mark for _, _, mark in again.attrs["llm_report"].stats.rate_series(600))


def test_rate_series_memory_is_bounded():
    series = RateSeries(keep=5)
    for second in range(100):
        series.add(second, rows=2, had_429=second % 10 == 0)
    assert len(series.buckets) == 5
    assert series.series(100, 60)[-5:] == [(95, 2.0, False), (96, 2.0, False), (97, 2.0, False),
                                           (98, 2.0, False), (99, 2.0, False)]
    assert series.series(100, 60)[0] == (40, 0.0, False)  # dropped seconds read as empty


def test_a_new_template_is_timed_by_the_endpoints_measured_latency(private_cache):
    """No history of its own: before, 2 s a request (the defaults) where the simulator answers
    in 0.3 s; once another template has run on the endpoint, its measured latency. By hand:
    640 requests, 64 in flight, 0.3 s each -> 640 / (64 / 0.3) + 0.3 = 3.3 s."""
    df = pd.DataFrame({"t": [f"review {i}" for i in range(640)]})
    with Simulator(ttft_ms=300, api_key=KEY) as sim:
        kw = {"model": MODEL, "base_url": sim.base_url, "api_key": KEY, "progress": False}
        before = float(df.llm.estimate("Summarise: {t}", **kw)["wall_time_s"].iloc[0])
        df.head(20).llm.apply("Classify: {t}", **kw)  # another template on the same endpoint
        after = float(df.llm.estimate("Summarise: {t}", **kw)["wall_time_s"].iloc[0])
    by_hand = 640 / (64 / 0.3) + 0.3
    assert before == pytest.approx(640 / (64 / 2.0) + 2.0)  # the defaults: 2 s a request
    assert by_hand <= after <= 1.4 * by_hand  # loopback and the engine add a little
    spec, rows = _spec(df, "Summarise: {t}", **{k: v for k, v in kw.items() if k != "progress"})
    est = Run(spec, rows, len(df)).plan()
    wall = {ln.label: ln.value for ln in plan_lines(est, mode="batch")}["Wall time"]
    assert wall == "up to 24 h"  # batch: the provider's window, not the real-time figure
