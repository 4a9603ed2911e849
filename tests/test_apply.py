"""df.llm.apply end to end, over real HTTP against the loopback simulator."""

import asyncio
import re

import numpy as np
import pandas as pd
import pytest

import llmbatch_pd
from llmbatch_pd import InputError, TemplateError

from .conftest import KEY


def frame(n=20):
    return pd.DataFrame(
        {"title": [f"Item {i}" for i in range(n)], "price": np.arange(n) * 1.5},
        index=pd.Index([f"r{i}" for i in range(n)], name="rid"),
    )


def test_apply_returns_new_frame_on_same_index(llm, sim):
    df = frame()
    before = df.copy()
    out = df.llm.apply("Describe {title} costing {price:.2f}", output="desc", **llm)
    pd.testing.assert_frame_equal(df, before)  # input never mutated
    assert list(out.index) == list(df.index) and out.index.name == "rid"
    assert list(out.columns) == ["title", "price", "desc", "desc_error"]
    assert out["desc"].notna().all() and out["desc_error"].isna().all()
    assert str(out["desc"].dtype) == "string"
    prompts = {e["prompt_sha"] for e in sim.log}
    assert len(prompts) == 20
    assert out.llm.report.answered_rows == 20


def test_answers_are_per_row_and_deterministic(llm):
    df = pd.DataFrame({"t": ["I love it, great", "broken and bad", "I love it, great"]})
    a = df.llm.apply("Classify as positive, negative or neutral: {t}", **llm)
    assert a.loc[0, "llm_output"] == a.loc[2, "llm_output"]
    assert set(a["llm_output"]) <= {"positive", "negative", "neutral"}


def test_duplicates_are_sent_once(llm, sim):
    df = pd.DataFrame({"t": ["same"] * 50 + ["other"]})
    out = df.llm.apply("Echo {t}", **llm)
    assert out["llm_output"].notna().all()
    assert len(sim.log) == 2
    assert out.llm.report.duplicates == 49


def test_missing_values_skip_without_request(llm, sim):
    df = pd.DataFrame({"t": ["a", None, np.nan, pd.NA, "b"]}, dtype=object)
    out = df.llm.apply("Echo {t}", **llm)
    assert out["llm_output"].isna().tolist() == [False, True, True, True, False]
    assert out.loc[1, "llm_output_error"].startswith("missing value in column 't'")
    assert len(sim.log) == 2
    out2 = df.llm.apply("Echo [{t}]", missing="empty", **llm)
    assert out2["llm_output"].notna().all()


def test_series_apply(llm):
    s = pd.Series(["xin chào", "hello"], name="greeting", index=[10, 20])
    out = s.llm.apply("Translate: {}", **llm)
    assert list(out.index) == [10, 20]
    # the answers alone, a Series (issue 15: df["x"] = s.llm.apply(...) in one line)
    assert isinstance(out, pd.Series) and out.name == "llm_output" and out.notna().all()
    out2 = s.llm.apply("Translate: {value}", **llm)
    assert out2.tolist() == out.tolist()


def test_aapply_inside_running_loop(llm):
    async def main():
        return await frame(5).llm.aapply("Describe {title}", **llm)

    out = asyncio.run(main())
    assert out["llm_output"].notna().all()


def test_apply_inside_running_loop_uses_private_thread(llm):
    """A sync apply() called from a coroutine (a Jupyter cell) must not need nest-asyncio."""

    async def cell():
        return frame(5).llm.apply("Describe {title}", **llm)

    out = asyncio.run(cell())
    assert out["llm_output"].notna().all()


def test_empty_frame_sends_nothing(llm, sim):
    out = frame(0).llm.apply("Describe {title}", **llm)
    assert len(out) == 0 and "llm_output" in out.columns
    assert sim.log == []


@pytest.mark.parametrize(
    "template,error",
    [("{nope}", TemplateError), ("{title.__class__}", TemplateError), ("{title[0]}", TemplateError),
     (42, TemplateError)],
)
def test_bad_templates_fail_before_any_request(llm, sim, template, error):
    with pytest.raises(error):
        frame().llm.apply(template, **llm)
    assert sim.log == []


@pytest.mark.parametrize(
    "options",
    [{"concurrency": 0}, {"max_retries": -1}, {"timeout": 0}, {"missing": "drop"},
     {"budget": -1}, {"output": ""}, {"max_tokens": 0}, {"temperature": "hot"}, {"model": "nosuchvendor/x", "base_url": None}],
)
def test_bad_options_fail_before_any_request(llm, sim, options):
    with pytest.raises(InputError):
        frame().llm.apply("{title}", **{**llm, **options})
    assert sim.log == []


def test_missing_key_for_remote_provider_is_an_input_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(InputError, match="OPENAI_API_KEY"):
        frame().llm.apply("{title}", model="openai/gpt-4.1-mini", progress=False)


def test_environment_variables_pick_endpoint_and_key(monkeypatch, sim):
    from tests.conftest import KEY

    monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = frame(3).llm.apply("Describe {title}", model="openai/gpt-4.1-mini", progress=False)
    assert out["llm_output"].notna().all()


