"""Review fixes for batch mode and the cache writer: ``model=[...]`` stops every model on the
first error and reserves all their worst cases before any job is sent; a batch job is marked
collected only with (or after) its answers on disk, and the batch side never writes on the
event loop; one unwritable answer no longer takes the rest of its transaction with it.
Real parts throughout: the simulator over loopback, real SQLite files, a second process
holding the cache file's lock."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import llmbatch_pd
from llmbatch_pd.core import errors
from llmbatch_pd.core.types import Reply, Usage
from llmbatch_pd.sim import Simulator
from llmbatch_pd.store.db import Store
from llmbatch_pd.transport.loop_thread import engine_loop

from ..conftest import KEY, wait_until
from ..store.test_trust_cache import HOLDER, release  # the process that holds the cache lock

MINI, NANO = "openai/gpt-4.1-mini", "openai/gpt-4.1-nano"


@pytest.fixture
def sim():
    with Simulator(ttft_ms=2, api_key=KEY, batch_seconds=0.3) as s:
        yield s


def notes(n: int) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"note number {i}" for i in range(n)]})


def batch_kw(sim: Simulator, **extra) -> dict:
    return {"base_url": sim.base_url, "api_key": KEY, "progress": False, "mode": "batch",
            "poll_interval": 0.05, **extra}


def created(sim: Simulator) -> list[dict]:
    """Batch jobs the simulator was asked to create (its request log), accepted or not."""
    return [e for e in sim.log if e.get("batch") and e["status"] == 200]


def loop_idle() -> bool:
    """The engine's loop thread runs no task but this probe: nothing more can be sent."""
    async def others() -> int:
        return len(asyncio.all_tasks() - {asyncio.current_task()})
    return asyncio.run_coroutine_threadsafe(others(), engine_loop()).result(30) == 0


def count(path: Path, sql: str) -> int:
    db = sqlite3.connect(path)  # a connection of the test's own, not the library's
    try:
        return db.execute(sql).fetchone()[0]
    finally:
        db.close()


# -- 1. model=[...]: the first error stops every model ------------------------------------

def test_one_models_budget_error_leaves_no_other_model_running(sim, tmp_path):
    """Worst cases by hand, 20 rows of 1,000 output tokens at batch prices (half of $1.60 and
    $0.40 per M output): gpt-4.1-mini $0.016 alone is over budget=0.012, gpt-4.1-nano's $0.004
    fits. The call raises, and no job of either model is created, then or later."""
    with pytest.raises(errors.BudgetError):
        notes(20).llm.apply("Write about {text}", model=[MINI, NANO], budget=0.012,
                            max_tokens=1000, cache=tmp_path / "c.sqlite", **batch_kw(sim))
    wait_until(loop_idle, 60, "every task of the call to end")
    assert created(sim) == [] and sim.batches == []


def test_summed_worst_case_of_all_models_is_checked_before_any_job(sim, tmp_path):
    """Each model alone fits budget=0.018 (worst cases $0.016 and $0.004 by hand, as above),
    together ($0.020) they do not: nothing is sent, rather than one model's job paid for."""
    with pytest.raises(errors.BudgetError):
        notes(20).llm.apply("Write about {text}", model=[MINI, NANO], budget=0.018,
                            max_tokens=1000, cache=tmp_path / "c.sqlite", **batch_kw(sim))
    wait_until(loop_idle, 60, "every task of the call to end")
    assert created(sim) == [] and sim.batches == []


def test_models_that_fit_together_all_run(sim, tmp_path):
    out = notes(20).llm.apply("Write about {text}", model=[MINI, NANO], budget=0.05,
                              max_tokens=1000, cache=tmp_path / "c.sqlite", **batch_kw(sim))
    assert out[[f"llm_output_{m.split('/')[1]}" for m in (MINI, NANO)]].notna().all().all()
    assert sorted(j["model"] for j in sim.batches) == ["gpt-4.1-mini", "gpt-4.1-nano"]


def test_a_model_with_nothing_to_send_does_not_hold_the_others_back(sim, tmp_path):
    """gpt-4.1-mini's answers are all cached: it leaves the gate at once, nano still runs."""
    path, df = tmp_path / "c.sqlite", notes(10)
    df.llm.apply("Write about {text}", model=MINI, cache=path, **batch_kw(sim))
    sim.reset()
    job = df.llm.submit("Write about {text}", model=[MINI, NANO], budget=0.05, cache=path,
                        **batch_kw(sim))
    assert job.wait(60), "the run did not end: a model waits at the gate for one that left"
    out = job.result()
    assert out[["llm_output_gpt-4.1-mini", "llm_output_gpt-4.1-nano"]].notna().all().all()
    assert [e["model"] for e in created(sim)] == ["gpt-4.1-nano"]  # mini sent nothing


# -- 2. collected only with the answers on disk; no batch write on the loop -----------------

def watch_collected(path: Path, table: str = "answers") -> None:
    """A trigger in the cache file notes, inside the very transaction that marks a job
    collected, how many answers (or vectors) that transaction sees on disk."""
    Store(path).close()  # the file exists, migrated
    db = sqlite3.connect(path)
    db.executescript(f"""
        CREATE TABLE seen (answers INTEGER);
        CREATE TRIGGER note_collected AFTER UPDATE OF collected ON batches
        WHEN NEW.collected = 1 AND OLD.collected = 0
        BEGIN INSERT INTO seen SELECT COUNT(*) FROM {table}; END;
    """)
    db.close()


