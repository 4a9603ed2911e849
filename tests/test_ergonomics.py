"""What a new user meets first: the one-line assign, help() that lists every option, a
preview of the requests before paying, checked against what the simulator receives."""

import inspect
import json

import pandas as pd
import pytest

import llmbatch_pd
from llmbatch_pd.core.option_docs import OPTION_DOCS
from llmbatch_pd.sim import Simulator

from .conftest import KEY, MODEL


def reviews(n: int = 6) -> pd.DataFrame:
    text = [f"review number {i}" for i in range(n)]
    text[2] = None  # a missing value: skipped, its reason kept
    return pd.DataFrame({"text": text, "stars": range(n)}, index=[f"r{i}" for i in range(n)])


def sent_prompts(sim) -> set[str]:
    return {c["body"]["messages"][-1]["content"] for c in sim.captured if c["path"].endswith("/completions")}


def test_a_one_line_assign_keeps_answers_reasons_and_report() -> None:
    df = reviews()
    before = df.copy()
    with Simulator(ttft_ms=1, api_key=KEY, capture_requests=100) as sim:
        with pytest.warns(UserWarning, match=r"attrs\['llm_errors'\]"):
            df["label"] = df.llm.answers("Label: {text}", model=MODEL, base_url=sim.base_url,
                                         api_key=KEY, progress=False, cache=False)
        label = df["label"]
        pd.testing.assert_frame_equal(df.drop(columns="label"), before)
        sent = sent_prompts(sim)
    # the simulator's log says which rows were asked: exactly those have an answer
    assert sent == {f"Label: review number {i}" for i in (0, 1, 3, 4, 5)}
    assert label.isna().tolist() == [False, False, True, False, False, False]


def test_answers_are_a_series_with_reasons_and_report() -> None:
    df = reviews()
    with Simulator(ttft_ms=1, api_key=KEY) as sim:
        with pytest.warns(UserWarning):
            out = df.llm.answers("Label: {text}", model=MODEL, base_url=sim.base_url, api_key=KEY,
                                 progress=False, cache=False, output="label")
        asked = sim.stats()["total"]
    assert isinstance(out, pd.Series) and out.name == "label" and list(out.index) == list(df.index)
    assert list(out.attrs["llm_errors"]) == ["r2"]
    assert "missing value in column 'text'" in out.attrs["llm_errors"]["r2"]
    assert out.llm.report.answered_rows == 5 == asked
    assert llmbatch_pd.last_result() is out


def test_series_apply_returns_a_series_and_several_columns_a_frame() -> None:
    s = pd.Series(["xin chào", "hello"], name="greeting", index=[10, 20])
    with Simulator(ttft_ms=1, api_key=KEY) as sim:
        opts = {"model": MODEL, "base_url": sim.base_url, "api_key": KEY, "progress": False,
                "cache": False}
        out = s.llm.apply("Translate: {}", **opts)
        wide = s.llm.apply("Translate: {}", usage=True, **opts)
    assert isinstance(out, pd.Series) and list(out.index) == [10, 20] and out.notna().all()
    assert out.attrs["llm_errors"] == {} and out.llm.report.answered_rows == 2
    assert isinstance(wide, pd.DataFrame)
    assert list(wide.columns) == ["llm_output", "llm_output_error", "llm_output_input_tokens",
                                  "llm_output_output_tokens", "llm_output_cost"]


@pytest.mark.parametrize("name", ["apply", "aapply", "answers", "estimate", "submit", "preview",
                                  "embed"])
def test_help_lists_every_option_with_its_default(name: str) -> None:
    method = getattr(pd.DataFrame.llm, name)
    params = inspect.signature(method).parameters
    assert "options" not in params, "help() would show **options"
    doc = inspect.getdoc(method)
    for p in params.values():
        if p.name in ("self", "template"):
            continue
        assert p.name in OPTION_DOCS, f"{name}: option {p.name} has no line in core/option_docs.py"
        default = "required" if p.default is p.empty else f"default {p.default!r}"
        assert f"    {p.name} ({default}): {OPTION_DOCS[p.name]}" in doc
    assert params["budget"].default is None and params["model"].default is inspect.Parameter.empty


def test_the_series_accessor_is_documented_too() -> None:
    for name in ("apply", "aapply", "estimate", "embed"):
        method = getattr(pd.Series.llm, name)
        assert inspect.getdoc(method) and "Options (keyword only):" in inspect.getdoc(method)
        assert "options" not in inspect.signature(method).parameters


