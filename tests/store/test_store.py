"""The cache: a real SQLite file, real processes, real HTTP against the simulator."""

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap

import pandas as pd

from llmbatch_pd.core.types import Reply, Usage
from llmbatch_pd.sim import Simulator
from llmbatch_pd.store.db import Store
from llmbatch_pd.store.migrations import MIGRATIONS

from ..conftest import KEY, wait_until

HERE = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
"""A script run from a temporary directory imports this checkout, not an installed copy."""


def rows(n):
    return pd.DataFrame({"t": [f"cached row {i}" for i in range(n)]})


def test_rerun_sends_nothing_and_edit_resends_one_row(llm, sim, private_cache):
    df = rows(40)
    first = df.llm.apply("Echo {t}", **llm)
    assert len(sim.log) == 40
    again = df.llm.apply("Echo {t}", **llm)
    assert len(sim.log) == 40  # nothing sent
    pd.testing.assert_series_equal(first["llm_output"], again["llm_output"])
    assert again.llm.report.cached == 40
    edited = df.copy()
    edited.loc[7, "t"] = "a different row"
    third = edited.llm.apply("Echo {t}", **llm)
    assert len(sim.log) == 41
    assert third.llm.report.cached == 39
    # a parameter that changes the answer is part of the key
    df.llm.apply("Echo {t}", temperature=0.5, **llm)
    assert len(sim.log) == 81


def test_errors_are_not_cached(sim, private_cache):
    from ..conftest import MODEL

    df = rows(30)
    opts = dict(model=MODEL, base_url=sim.base_url, api_key=KEY, progress=False, max_retries=0)
    sim.configure(fault_5xx=0.3, seed=5)
    first = df.llm.apply("Echo {t}", **opts)
    failed = int(first["llm_output_error"].notna().sum())
    assert 0 < failed < 30
    sim.configure(fault_5xx=0.0)
    sent_before = len(sim.log)
    second = df.llm.apply("Echo {t}", **opts)
    assert len(sim.log) - sent_before == failed  # only the failed rows again
    assert second["llm_output"].notna().all()


def test_cache_false_and_explicit_path(llm, sim, tmp_path):
    df = rows(5)
    df.llm.apply("Echo {t}", cache=False, **llm)
    df.llm.apply("Echo {t}", cache=False, **llm)
    assert len(sim.log) == 10
    path = tmp_path / "elsewhere" / "my.sqlite"
    df.llm.apply("Echo {t}", cache=str(path), **llm)
    df.llm.apply("Echo {t}", cache=path, **llm)
    assert len(sim.log) == 15
    assert len(Store(path)) == 5


def test_cache_file_is_private_and_holds_no_key(llm, private_cache):
    rows(5).llm.apply("Echo {t}", **llm)
    mode = stat.S_IMODE(os.stat(private_cache).st_mode)
    assert mode == 0o600
    for suffix in ("", "-wal", "-shm"):
        path = f"{private_cache}{suffix}"
        if os.path.exists(path):
            assert KEY.encode() not in open(path, "rb").read()


def test_migrations_are_recorded_once(tmp_path):
    path = tmp_path / "c.sqlite"
    Store(path).close()
    Store(path).close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM migrations").fetchall() == [(i,) for i in range(1, len(MIGRATIONS) + 1)]


def test_two_processes_share_one_cache_file(tmp_path):
    """Two writers at once (two notebooks): no corruption, no lost entries."""
    path = tmp_path / "shared.sqlite"
    code = textwrap.dedent(f"""
        import sys
        from llmbatch_pd.store.db import Store
        from llmbatch_pd.core.types import Reply, Usage
        s = Store({str(path)!r})
        who = sys.argv[1]
        for i in range(1500):
            s.put(f"{{who}}-{{i}}", "m", Reply(f"answer {{i}}", Usage(10, 2)))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, w]) for w in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=120) == 0
    store = Store(path)
    assert len(store) == 3000
    assert store.get("b-1499").text == "answer 1499"
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_sigkill_midway_loses_only_requests_in_flight(tmp_path):
    cache = tmp_path / "kill.sqlite"
    n, concurrency = 600, 10
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys, pandas as pd, llmbatch_pd
        df = pd.DataFrame({{"t": [f"row {{i}}" for i in range({n})]}})
        out = df.llm.apply("Echo {{t}}", model="openai/gpt-4.1-mini", base_url=sys.argv[1],
                           api_key="{KEY}", progress=False, concurrency={concurrency},
                           cache={str(cache)!r})
        print(int(out["llm_output"].notna().sum()), out.llm.report.cached, flush=True)
    """))
    with Simulator(ttft_ms=40, api_key=KEY) as sim:
        proc = subprocess.Popen([sys.executable, str(script), sim.base_url], env=HERE)
        wait_until(lambda: len(sim.log) >= n // 2 or proc.poll() is not None, 60,
                   f"{n // 2} answers before the kill")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        first_run = {e["prompt_sha"] for e in sim.log if e["status"] == 200}
        assert 0 < len(first_run) < n
        cached = len(Store(cache))
        sim.reset()
        done = subprocess.run([sys.executable, str(script), sim.base_url], capture_output=True,
                              text=True, timeout=120, check=True, env=HERE)
        answered, from_cache = map(int, done.stdout.split())
        second_run = {e["prompt_sha"] for e in sim.log}
    assert answered == n
    assert from_cache == cached
    assert len(second_run) == n - cached
    # answered in the first run yet asked again: at most what was in flight at the kill
    assert len(first_run & second_run) <= concurrency


