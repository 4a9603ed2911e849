"""The cache's semantics and durability, and answers cut at max_tokens (issue 10).

Real HTTP against the simulator, real SQLite files read back with plain ``sqlite3``, and a
second real process where another process holding the cache file's lock is the point.
References are the simulator's own records (its request log, its captured request bodies, the
batch results it produced), never the library's arithmetic.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pydantic
import pytest

import llmbatch_pd
from llmbatch_pd.core import errors
from llmbatch_pd.sim import Simulator

KEY = "sk-test-0123456789abcdefSECRET"
MODEL = "openai/gpt-4.1-mini"
CLAUDE = "anthropic/claude-haiku-4-5"
PRICES = {CLAUDE: (1.0, 5.0)}
HERE = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # this checkout
CUT = 35  # max_tokens that cuts about half of the simulator's 20-60-token answers


@pytest.fixture
def sim():
    with Simulator(ttft_ms=2, api_key=KEY, batch_seconds=0.2) as s:
        yield s


def openai_kw(sim: Simulator, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "base_url": sim.base_url, "api_key": KEY, "progress": False, **extra}


def claude_kw(sim: Simulator, **extra: Any) -> dict[str, Any]:
    return {"model": CLAUDE, "base_url": sim.anthropic_url, "api_key": KEY, "progress": False,
            "prices": PRICES, **extra}


def notes(n: int, word: str = "note") -> pd.DataFrame:
    return pd.DataFrame({"text": [f"{word} number {i}" for i in range(n)]})


def count_rows(path: Path, table: str = "answers", where: str = "") -> int:
    """Read by a fresh connection, not through the library."""
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT COUNT(*) FROM {table} {where}").fetchone()[0]
    finally:
        db.close()


def sim_cut(sim: Simulator) -> int:
    """How many real-time answers the simulator cut at max_tokens (its own log)."""
    return sum(e.get("finish_reason") == "length" for e in sim.log if e["status"] == 200)


def batch_cut(sim: Simulator) -> int:
    """How many batch answers the simulator cut (the result bodies it produced)."""
    jobs = sim._on_loop(lambda: list(sim._require_server().batches.jobs.values()))
    bodies = [r["body"] for job in jobs for r in job.results if r.get("type") == "succeeded"]
    return sum((b.get("choices") or [{}])[0].get("finish_reason") == "length"
               or b.get("stop_reason") == "max_tokens" for b in bodies)


def flagged(out: pd.DataFrame, limit: int) -> pd.Series:
    return out["llm_output_error"] == f"truncated at max_tokens={limit}"


# -- 1. truncated answers -------------------------------------------------------------------


@pytest.mark.parametrize("kw", [openai_kw, claude_kw], ids=["openai", "anthropic"])
def test_a_truncated_answer_is_flagged_kept_counted_and_never_served_as_complete(sim, kw):
    df = notes(40)
    with pytest.warns(UserWarning, match="cut at the output limit"):
        out = df.llm.apply("Write about {text}", max_tokens=CUT, **kw(sim))
    cut = sim_cut(sim)
    assert 0 < cut < 40  # the simulator cut some answers, not all
    is_cut = flagged(out, CUT)
    assert int(is_cut.sum()) == cut
    assert out.loc[is_cut, "llm_output"].notna().all()  # the text is kept
    assert out.loc[~is_cut, "llm_output_error"].isna().all()
    report = out.llm.report
    assert report.truncated == cut and report.answered_rows == 40
    assert f"Truncated {cut}" in " ".join(report.summary().split())

    # the same call again: the same cut answers, flagged again, and nothing sent
    sim.reset()
    with pytest.warns(UserWarning, match="cut at the output limit"):
        again = df.llm.apply("Write about {text}", max_tokens=CUT, **kw(sim))
    assert sim.log == []
    assert flagged(again, CUT).tolist() == is_cut.tolist()

    # a higher limit: only the cut ones are asked again; the complete ones come from the cache
    sim.reset()
    longer = df.llm.apply("Write about {text}", max_tokens=400, **kw(sim))
    assert len(sim.log) == cut and sim_cut(sim) == 0
    assert longer["llm_output_error"].isna().all()
    assert (longer.loc[is_cut, "llm_output"].str.len() > out.loc[is_cut, "llm_output"].str.len()).all()


def test_anthropics_default_limit_is_named_when_it_cuts(sim):
    """No max_tokens=: Anthropic's API needs one anyway; an answer cut at the one sent says so."""
    sim.configure(answer_tokens=3000, capture_requests=10)
    with pytest.warns(UserWarning, match="cut at the output limit"):
        out = notes(2).llm.apply("Write about {text}", **claude_kw(sim))
    (sent,) = {c["body"]["max_tokens"] for c in sim.captured}
    assert sim_cut(sim) == 2
    assert (out["llm_output_error"] == f"truncated at max_tokens={sent}").all()
    assert out["llm_output"].notna().all()


