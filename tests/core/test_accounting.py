"""One row accounting (``RunReport.accounting``) against real runs over loopback HTTP.

Every test runs the simulator and checks the parts against its request log (what it was
sent, what it answered), never against the library's own arithmetic: answered rows are the
200 entries, failures the error entries, "not sent" the rows the simulator never saw."""

from __future__ import annotations

import asyncio
import threading

import pandas as pd
import pytest

from llmbatch_pd.accessor import _spec
from llmbatch_pd.core import errors
from llmbatch_pd.core.accounting import eta_s
from llmbatch_pd.core.figures import throughput
from llmbatch_pd.runs.chat import Run
from llmbatch_pd.sim import Simulator
from llmbatch_pd.ui.lines import summary_lines

from ..conftest import KEY, MODEL, paused, wait_until


def texts(n: int, prefix: str = "review") -> pd.DataFrame:
    return pd.DataFrame({"t": [f"{prefix} {i}" for i in range(n)]})


def adds_up(acc) -> bool:
    return acc.rows == acc.answered + acc.failed_total + acc.skipped_total + acc.not_sent_total + acc.pending


def figures(report) -> dict[str, str]:
    return {ln.label: ln.value for ln in summary_lines(report)}


def ok(log) -> list[dict]:
    return [e for e in log if e["status"] == 200]


def test_interrupted_run_counts_unsent_rows_as_not_sent_not_failed():
    """A task cancelled mid-run (what a kernel interrupt does): the 4 rows on the wire failed
    ("interrupted": sent, maybe billed), the rows the simulator never saw are "not sent";
    throughput counts the one answered row only."""
    df = texts(40)
    with Simulator(ttft_ms=1500, api_key=KEY) as sim:
        spec, rows = _spec(df, "Classify: {t}", model=MODEL, base_url=sim.base_url, api_key=KEY,
                           concurrency=4)
        run = Run(spec, rows, len(df))
        loop = asyncio.new_event_loop()
        task = loop.create_task(run.execute())
        thread = threading.Thread(target=lambda: loop.run_until_complete(asyncio.wait([task])))
        thread.start()
        # the first request goes alone; once it is answered a wave of 4 starts (1.5 s each)
        wait_until(lambda: len(sim.log) == 1 and sim.stats()["in_flight"] == 4, 30, "the first wave")
        loop.call_soon_threadsafe(task.cancel)
        thread.join(30)
        loop.close()
        assert task.cancelled()
        wait_until(lambda: sim.stats()["in_flight"] == 0, 30, "the simulator to finish")
        log = sim.log
    acc = run.report.accounting()
    assert adds_up(acc) and acc.pending == 0
    assert len(log) == 5 and acc.answered == len(ok(log)) == 1
    cut = [e for e in log if e["status"] is None]  # the simulator saw them, the client left
    assert acc.failed == {"interrupted": len(cut)} == {"interrupted": 4}  # on the wire
    assert acc.retries == 0 and acc.sent == len(log)
    assert acc.not_sent == {"interrupted": 40 - len(log)}
    rows_s, _ = throughput(run.report)
    assert rows_s == pytest.approx(1 / run.report.stats.elapsed)
    lines = figures(run.report)
    assert lines["Failed"] == "4" and lines["Not sent"] == "35"
    assert sum(e is not None and e.startswith("not sent: ") for e in run.errors) == 35


def test_budget_stop_explains_every_row(private_cache):
    """Long answers and a small budget: the run stops part-way; every row not answered is
    "not sent: budget" (none "failed"), and the answered ones are the simulator's 200s."""
    with Simulator(ttft_ms=2, api_key=KEY, answer_tokens=400) as sim:
        with pytest.warns(UserWarning):
            out = texts(40).llm.apply("{t}", model=MODEL, base_url=sim.base_url, api_key=KEY,
                                      progress=False, budget=0.0075, max_tokens=600)
        log = sim.log
    acc = out.attrs["llm_report"].accounting()
    assert adds_up(acc) and 0 < acc.answered < 40
    assert acc.answered == len(ok(log)) == len(log) and acc.failed_total == 0
    assert acc.not_sent == {"budget": 40 - len(log)}
    assert acc.requests_to_send == 40  # all 40 prompts were to be sent
    assert figures(out.attrs["llm_report"])["Failed"] == "0"
    assert eta_s(out.attrs["llm_report"]) == 0  # stopped: nothing left, however many unsent


