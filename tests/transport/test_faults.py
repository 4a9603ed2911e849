"""Faults over real HTTP: every row ends with an answer or an explicit error; a run-wide
fault (bad key, no quota) raises, carrying every row."""

import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

import llmbatch_pd
from llmbatch_pd.core.errors import RepeatedFailure
from llmbatch_pd.sim import Simulator

from ..conftest import KEY, MODEL, paused, wait_until


def rows(n):
    return pd.DataFrame({"t": [f"review number {i}" for i in range(n)]})


def test_2000_rows_survive_mixed_faults():
    with Simulator(ttft_ms=20, api_key=KEY, fault_429=0.05, fault_retry_after_s=0.2, fault_5xx=0.02,
                   fault_hang=0.005, hang_seconds=30, fault_reset=0.005, seed=3, log=True) as sim:
        out = rows(2000).llm.apply(
            "Summarise: {t}", model=MODEL, base_url=sim.base_url, api_key=KEY, progress=False,
            concurrency=100, timeout=1.0,
        )
        stats = sim.stats()
    answered = out["llm_output"].notna()
    errored = out["llm_output_error"].notna()
    assert (answered ^ errored).all(), "every row has exactly one of answer / error"
    assert answered.mean() >= 0.995
    faults = stats["by_fault"]
    assert faults.get("429", 0) > 50 and faults.get("hang", 0) > 3 and faults.get("reset", 0) > 3
    report = out.llm.report
    # the client saw, and counted, every 429 the server sent, and timed out on every hang
    assert report.stats.by_kind["429"] == faults["429"]
    assert report.stats.by_kind["timeout"] >= faults["hang"]


def test_bad_key_stops_after_first_answer():
    with Simulator(ttft_ms=5, api_key=KEY) as sim:
        with pytest.raises(llmbatch_pd.AuthenticationError) as caught:
            rows(500).llm.apply("Summarise: {t}", model=MODEL, base_url=sim.base_url,
                                api_key="sk-wrong-key-000", progress=False, concurrency=50)
        sent = len(sim.log)
    out = caught.value.result
    assert sent == 1  # the first request goes alone, so a bad key costs one request
    assert out["llm_output"].isna().all()
    first = out["llm_output_error"].iloc[0]
    assert "401" in first and "api_key" in first
    assert "sk-wrong-key-000" not in " ".join(out["llm_output_error"])
    assert out["llm_output_error"].iloc[1].startswith("not sent: HTTP 401")
    assert "Stopped early" in out.llm.report.summary()


def test_bad_key_from_environment_names_the_variable(monkeypatch):
    with Simulator(ttft_ms=5, api_key=KEY) as sim:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-wrong")
        with pytest.raises(llmbatch_pd.AuthenticationError, match=r"\$OPENAI_API_KEY") as caught:
            rows(3).llm.apply("{t}", model=MODEL, base_url=sim.base_url, progress=False)
    assert "$OPENAI_API_KEY" in caught.value.result["llm_output_error"].iloc[0]


def test_insufficient_quota_is_not_retried_and_stops():
    with Simulator(ttft_ms=5, quota_requests=30) as sim:
        with pytest.raises(llmbatch_pd.QuotaExceededError) as caught:
            rows(300).llm.apply("{t}", model=MODEL, base_url=sim.base_url, api_key=KEY,
                                progress=False, concurrency=10)
        statuses = [e["status"] for e in sim.log]
    out = caught.value.result
    assert out["llm_output"].notna().sum() == 30
    assert statuses.count(429) <= 10  # at most the requests already in flight
    assert out["llm_output_error"].str.contains("quota").sum() >= 1


def test_the_same_400_on_the_first_rows_stops_the_run_without_retrying():
    """A 400 is not retried; the same 400 on the first three rows (nothing answered yet) is a
    run-wide fault, raised with every row's reason (a lone 400 among good answers stays its
    row's error: test_trust_engine.py)."""
    with Simulator(ttft_ms=5) as sim:
        # a temperature out of the API's range: the simulator answers 400, like OpenAI
        with pytest.raises(RepeatedFailure) as caught:
            rows(5).llm.apply("{t}", model=MODEL, base_url=sim.base_url, api_key=KEY,
                              progress=False, temperature=2.5)
    assert [e["status"] for e in sim.log] == [400] * 3  # each tried once, none retried
    out = caught.value.result
    assert out["llm_output"].isna().all()
    assert out["llm_output_error"].str.startswith("HTTP 400").sum() == 3
    assert out["llm_output_error"].str.startswith("not sent").sum() == 2