@pytest.mark.parametrize("kw", [openai_kw, claude_kw], ids=["openai", "anthropic"])
def test_batch_results_cut_at_max_tokens_are_flagged(sim, kw):
    df = notes(30, "memo")
    with pytest.warns(UserWarning, match="cut at the output limit"):
        out = df.llm.apply("Write about {text}", max_tokens=CUT, mode="batch",
                           poll_interval=0.02, **kw(sim))
    cut = batch_cut(sim)
    assert 0 < cut < 30
    assert int(flagged(out, CUT).sum()) == cut == out.llm.report.truncated
    assert out["llm_output"].notna().all()


def test_a_truncated_structured_answer_is_invalid(sim):
    class Note(pydantic.BaseModel):
        summary: str
        words: list[str]

    # 3 rows: a 4th after three cut answers would stop the run (test_review_engine.py)
    out = notes(3).llm.apply("Summarise {text}", schema=Note, max_tokens=5, schema_retries=0,
                             **openai_kw(sim))
    assert sim_cut(sim) == 3
    assert out["summary"].isna().all() and out["llm_output_error"].notna().all()


# -- 2. another process holds the cache file's write lock ----------------------------------

HOLDER = textwrap.dedent("""
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    db.execute("INSERT INTO history VALUES ('holder', 0, 0, 0, 0, 0, NULL, NULL, 0)")
    print("locked", flush=True)
    sys.stdin.readline()  # until told
    db.execute("ROLLBACK")
    print("released", flush=True)
""")


