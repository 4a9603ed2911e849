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
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import llmbatch_pd
from llmbatch_pd import errors
from llmbatch_pd.loop_thread import engine_loop
from llmbatch_pd.sim import Simulator
from llmbatch_pd.store import Store
from llmbatch_pd.types import Reply, Usage

from .conftest import KEY, wait_until

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