def test_retries_exhausted_gives_explicit_error():
    with Simulator(ttft_ms=5, fault_5xx=1.0) as sim:
        out = rows(3).llm.apply("{t}", model=MODEL, base_url=sim.base_url, api_key=KEY,
                                progress=False, max_retries=2)
        assert len(sim.log) == 9
    assert out["llm_output_error"].str.contains("HTTP 5").all()


def test_ctrl_c_ends_promptly_and_keeps_finished_rows(tmp_path):
    """A real SIGINT to a script mid-run, once the simulator (here, outside the script) has
    answered 40 rows: the script stops sending at once and keeps every row it was answered."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys, pandas as pd, llmbatch_pd
        df = pd.DataFrame({{"t": [f"row {{i}}" for i in range(2000)]}})
        try:
            df.llm.apply("{{t}}", model="{MODEL}", base_url=sys.argv[1], api_key="k",
                         progress=False, concurrency=20)
        except llmbatch_pd.RunInterrupted as exc:
            part = exc.result
            done = int(part["llm_output"].notna().sum())
            assert done == int(llmbatch_pd.last_result()["llm_output"].notna().sum())
            errors = part["llm_output_error"]
            assert errors.str.contains("interrupted").sum() == 2000 - done
            # only what was on its way (at most the 20 in flight) failed; the rest were not sent
            assert errors.str.startswith("interrupted:").sum() <= 20
            assert errors.str.startswith("not sent: the run was interrupted").sum() >= 2000 - done - 20
            print("kept", done, flush=True)
            sys.exit(0)
        print("not interrupted", flush=True)
    """))
    with Simulator(ttft_ms=200) as sim:
        proc = subprocess.Popen([sys.executable, str(script), sim.base_url], stdout=subprocess.PIPE,
                                text=True, cwd=os.getcwd())
        try:
            wait_until(lambda: len(sim.log) >= 40 or proc.poll() is not None, 120, "40 answers")
            with paused(sim):  # no answer frees a worker now: at most the 20 in flight remain
                answered_before = len(sim.log)
                proc.send_signal(signal.SIGINT)
                out, _ = proc.communicate(timeout=60)  # it stops while the provider is silent
        finally:
            proc.kill()
        wait_until(lambda: sim.stats()["in_flight"] == 0, 30, "the cut-off requests to end")
        log = sim.log
    assert proc.returncode == 0, out
    kept = int(out.split("kept")[1])
    answered = sum(e["status"] == 200 for e in log)
    # promptly, as a count: after the signal only the requests already in flight (20) ended
    assert len(log) - answered_before <= 20, (answered_before, len(log))
    assert answered_before - 20 <= kept < 2000
    assert kept >= answered - 20  # every answer the script read is kept; at most those in flight lost


@pytest.mark.parametrize("fault", ["fault_malformed", "fault_reset", "fault_529"])
def test_each_retryable_fault_recovers(fault):
    with Simulator(ttft_ms=5, seed=1, **{fault: 0.3}) as sim:
        out = rows(60).llm.apply("{t}", model=MODEL, base_url=sim.base_url, api_key=KEY,
                                 progress=False, max_retries=8)
        faults = sim.stats()["by_fault"]
    assert out["llm_output"].notna().all()
    assert sum(faults.values()) > 5


def test_10000_rows_survive_the_durability_fault_mix():
    """The durability issue's mix: 5 % 429, 2 % 500/502/503/529, 0.5 % hangs, 0.5 % resets,
    0.2 % malformed bodies. At least 99.9 % succeed; every row ends answered or explained."""
    with Simulator(ttft_ms=20, api_key=KEY, fault_429=0.05, fault_retry_after_s=0.2, fault_5xx=0.015,
                   fault_529=0.005, fault_hang=0.005, hang_seconds=30, fault_reset=0.005,
                   fault_malformed=0.002, seed=11, log=False) as sim:
        out = rows(10_000).llm.apply(
            "Summarise: {t}", model=MODEL, base_url=sim.base_url, api_key=KEY, progress=False,
            concurrency=200, timeout=1.0,
        )
        faults = sim.stats()["by_fault"]
    answered = out["llm_output"].notna()
    assert (answered ^ out["llm_output_error"].notna()).all()
    assert answered.mean() >= 0.999, out["llm_output_error"].value_counts().head()
    assert all(faults.get(k, 0) > 10 for k in ("429", "5xx", "529", "hang", "reset", "malformed")), faults
    print(f"\n10k fault mix: {answered.mean():.4%} answered, faults injected {faults}, "
          f"{out.llm.report.stats.elapsed:.1f}s")