@pytest.mark.parametrize("model", [MODEL, "anthropic/claude-haiku-4-5"])
def test_preview_shows_the_bodies_the_provider_then_receives(model: str) -> None:
    df = reviews()
    df.loc["r4", "text"] = "review number 0"  # a duplicate of r0: sent once
    with Simulator(ttft_ms=1, api_key=KEY, capture_requests=100) as sim:
        preview = df.llm.preview("Label: {text} ({stars} stars)", model=model, system="Be brief.",
                                 n=3, max_tokens=20, base_url=sim.base_url)
        assert sim.stats()["total"] == 0
        assert list(preview.index) == ["r0", "r1", "r3"]  # r2 is missing a value
        assert preview["system"].tolist() == ["Be brief."] * 3
        assert preview.loc["r1", "prompt"] == "Label: review number 1 (1 stars)"
        assert (preview["input_tokens"] > 5).all()
        with pytest.warns(UserWarning):
            df.llm.apply("Label: {text} ({stars} stars)", model=model, system="Be brief.",
                         max_tokens=20, base_url=sim.base_url, api_key=KEY, progress=False,
                         cache=False)
        received = [c["body"] for c in sim.captured]
    for body in preview["body"]:
        assert body in received  # exactly what went out (the order of a run is not fixed)
    assert KEY not in json.dumps(list(preview["body"]))


def test_preview_needs_no_key_and_sends_nothing(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with Simulator(ttft_ms=1) as sim:
        out = reviews().llm.preview("Label: {text}", model=MODEL, base_url=sim.base_url, n=1)
        assert sim.stats()["total"] == 0
    assert len(out) == 1
    with pytest.raises(llmbatch_pd.InputError, match="n= must be"):
        reviews().llm.preview("Label: {text}", model=MODEL, n=0)
    with pytest.raises(llmbatch_pd.InputError, match="did you mean"):
        reviews().llm.preview("Label: {text}", model=MODEL, temprature=1)


def test_preview_of_a_packed_run_shows_the_pack_the_provider_receives() -> None:
    df = reviews()
    with Simulator(ttft_ms=1, api_key=KEY, capture_requests=100) as sim:
        opts = {"model": MODEL, "base_url": sim.base_url, "pack": 3, "max_tokens": 200}
        preview = df.llm.preview("Label: {text}", n=1, **opts)
        body = preview["body"].iloc[0]
        rows = json.loads(body["messages"][-1]["content"].split("<rows>\n")[1].split("\n</rows>")[0])
        assert [r["text"] for r in rows] == ["review number 0", "review number 1", "review number 3"]
        with pytest.warns(UserWarning):
            df.llm.apply("Label: {text}", api_key=KEY, progress=False, cache=False, **opts)
        assert body in [c["body"] for c in sim.captured]
        assert sim.packs[0]["ids_sent"] == ["1", "2", "3"]


def test_the_estimate_reads_at_a_glance_and_keeps_its_numbers() -> None:
    df = llmbatch_pd.load_reviews()
    e = df.llm.estimate("Classify the sentiment: {text}", model=[MODEL, "anthropic/claude-haiku-4-5"],
                        max_tokens=5, budget=0.01)
    assert e["cost"].dtype == float and e.loc[MODEL, "rows"] == 300  # numbers, for code
    shown = e.readable()
    for model in (MODEL, "anthropic/claude-haiku-4-5"):
        cost = e.loc[model, "cost"]
        assert shown.loc[model, "cost"].startswith(f"${float(f'{cost:.3g}')}".rstrip("0"))
        assert shown.loc[model, "wall time"] == f"~{round(e.loc[model, 'wall_time_s'])}s"
        assert shown.loc[model, "to send"] == f"{e.loc[model, 'requests'] - e.loc[model, 'cached']:,}"
    text = repr(e)
    raw = repr(float(e.loc[MODEL, "cost"]))
    assert len(raw) > 8 and raw not in text  # no raw float in what is shown
    assert "<table" in e._repr_html_() and "fits" in text and "over" in text
    assert type(e["cost"]) is pd.Series and type(e.iloc[:1]) is pd.DataFrame


def test_an_interrupted_run_shows_one_line_in_ipython_not_the_library(capsys) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_cell("from llmbatch_pd import RunInterrupted\n"
                       "raise RunInterrupted('interrupted: 3 of 10 rows had finished and are kept')")
    finally:
        InteractiveShell.clear_instance()
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert "RunInterrupted" in text and "3 of 10 rows had finished" in text
    assert "Traceback" not in text and "File " not in text and len(text.strip().splitlines()) == 1
