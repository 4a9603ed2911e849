import datetime as dt
import math

import pandas as pd
import pytest

from llmbatch_pd.core.errors import TemplateError
from llmbatch_pd.core.prompts import MissingValue, Template, format_value, is_missing, request_key


def test_fields_and_escapes():
    t = Template.parse("Classify {title} ({price:.2f}) {{literal}} {title}")
    assert t.fields == ("title", "price")
    assert t.render({"title": "Phở bò", "price": 3.5}) == "Classify Phở bò (3.50) {literal} Phở bò"


@pytest.mark.parametrize("bad", ["{x.__class__}", "{x[0]}", "{0}", "{x.y.z}", "{a[b]}"])
def test_attribute_and_index_access_rejected(bad):
    with pytest.raises(TemplateError, match="not allowed|attribute or index"):
        Template.parse(bad)


def test_unbalanced_braces_explain_escaping():
    with pytest.raises(TemplateError, match=r"\{\{"):
        Template.parse("oops { here")


def test_unknown_field_lists_columns():
    t = Template.parse("{title} {body}")
    with pytest.raises(TemplateError) as info:
        t.check_columns(["title", "text", "rating"])
    assert "{body}" in str(info.value) and "'text'" in str(info.value)


def test_series_value_field():
    assert Template.parse("say {}", value_field="col").fields == ("col",)
    assert Template.parse("say {value}", value_field="col").fields == ("col",)
    with pytest.raises(TemplateError):
        Template.parse("say {}")


@pytest.mark.parametrize("value", [None, float("nan"), pd.NA, pd.NaT])
def test_missing_values_skip_or_empty(value):
    assert is_missing(value)
    t = Template.parse("x={v}")
    with pytest.raises(MissingValue, match="'v'"):
        t.render({"v": value})
    assert t.render({"v": value}, missing="empty") == "x="


def test_values_formatting():
    assert format_value([1, "á"]) == '[1, "á"]'
    assert format_value({"k": 1}) == '{"k": 1}'
    assert format_value(dt.date(2026, 1, 2)) == "2026-01-02"
    assert format_value(pd.Timestamp("2026-01-02 03:04")) == "2026-01-02T03:04:00"
    assert format_value(7) == "7"
    assert not is_missing(0) and not is_missing("") and not is_missing(math.inf)


def test_request_key_stable_and_sensitive():
    a = request_key("openai:u", "m", [{"role": "user", "content": "x"}], {"temperature": 0})
    assert a == request_key("openai:u", "m", [{"role": "user", "content": "x"}], {"temperature": 0})
    assert a != request_key("openai:u", "m", [{"role": "user", "content": "y"}], {"temperature": 0})
    assert a != request_key("openai:u", "m2", [{"role": "user", "content": "x"}], {"temperature": 0})
    assert a != request_key("openai:u", "m", [{"role": "user", "content": "x"}], {"temperature": 1})
    # None-valued parameters do not change the answer, so they do not change the key
    assert request_key("e", "m", [], {"t": None}) == request_key("e", "m", [], {})


def test_a_cell_that_cannot_be_written_fails_its_row_only():
    from llmbatch_pd.core.prompts import CellError

    class Broken:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(CellError, match=r"\{x\}.*\(Broken\).*boom"):
        Template.parse("{x}").render({"x": Broken()})
    with pytest.raises(CellError, match=r"\{p:\.1f\}.*'n/a' \(str\).*'\.1f'"):
        Template.parse("{p:.1f}").render({"p": "n/a"})


def test_repeats_are_judged_on_the_rendered_prompt():
    t = Template.parse("{a}{b:.0f}")
    rows = [{"a": "x", "b": 1.0}, {"a": "x", "b": 1.2}, {"a": "xy", "b": 2.0},
            {"a": "x", "b": 7.0}, {"a": None, "b": 3.0}, {"a": "x", "b": "n/a"}]
    # rows 0 and 1 render "x1"; "xy2" and "x7" are unique; None and "n/a" make no prompt
    assert Template.parse("{a}{b:.0f}").repeats(iter(rows), 6).tolist() == [
        True, True, False, False, False, False]
    assert t.repeats(iter([{"a": "x1", "b": 2.0}, {"a": "x", "b": 12.0}]), 2).tolist() == [True, True]


def test_the_prefix_is_the_literal_text_before_the_first_field() -> None:
    assert Template.parse("Classify.\nReview: {text} ({shop})").prefix == "Classify.\nReview: "
    assert Template.parse("{text} is it good?").prefix == ""
    assert Template.parse("No fields at all").prefix == "No fields at all"
    assert Template.parse("Braces {{x}} stay literal: {text}").prefix == "Braces {x} stay literal: "