def sent_prompts(sim) -> list[str]:
    """The user prompt of every request the simulator received, in the order received."""
    return [c["body"]["messages"][-1]["content"] for c in sim.captured]


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_max_tokens_temperature_and_system_reach_the_server(sim, api):
    sim.configure(capture_requests=20)
    model, base = (("openai/gpt-4.1-mini", sim.base_url) if api == "openai"
                   else ("anthropic/claude-haiku-4-5", sim.anthropic_url))
    opts = {"model": model, "base_url": base, "api_key": KEY, "progress": False}
    out = frame(2).llm.apply("Write a long essay about {title}", max_tokens=3, temperature=0.2,
                             system="You are terse.", **opts)
    assert out["llm_output"].notna().all()
    bodies = [c["body"] for c in sim.captured]
    assert len(bodies) == 2
    prompts = sorted(b["messages"][-1]["content"] for b in bodies)
    assert prompts == ["Write a long essay about Item 0", "Write a long essay about Item 1"]
    for body in bodies:
        assert body["model"] == model.split("/", 1)[1]
        assert body["temperature"] == 0.2
        if api == "openai":  # a base_url server: max_tokens (vLLM, Ollama and gateways read it)
            assert body["max_tokens"] == 3 and "max_completion_tokens" not in body
            assert body["messages"][0] == {"role": "system", "content": "You are terse."}
            assert len(body["messages"]) == 2
        else:  # Anthropic: a top-level system field, never a system message
            assert body["max_tokens"] == 3 and body["system"] == "You are terse."
            assert [m["role"] for m in body["messages"]] == ["user"]
    assert all(e["completion_tokens"] <= 3 for e in sim.log)
    # left unset, neither temperature nor a system prompt is sent: the provider's default applies
    frame(1).llm.apply("Write about {title}", cache=False, **opts)
    body = sim.captured[-1]["body"]
    assert "temperature" not in body and "system" not in body
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_cells_render_into_the_prompts_the_server_receives(sim, llm):
    """What a prompt looks like for each kind of cell, read from the requests the simulator got:
    dates and datetimes in ISO form, lists and dicts as JSON (non-ASCII kept), numbers and bools
    as Python prints them, format specs applied."""
    import datetime as dt

    sim.configure(capture_requests=20)
    df = pd.DataFrame({
        "n": [1, 20], "f": [1.5, 0.1], "b": [True, False],
        "ts": pd.to_datetime(["2026-01-01", "2026-02-03 04:05:06"], format="ISO8601"),
        "day": [dt.date(2026, 1, 2), dt.date(2026, 12, 31)],
        "when": [dt.datetime(2026, 5, 6, 7, 8, 9), dt.datetime(2026, 5, 6, 7, 8, 9, tzinfo=dt.UTC)],
        "l": [[1, 2], ["á", None, 2.5]],
        "m": [{"k": 1, "inner": {"x": [True]}}, {}],
        "s": ["phở {braces} stay", "two\nlines"],
    })
    template = "n={n} f={f} f2={f:.2f} b={b} ts={ts} day={day} when={when} l={l} m={m} s={s} r={s!r}"
    out = df.llm.apply(template, **llm)
    assert out["llm_output"].notna().all()
    assert sorted(sent_prompts(sim)) == sorted([
        'n=1 f=1.5 f2=1.50 b=True ts=2026-01-01T00:00:00 day=2026-01-02 when=2026-05-06T07:08:09 '
        'l=[1, 2] m={"k": 1, "inner": {"x": [true]}} s=phở {braces} stay r=\'phở {braces} stay\'',
        'n=20 f=0.1 f2=0.10 b=False ts=2026-02-03T04:05:06 day=2026-12-31 '
        'when=2026-05-06T07:08:09+00:00 l=["á", null, 2.5] m={} s=two\nlines r=\'two\\nlines\'',
    ])


def test_missing_cells_skip_the_row_or_render_empty(sim, llm):
    """NaN, None, pd.NA and NaT: by default the row is not sent; with missing="empty" the field
    is empty in the prompt the server receives, and the other fields render as usual."""
    sim.configure(capture_requests=20)
    df = pd.DataFrame({"x": [2.5, np.nan, None, 4.0],
                       "t": [pd.Timestamp("2026-03-04"), pd.NaT, pd.Timestamp("2026-03-05"), pd.NaT],
                       "o": pd.array(["a", "b", pd.NA, "d"], dtype="string")})
    out = df.llm.apply("x=[{x}] t=[{t}] o=[{o}]", **llm)
    assert sorted(sent_prompts(sim)) == ["x=[2.5] t=[2026-03-04T00:00:00] o=[a]"]
    assert out["llm_output"].notna().tolist() == [True, False, False, False]
    assert out["llm_output_error"].iloc[1:].str.startswith("missing value in column").all()
    out = df.llm.apply("x=[{x}] t=[{t}] o=[{o}]", missing="empty", **llm)
    assert out["llm_output"].notna().all()
    assert sorted(sent_prompts(sim)[1:]) == sorted(["x=[] t=[] o=[b]", "x=[] t=[2026-03-05T00:00:00] o=[]",
                                                    "x=[4.0] t=[] o=[d]"])


def test_last_result_and_report(llm):
    out = frame(4).llm.apply("Describe {title}", **llm)
    pd.testing.assert_frame_equal(llmbatch_pd.last_result(), out)
    assert re.search(r"Answered\s+4\n", llmbatch_pd.last_report().summary())


def test_import_leaves_the_heavy_parts_for_first_use():
    """aiohttp loads with the first run, pydantic with the first schema=, ipywidgets with a panel."""
    import subprocess
    import sys

    code = ("import sys, llmbatch_pd\n"
            "heavy = [m for m in ('aiohttp', 'pydantic', 'ipywidgets', 'genai_prices') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_lone_surrogate_in_an_answer_does_not_lose_the_column():
    """pyarrow-backed strings refuse lone surrogates (a JSON escape can carry one): the
    answer keeps U+FFFD in its place, and the other answers stay as they came."""
    from llmbatch_pd.frames import strings

    column = strings(["fine", "bad \ud800 half", None])
    assert column[0] == "fine" and column[1] == "bad \ufffd half" and column[2] is pd.NA