def test_store_round_trip(tmp_path):
    s = Store(tmp_path / "x.sqlite")
    s.put("k", "m", Reply("hi", Usage(5, 1, 2, 0), "stop", "m"))
    got = s.get("k")
    assert got.text == "hi" and got.usage == Usage(5, 1, 2, 0) and got.finish_reason == "stop"
    assert s.get("missing") is None
    assert "x.sqlite" in repr(s)


def test_get_many_reads_a_chunk_in_one_go(tmp_path):
    s = Store(tmp_path / "x.sqlite")
    s.put_many([(f"k{i}", "m", Reply(f"a{i}", Usage(i, 1), "stop", "m")) for i in range(1200)])
    wanted = [f"k{i}" for i in range(0, 2400, 2)]  # half held, more than one query's worth
    found = s.get_many(wanted)
    assert sorted(found) == sorted(f"k{i}" for i in range(0, 1200, 2))
    assert found["k600"].text == "a600" and found["k600"].usage == Usage(600, 1)
    assert s.get_many([]) == {}


def test_a_partly_cached_run_sends_only_the_new_rows(llm, sim):
    df = pd.DataFrame({"t": [f"row {i}" for i in range(700)]})  # several lookup chunks
    df.iloc[::3].llm.apply("Echo {t}", **llm)
    sent = len(sim.log)
    out = df.llm.apply("Echo {t}", **llm)
    assert len(sim.log) - sent == 700 - len(df.iloc[::3]) and out.llm.report.cached == len(df.iloc[::3])
    assert out["llm_output_error"].isna().all()


def test_a_file_from_before_migration_5_reads_and_older_versions_still_write_it(tmp_path):
    """Migration 5 records the limit a cut answer was asked with in a table of its own: older
    rows read with none, and a notebook on an older version (which writes the answers table
    positionally) goes on writing the migrated file."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE migrations (version INTEGER PRIMARY KEY, applied REAL)")
    for version, migration in enumerate(MIGRATIONS[:4], start=1):
        migration(db)
        db.execute("INSERT INTO migrations VALUES (?, 0)", (version,))
    db.execute("INSERT INTO answers VALUES ('old', 'm', 'cut sho', 'length', 5, 3, 0, 0, 0)")
    db.close()
    store = Store(path)
    got = store.get("old")
    assert got.text == "cut sho" and got.truncated and got.limit is None
    older = sqlite3.connect(path)  # what version 0.1.0 runs for every answer
    older.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  ("older", "m", "hi", "stop", 5, 1, 0, 0, 0.0))
    older.commit()
    assert store.get("older").text == "hi"
    store.put("new", "m", Reply("cut", Usage(5, 3), "length", "m", limit=3))
    assert store.get("new").limit == 3


def test_answers_handed_to_the_writer_are_readable_at_once_and_then_on_disk(tmp_path):
    path = tmp_path / "w.sqlite"
    s = Store(path)
    s.put_later([(f"k{i}", "m", Reply(f"a{i}", Usage(3, 2), "length", "m", limit=2)) for i in range(50)])
    assert s.get("k7").text == "a7"  # from memory or the file, whichever holds it now
    assert s.flush(timeout=30)
    fresh = sqlite3.connect(path)
    assert fresh.execute("SELECT COUNT(*), MIN(max_tokens), MAX(max_tokens) FROM answers "
                         "JOIN cut USING (key) WHERE finish_reason = 'length'").fetchone() == (50, 2, 2)