def release(holder: subprocess.Popen) -> None:
    """Tell the HOLDER process to let go of the lock, and see that it did."""
    holder.stdin.write("go\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "released"
    assert holder.wait(timeout=30) == 0


def test_a_run_goes_on_while_another_process_holds_the_cache_lock(sim, tmp_path):
    path = tmp_path / "locked.sqlite"
    from llmbatch_pd.store.db import Store

    Store(path).close()  # the file exists, migrated, before the other process locks it
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        df = notes(300)
        with pytest.warns(UserWarning, match="locked by another process"):
            out = df.llm.apply("Say {text}", cache=path, **openai_kw(sim))
        assert out["llm_output"].notna().all()
        assert len(sim.log) == 300  # every row asked and answered while the lock was held
        assert count_rows(path) == 0  # nothing could be written yet
        # a second run meanwhile finds the answers still waiting to be written
        sim.reset()
        again = df.llm.apply("Say {text}", cache=path, **openai_kw(sim))
        assert sim.log == [] and again["llm_output"].tolist() == out["llm_output"].tolist()
        release(holder)
    finally:
        holder.kill()
    assert llmbatch_pd.cache.flush(timeout=60)
    assert count_rows(path) == 300
    assert count_rows(path, "history", "WHERE key = 'holder'") == 0


def test_answers_a_lock_holds_back_are_written_before_the_process_exits(tmp_path):
    """A script that ends while the file is locked still writes its answers once it frees."""
    path = tmp_path / "exit.sqlite"
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys, warnings, pandas as pd, llmbatch_pd
        warnings.simplefilter("ignore")
        df = pd.DataFrame({{"t": [f"row {{i}}" for i in range(50)]}})
        out = df.llm.apply("Echo {{t}}", model="{MODEL}", base_url=sys.argv[1], api_key="{KEY}",
                           progress=False, cache={str(path)!r})
        print(int(out["llm_output"].notna().sum()), flush=True)
        sys.stdin.readline()  # the test releases the lock, then lets the script end
    """))
    from llmbatch_pd.store.db import Store

    Store(path).close()
    with Simulator(ttft_ms=2, api_key=KEY) as sim:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        job = subprocess.Popen([sys.executable, str(script), sim.base_url], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=HERE)
        try:
            assert holder.stdout.readline().strip() == "locked"
            assert job.stdout.readline().strip() == "50"
            job.stdin.write("\n")  # the script ends while the lock is still held...
            job.stdin.flush()
            job.stdin.close()
            holder.stdin.write("go\n")  # ...and the lock frees while it waits at exit
            holder.stdin.flush()
            assert holder.wait(timeout=30) == 0
            assert job.wait(timeout=90) == 0
        finally:
            holder.kill()
            job.kill()
    assert count_rows(path) == 50


# -- 3. budget= does not change the cache key ----------------------------------------------


def test_the_same_apply_with_a_budget_is_answered_from_the_cache(sim):
    df = notes(30)
    first = df.llm.apply("Say {text}", **openai_kw(sim))
    assert len(sim.log) == 30
    sim.reset()
    again = df.llm.apply("Say {text}", budget=1.0, **openai_kw(sim))
    assert sim.log == []
    assert again["llm_output"].tolist() == first["llm_output"].tolist()
    assert again.llm.report.cached == 30 and again.llm.report.cost == 0


def test_a_user_max_tokens_below_a_cached_answer_asks_again(sim):
    df = notes(10)
    df.llm.apply("Say {text}", **openai_kw(sim))
    lengths = [e["completion_tokens"] for e in sim.log]
    limit = sorted(lengths)[5]
    longer = sum(n > limit for n in lengths)
    sim.reset()
    with pytest.warns(UserWarning, match="cut at the output limit"):
        df.llm.apply("Say {text}", max_tokens=limit, **openai_kw(sim))
    assert len(sim.log) == longer  # answers longer than the new limit are asked again (and cut)
    assert sim_cut(sim) == longer


# -- 4. params= ----------------------------------------------------------------------------


def test_params_are_sent_as_given_and_are_part_of_the_key(sim):
    sim.configure(capture_requests=100)
    params = {"top_p": 0.5, "seed": 7, "stop": ["\n\n"], "reasoning_effort": "low"}
    df = notes(5)
    df.llm.apply("Say {text}", params=params, **openai_kw(sim))
    bodies = [c["body"] for c in sim.captured]
    assert len(bodies) == 5
    assert all({k: b.get(k) for k in params} == params for b in bodies)
    sim.reset()
    df.llm.apply("Say {text}", params=params, **openai_kw(sim))
    assert sim.log == []  # the same params: from the cache
    df.llm.apply("Say {text}", params={**params, "seed": 8}, **openai_kw(sim))
    assert len(sim.log) == 5  # another seed: another answer


@pytest.mark.parametrize("name, hint", [("max_tokens", "max_tokens="), ("model", "model="),
                                        ("messages", "template"), ("temperature", "temperature="),
                                        ("response_format", "schema="), ("stream", "whole"),
                                        ("max_completion_tokens", "max_tokens=")])
def test_params_the_library_sets_itself_are_refused_before_sending(sim, name, hint):
    with pytest.raises(errors.InputError, match=hint):
        notes(3).llm.apply("Say {text}", params={name: 1}, **openai_kw(sim))
    assert sim.log == []


def test_params_must_be_json(sim):
    with pytest.raises(errors.InputError, match="JSON"):
        notes(3).llm.apply("Say {text}", params={"seed": object()}, **openai_kw(sim))
    with pytest.raises(errors.InputError, match="dict"):
        notes(3).llm.apply("Say {text}", params=[("seed", 1)], **openai_kw(sim))
    assert sim.log == []


# -- 5. cache="refresh", answers a stricter schema refuses ---------------------------------


def test_cache_refresh_asks_again_and_overwrites(sim, private_cache):
    df = notes(12)
    df.llm.apply("Say {text}", temperature=0.9, **openai_kw(sim))
    stored = sqlite3.connect(private_cache).execute("SELECT MAX(created) FROM answers").fetchone()[0]
    sim.reset()
    df.llm.apply("Say {text}", temperature=0.9, cache="refresh", **openai_kw(sim))
    assert len(sim.log) == 12
    db = sqlite3.connect(private_cache)
    assert db.execute("SELECT COUNT(*), MIN(created) FROM answers").fetchone()[0] == 12
    assert db.execute("SELECT MIN(created) FROM answers").fetchone()[0] > stored
    sim.reset()
    df.llm.apply("Say {text}", temperature=0.9, **openai_kw(sim))
    assert sim.log == []


def test_a_cached_answer_a_stricter_schema_refuses_is_asked_again(sim):
    class Loose(pydantic.BaseModel):
        label: str

    class Strict(pydantic.BaseModel):  # the same JSON schema (same key), a stricter check
        label: str

        @pydantic.field_validator("label")
        @classmethod
        def short(cls, value: str) -> str:
            if len(value) > 9:
                raise ValueError("too long")
            return value

    Strict.__name__ = "Loose"
    df = notes(6)
    first = df.llm.apply("Label {text}", schema=Loose, **openai_kw(sim))
    stale = first["label"].str.len() > 9
    assert 0 < stale.sum() < 6
    sim.reset()
    again = df.llm.apply("Label {text}", schema=Strict, schema_retries=0, **openai_kw(sim))
    assert len(sim.log) == int(stale.sum())  # exactly the refused ones were asked again
    assert again.llm.report.cached == 6 - int(stale.sum())


# -- 6. cache management -------------------------------------------------------------------


def test_cache_info_and_clear_against_the_file(sim, tmp_path):
    path = tmp_path / "managed.sqlite"
    notes(7).llm.apply("Say {text}", cache=path, **openai_kw(sim))
    notes(5, "memo").llm.apply("Say {text}", cache=path, **claude_kw(sim))
    pd.Series([f"text {i}" for i in range(4)]).llm.embed(
        model="openai/text-embedding-3-small", base_url=sim.base_url, api_key=KEY,
        progress=False, cache=path)
    llmbatch_pd.cache.flush(timeout=30)

    info = llmbatch_pd.cache.info(path)
    db = sqlite3.connect(path)
    answers = dict(db.execute("SELECT model, COUNT(*) FROM answers GROUP BY model").fetchall())
    vectors = dict(db.execute("SELECT model, COUNT(*) FROM vectors GROUP BY model").fetchall())
    assert answers == {"gpt-4.1-mini": 7, "claude-haiku-4-5": 5}
    table = info.by_model.set_index("model")
    assert table["answers"].to_dict() == {**dict.fromkeys(vectors, 0), **answers}
    assert table["vectors"].to_dict() == {**dict.fromkeys(answers, 0), **vectors}
    assert info.answers == 12 and info.vectors == sum(vectors.values()) == 4
    assert info.size_bytes >= path.stat().st_size > 0
    assert info.oldest <= info.newest
    assert "12 answers" in repr(info)

    assert llmbatch_pd.cache.clear(model="openai/gpt-4.1-mini", path=path) == 7
    assert count_rows(path) == 5
    assert llmbatch_pd.cache.clear(older_than_days=1, path=path) == 0  # all are new
    db.execute("UPDATE answers SET created = created - 3 * 86400 WHERE rowid IN "
               "(SELECT rowid FROM answers LIMIT 2)")
    db.commit()
    assert llmbatch_pd.cache.clear(older_than_days=2, path=path) == 2
    assert count_rows(path) == 3
    assert llmbatch_pd.cache.clear(path=path) == 3 + 4
    assert count_rows(path) == 0 and count_rows(path, "vectors") == 0
    assert llmbatch_pd.cache.info(path).answers == 0


def test_cache_info_of_a_missing_file_creates_nothing(tmp_path):
    path = tmp_path / "none.sqlite"
    info = llmbatch_pd.cache.info(path)
    assert info.answers == 0 and info.size_bytes == 0 and not path.exists()
    assert llmbatch_pd.cache.clear(path=path) == 0


def test_clear_refuses_bad_arguments(tmp_path):
    with pytest.raises(errors.InputError, match="older_than_days"):
        llmbatch_pd.cache.clear(older_than_days="old", path=tmp_path / "x.sqlite")


def test_open_batch_records_survive_a_clear(tmp_path):
    from llmbatch_pd.store.db import Store

    path = tmp_path / "batches.sqlite"
    store = Store(path)
    store.add_batch("batch_1", provider="openai", endpoint="e", model="m", keys=["k"], status="in_progress")
    store.close()
    llmbatch_pd.cache.clear(path=path)
    assert count_rows(path, "batches") == 1
    assert llmbatch_pd.cache.info(path).open_batches == 1



def test_a_write_the_file_refuses_is_a_warning_and_the_answers_stay_in_the_result(sim, tmp_path):
    path = tmp_path / "refusing.sqlite"
    from llmbatch_pd.store.db import Store

    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("CREATE TRIGGER refuse BEFORE INSERT ON answers BEGIN "
               "SELECT RAISE(ABORT, 'this file takes no answers'); END")
    db.commit()
    with pytest.warns(UserWarning, match="20 answers are not cached .*takes no answers"):
        out = notes(20).llm.apply("Say {text}", cache=path, **openai_kw(sim))
    assert out["llm_output"].notna().all() and count_rows(path) == 0
    db.execute("DROP TRIGGER refuse")
    db.commit()
    notes(20).llm.apply("Say {text}", cache=path, **openai_kw(sim))  # the writer still works
    assert llmbatch_pd.cache.flush(timeout=30) and count_rows(path) == 20


def _write_in_child(path: str) -> None:
    from llmbatch_pd.core.types import Reply, Usage
    from llmbatch_pd.store.db import Store

    store = Store(path)
    store.put_later([("child", "m", Reply("from the child", Usage(1, 1), "stop"))])
    sys.exit(0 if store.flush(timeout=30) else 1)


def test_a_forked_child_writes_with_its_own_writer(tmp_path):
    """The parent's writer thread does not exist in a forked child: the child starts its own.
    Forked while that thread is inside SQLite (connecting, writing 2,000 answers), a child
    used to inherit SQLite's mutexes held and hang in its first connect (about half the time:
    CI caught it); each of five forks here lands in the middle of such a write."""
    import multiprocessing

    from llmbatch_pd.core.types import Reply, Usage
    from llmbatch_pd.store.db import Store

    path = tmp_path / "fork.sqlite"
    parent = Store(path)
    for round_ in range(5):
        parent.put_later([(f"parent {round_} {i}", "m", Reply("from the parent " * 60, Usage(1, 1), "stop"))
                          for i in range(2000)])
        child = multiprocessing.get_context("fork").Process(target=_write_in_child, args=(str(path),))
        child.start()
        child.join(timeout=60)
        if child.exitcode is None:
            child.kill()
        assert child.exitcode == 0, f"fork {round_}: the child hung or failed ({child.exitcode})"
        assert parent.flush(timeout=30)
    assert count_rows(path) == 5 * 2000 + 1
