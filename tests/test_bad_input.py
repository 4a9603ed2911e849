"""Messy data: a clear error before any money is spent, or a per-row error without a request."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmbatch_pd import InputError, TemplateError
from llmbatch_pd.core.prompts import Template, format_value


def test_missing_column_lists_the_columns(llm, sim):
    df = pd.DataFrame({"title": ["a"], "body": ["b"]})
    with pytest.raises(TemplateError, match=r"\{text\}.*'title', 'body'"):
        df.llm.apply("{text}", **llm)
    assert sim.log == []


def test_duplicated_index_and_multiindex_keep_their_shape(llm):
    dup = pd.DataFrame({"t": ["x", "y", "z"]}, index=[1, 1, 2])
    out = dup.llm.apply("Echo {t}", **llm)
    assert list(out.index) == [1, 1, 2] and out["llm_output"].notna().all()
    multi = pd.DataFrame({"t": ["x", "y"]}, index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)]))
    out = multi.llm.apply("Echo {t}", **llm)
    assert out.index.equals(multi.index)


def test_duplicated_column_name_is_an_input_error(llm, sim):
    df = pd.DataFrame([["a", "b"]], columns=["t", "t"])
    with pytest.raises(InputError, match="more than once"):
        df.llm.apply("{t}", **llm)
    assert sim.log == []


def test_numbers_dates_lists_dicts_and_scripts(llm, sim):
    df = pd.DataFrame({
        "n": [1, 2.5, np.int64(7)],
        "d": [pd.Timestamp("2026-01-02"), dt.date(2026, 3, 4), pd.NaT],
        "l": [[1, "á"], {"k": "v"}, ("x",)],
        "s": ["Phở bò ngon tuyệt 🍜", "日本語のレビュー", "emoji only 😀😀"],
    })
    out = df.llm.apply("{n} | {d} | {l} | {s}", **llm)
    assert out["llm_output"].notna().tolist() == [True, True, False]  # NaT row is skipped
    prompts = [e for e in sim.log]
    assert len(prompts) == 2


def test_text_too_long_for_the_context_window_is_flagged_and_not_sent(llm, sim):
    huge = "word " * 1_100_000  # well past gpt-4.1-mini's ~1M-token window
    df = pd.DataFrame({"t": ["short", huge]})
    est = df.llm.estimate("{t}", **{k: v for k, v in llm.items() if k != "progress"})
    assert est.iloc[0]["too_long"] == 1
    out = df.llm.apply("{t}", **llm)
    assert out.loc[0, "llm_output"] is not pd.NA
    assert "context window" in out.loc[1, "llm_output_error"]
    assert len(sim.log) == 1


def test_non_dataframe_accessor_use_and_bad_model(llm, sim):
    df = pd.DataFrame({"t": ["a"]})
    with pytest.raises(InputError, match="model= must be a name"):
        df.llm.apply("{t}", **{**llm, "model": "", "base_url": None})
    with pytest.raises(InputError, match="provider/model"):
        df.llm.apply("{t}", **{**llm, "model": "mystery-model", "base_url": None})
    with pytest.raises(InputError, match="model"):
        df.llm.apply("{t}", **{**llm, "model": None})
    assert sim.log == []


# property-based: any template is either rejected up front or renders every row ------------

field_names = st.sampled_from(["a", "b", "c d", "é"])
literal = st.text(alphabet=st.characters(blacklist_characters="{}", blacklist_categories=("Cs",)), max_size=8)
cells = st.one_of(
    st.none(), st.just(float("nan")), st.just(pd.NA), st.integers(), st.floats(allow_nan=False),
    st.text(max_size=20), st.lists(st.integers(), max_size=3), st.dates(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def templates(draw):
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        parts.append(draw(literal).replace("{", "{{").replace("}", "}}"))
        parts.append("{" + draw(field_names) + "}")
    parts.append(draw(literal))
    return "".join(parts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(templates(), st.lists(st.tuples(cells, cells, cells, cells), min_size=1, max_size=5))
def test_valid_templates_render_every_row_or_skip_missing(template, rows):
    t = Template.parse(template)
    t.check_columns(["a", "b", "c d", "é"])
    for row in rows:
        values = dict(zip(["a", "b", "c d", "é"], row, strict=True))
        try:
            text = t.render(values)
        except Exception as exc:  # only a missing value may stop a row
            assert type(exc).__name__ == "MissingValue"
            continue
        assert isinstance(text, str)
        assert t.render(values, missing="empty") == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_arbitrary_templates_never_reach_into_objects(text):
    try:
        t = Template.parse(text)
    except TemplateError:
        return
    for name in t.fields:
        assert "." not in name and "[" not in name and not name.isdigit()


@settings(max_examples=200, deadline=None)
@given(cells)
def test_any_cell_formats_to_text(value):
    from llmbatch_pd.core.prompts import is_missing

    if not is_missing(value):
        assert isinstance(format_value(value), str)
