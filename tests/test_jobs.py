"""df.llm.submit: a run in the background that can be awaited, waited for, or cancelled."""

import asyncio

import pandas as pd

from llmbatch_pd.sim import Simulator
from llmbatch_pd.sim.answers import prompt_sha

from .conftest import KEY, MODEL, paused, wait_until


def rows(n):
    return pd.DataFrame({"t": [f"job row {i}" for i in range(n)]})


def test_submit_returns_at_once_and_result_waits(llm, sim):
    with paused(sim):  # the server answers nothing: submit must not wait for answers
        job = rows(200).llm.submit("Echo {t}", **llm)
        assert not job.done() and "running" in repr(job)
        assert sim.log == []
    out = job.result(timeout=60)
    assert job.done() and out["llm_output"].notna().all()
    assert "done" in repr(job) and len(sim.log) == 200


def test_job_can_be_awaited(llm):
    async def main():
        return await rows(20).llm.submit("Echo {t}", **llm)

    assert asyncio.run(main())["llm_output"].notna().all()


def test_cancel_stops_and_keeps_finished_rows():
    with Simulator(ttft_ms=100) as sim:
        job = rows(2000).llm.submit("Echo {t}", model=MODEL, base_url=sim.base_url, api_key=KEY,
                                    progress=False, concurrency=10)
        wait_until(lambda: len(sim.log) >= 20, 60, "20 answers from the simulator")
        job.cancel()
        out = job.result(timeout=30)
        sent = len(sim.log)
    done = int(out["llm_output"].notna().sum())
    assert 10 <= done < 2000
    assert done == sent  # every request sent was answered and kept: nothing in flight thrown away
    assert out["llm_output_error"].dropna().str.contains("cancelled by the user").all()


def test_confirm_sends_nothing_until_started(llm, sim):
    job = rows(5).llm.submit("Echo {t}", confirm=True, **llm)
    # another job, submitted after it on the same engine, runs to the end meanwhile ...
    other = rows(3).llm.submit("Other {t}", **llm).result(timeout=30)
    assert other["llm_output"].notna().all()
    # ... and the simulator saw only that one's prompts
    others = {prompt_sha([{"role": "user", "content": f"Other job row {i}"}]) for i in range(3)}
    assert {e["prompt_sha"] for e in sim.log} == others and len(sim.log) == 3
    assert "waiting to start" in repr(job)
    assert job.estimate.requests == 5
    job.start()
    assert job.result(timeout=30)["llm_output"].notna().all()
    assert len(sim.log) == 3 + 5


def test_cancel_before_start_sends_nothing(llm, sim):
    job = rows(5).llm.submit("Echo {t}", confirm=True, **llm)
    job.cancel()
    out = job.result(timeout=30)
    assert sim.log == [] and out["llm_output"].isna().all()
