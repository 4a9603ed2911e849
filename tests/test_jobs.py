"""df.llm.submit: a run in the background that can be awaited, waited for, or cancelled."""

import asyncio
import time

import pandas as pd

from llmbatch_pd.sim import Simulator

from .conftest import KEY, MODEL


def rows(n):
    return pd.DataFrame({"t": [f"job row {i}" for i in range(n)]})


def test_submit_returns_at_once_and_result_waits(llm, sim):
    t0 = time.monotonic()
    job = rows(200).llm.submit("Echo {t}", **llm)
    assert time.monotonic() - t0 < 1.0
    out = job.result(timeout=60)
    assert job.done() and out["llm_output"].notna().all()
    assert "done" in repr(job)


def test_job_can_be_awaited(llm):
    async def main():
        return await rows(20).llm.submit("Echo {t}", **llm)

    assert asyncio.run(main())["llm_output"].notna().all()


def test_cancel_stops_and_keeps_finished_rows():
    with Simulator(ttft_ms=100) as sim:
        job = rows(2000).llm.submit("Echo {t}", model=MODEL, base_url=sim.base_url, api_key=KEY,
                                    progress=False, concurrency=10)
        time.sleep(1.0)
        job.cancel()
        out = job.result(timeout=10)
        sent = len(sim.log)
    done = int(out["llm_output"].notna().sum())
    assert 10 <= done < 2000
    assert done >= sent - 10  # nothing in flight was thrown away
    assert out["llm_output_error"].dropna().str.contains("cancelled by the user").all()


def test_confirm_sends_nothing_until_started(llm, sim):
    job = rows(5).llm.submit("Echo {t}", confirm=True, **llm)
    time.sleep(0.3)
    assert sim.log == [] and "waiting to start" in repr(job)
    assert job.estimate.requests == 5
    job.start()
    assert job.result(timeout=30)["llm_output"].notna().all()


def test_cancel_before_start_sends_nothing(llm, sim):
    job = rows(5).llm.submit("Echo {t}", confirm=True, **llm)
    job.cancel()
    out = job.result(timeout=5)
    assert sim.log == [] and out["llm_output"].isna().all()