def test_a_job_is_marked_collected_only_with_its_answers_on_disk(sim, tmp_path):
    path = tmp_path / "c.sqlite"
    watch_collected(path)
    out = notes(30).llm.apply("Write about {text}", model=MINI, cache=path, **batch_kw(sim))
    assert out["llm_output"].notna().all()
    assert llmbatch_pd.cache.flush(timeout=60)
    seen = [r[0] for r in sqlite3.connect(path).execute("SELECT answers FROM seen")]
    assert seen == [30]  # marked once, and by then all 30 answers were in the file
    assert count(path, "SELECT COUNT(*) FROM batches WHERE collected = 1") == 1


def test_an_embeddings_job_is_marked_collected_only_with_its_vectors_on_disk(sim, tmp_path):
    path = tmp_path / "c.sqlite"
    watch_collected(path, "vectors")
    texts = pd.Series([f"text number {i}" for i in range(40)])
    out = texts.llm.embed(model="openai/text-embedding-3-small", dimensions=8, cache=path,
                          **batch_kw(sim))
    assert out.notna().all()
    assert llmbatch_pd.cache.flush(timeout=60)
    seen = [r[0] for r in sqlite3.connect(path).execute("SELECT answers FROM seen")]
    assert seen == [40]
    assert count(path, "SELECT COUNT(*) FROM batches WHERE collected = 1") == 1




def test_batch_run_writes_nothing_on_the_loop_while_another_process_holds_the_lock(sim, tmp_path):
    """The job's record and statuses wait for the lock on the writer thread (the run says the
    file is locked); once it frees, the job is on file, collected, with its answers."""
    path = tmp_path / "locked.sqlite"
    Store(path).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.warns(UserWarning) as said:
            out = notes(12).llm.apply("Write about {text}", model=MINI, cache=path, **batch_kw(sim))
        messages = [str(w.message) for w in said]
        assert out["llm_output"].notna().all()
        assert any("locked by another process" in m for m in messages), messages
        assert not any("could not record" in m or "could not be recorded" in m for m in messages), messages
        assert count(path, "SELECT COUNT(*) FROM batches") == 0  # nothing got past the lock yet
        release(holder)
    finally:
        holder.kill()
    assert llmbatch_pd.cache.flush(timeout=60)
    assert count(path, "SELECT COUNT(*) FROM batches WHERE collected = 1") == 1
    assert count(path, "SELECT COUNT(*) FROM answers") == 12


# -- 3. one bad row no longer loses its whole transaction ----------------------------------

def test_a_lone_surrogate_answer_is_kept_and_so_are_the_others(tmp_path):
    path = tmp_path / "c.sqlite"
    store = Store(path)
    bad = json.loads('"caf\\ud83d"')  # valid JSON, not valid UTF-8
    items = [(f"k{i}", "m", Reply(f"answer {i}", Usage(1, 1), "stop")) for i in range(100)]
    items.insert(50, ("kbad", "m", Reply(bad, Usage(1, 1), "stop")))
    store.put_later(items)
    assert store.flush(60)
    assert store.writer.lost == 0
    assert count(path, "SELECT COUNT(*) FROM answers") == 101
    assert Store(path).get("kbad").text == "caf\ufffd"  # the broken half-character replaced
    store.close()


def test_a_failing_write_gives_up_only_itself(tmp_path):
    """A write that fails for good (here a job on a table that is not there) is dropped alone:
    the 100 answers handed over with it reach the file."""
    path = tmp_path / "c.sqlite"
    store = Store(path)
    items = [(f"k{i}", "m", Reply(f"answer {i}", Usage(1, 1), "stop")) for i in range(100)]
    with store.writer._cond:  # hand both over before the thread can take either
        store.put_later(items)
        store.writer.call(lambda db: db.execute("INSERT INTO no_such_table VALUES (1)"))
    assert store.flush(60)
    assert count(path, "SELECT COUNT(*) FROM answers") == 100
    assert store.writer.lost == 0
    store.close()


def test_a_job_is_not_marked_collected_when_one_of_its_answers_failed_to_be_written(tmp_path):
    """One answer SQLite refuses (a text that is not text) is given up alone, and the job's
    collected flag queued behind it is held back: the next run reads the job again (free)
    instead of paying again for that row."""
    path = tmp_path / "c.sqlite"
    store = Store(path)
    store.add_batch("batch_1", provider="openai", endpoint="/v1/chat/completions", model="m",
                    keys=[f"k{i}" for i in range(11)], status="completed")
    items = [(f"k{i}", "m", Reply(f"answer {i}", Usage(1, 1), "stop")) for i in range(10)]
    items.insert(5, ("kbad", "m", Reply(["not", "text"], Usage(1, 1), "stop")))
    with store.writer._cond:  # both handed over before the thread can take either
        store.put_later(items)
        store.set_batch_status_later("batch_1", "completed", collected=True)
    assert store.flush(60)
    assert count(path, "SELECT COUNT(*) FROM answers") == 10
    assert store.writer.lost == 1 and "not supported" in store.writer.error
    assert count(path, "SELECT collected FROM batches WHERE id = 'batch_1'") == 0
    store.close()