def test_a_cancel_counts_the_rows_it_kept_from_being_sent_as_cancelled(private_cache):
    """Cancel on a background job mid-run: the requests in flight finish and are kept, every
    row the simulator never saw is "not sent: cancelled" (not "stopped", not failed)."""
    with Simulator(ttft_ms=20, api_key=KEY) as sim:
        job = texts(60).llm.submit("{t}", model=MODEL, base_url=sim.base_url, api_key=KEY,
                                   progress=False, concurrency=2)
        wait_until(lambda: len(sim.log) >= 6, 60, "six answers")
        with paused(sim):  # nothing is answered while the cancel lands
            job.cancel()
        with pytest.warns(UserWarning):
            out = job.result(timeout=60)
        log = sim.log
    acc = out.attrs["llm_report"].accounting()
    assert adds_up(acc) and acc.answered == len(ok(log)) == len(log) and acc.failed_total == 0
    assert acc.not_sent == {"cancelled": 60 - len(log)}


def test_bad_key_answers_nothing_and_shows_no_throughput():
    """A wrong key: the first request (sent alone) gets a 401 and stops the run; the rest are
    "not sent: stopped"; throughput is 0 rows/s (nothing answered), not the closed rows."""
    with Simulator(ttft_ms=2, api_key=KEY) as sim:
        with pytest.raises(errors.AuthenticationError) as caught:
            texts(30).llm.apply("{t}", model=MODEL, base_url=sim.base_url, api_key="sk-wrong-key",
                                progress=False)
        log = sim.log
    report = caught.value.report
    acc = report.accounting()
    assert adds_up(acc) and acc.answered == 0
    assert acc.failed == {"auth": len([e for e in log if e["status"] == 401])} == {"auth": 1}
    assert acc.not_sent == {"stopped": 30 - len(log)}
    assert throughput(report)[0] == 0 and eta_s(report) is None  # no answer: no rate to go by
    assert figures(report)["Throughput"] == "0 rows/s"


def test_missing_values_and_too_long_prompts_are_skipped_not_failed(llm, sim):
    df = texts(30)
    df.loc[[3, 7, 11], "t"] = None
    df.loc[20, "t"] = "word " * 1_100_000  # past gpt-4.1-mini's ~1M-token window
    with pytest.warns(UserWarning, match=r"(?s)3 skipped.*1 skipped, too long") as told:
        out = df.llm.apply("{t}", **llm)
    assert "failed" not in str(told[0].message)
    acc = out.attrs["llm_report"].accounting()
    assert adds_up(acc) and acc.skipped == {"missing value": 3, "too long": 1} and acc.failed_total == 0
    assert acc.answered == len(ok(sim.log)) == 26 and acc.requests_to_send == len(sim.log)
    lines = figures(out.attrs["llm_report"])
    assert lines["Failed"] == "0" and lines["Skipped"] == "4"


def test_duplicates_are_counted_as_they_are_found(private_cache):
    """Every prompt twice, in pairs: the duplicates count grows while the run goes (not at the
    end), and at the end requests to send = what the simulator received."""
    df = pd.DataFrame({"t": [f"review {i // 2}" for i in range(60)]})
    with Simulator(ttft_ms=100, api_key=KEY) as sim:
        job = df.llm.submit("{t}", model=MODEL, base_url=sim.base_url, api_key=KEY, progress=False,
                            concurrency=2)
        seen = wait_until(lambda: len(sim.log) >= 6 and len(sim.log), 30, "six answers")
        mid = job.report.duplicates
        out = job.result(timeout=60)
        log = sim.log
    # 6 prompts answered: the stream walked past at least 5 of their twins
    assert mid >= seen - 1 and mid < 30
    acc = out.attrs["llm_report"].accounting()
    assert adds_up(acc) and acc.duplicates == 30 and acc.answered == 60
    assert acc.requests_to_send == len(log) == 30 and acc.cached == 0


def test_cached_rows_and_retries_against_the_log(private_cache):
    """A second run over more rows: the cached rows are not sent again, and every 5xx the
    simulator answered is one retry."""
    with Simulator(ttft_ms=2, api_key=KEY, fault_5xx=0.25, seed=3) as sim:
        kw = {"model": MODEL, "base_url": sim.base_url, "api_key": KEY, "progress": False}
        texts(20).llm.apply("{t}", **kw)
        before = len(sim.log)
        out = texts(50).llm.apply("{t}", **kw)
        second = sim.log[before:]
    acc = out.attrs["llm_report"].accounting()
    assert adds_up(acc) and acc.answered == 50 and acc.cached == 20
    assert acc.requests_to_send == len(ok(second)) == 30
    errors_5xx = [e for e in second if e["status"] is not None and e["status"] >= 500]
    assert errors_5xx and acc.retries == len(errors_5xx) and acc.sent == len(second)


def test_several_models_add_up(llm, sim):
    df = texts(12)
    df.loc[2, "t"] = None
    with pytest.warns(UserWarning):
        out = df.llm.apply("{t}", **{**llm, "model": [MODEL, "openai/gpt-4.1-nano"]})
    reports = out.attrs["llm_report"]
    acc = reports.accounting()
    assert adds_up(acc) and acc.rows == 24 and acc.skipped == {"missing value": 2}
    assert acc.answered == len(ok(sim.log)) == 22 and acc.requests_to_send == 22
