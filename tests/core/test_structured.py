"""schema=: the JSON schema each API wants (checked against the official SDKs), validated answers,
bounded retries, and one typed column per field. Real HTTP against the simulator."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Literal

import anthropic
import openai
import pandas as pd
import pydantic
import pytest
from anthropic.lib._parse._transform import transform_schema
from openai.lib._parsing._completions import type_to_response_format_param

import llmbatch_pd  # noqa: F401  (registers df.llm)
from llmbatch_pd import InputError
from llmbatch_pd.core.errors import StructuredOutputIgnored
from llmbatch_pd.core.schema import OutputSchema
from llmbatch_pd.providers.anthropic import uses_tool_for_schema
from llmbatch_pd.sim import Simulator

from ..conftest import bill

KEY = "sk-test-0123456789abcdefSECRET"
PROMPT = "Classify the sentiment as positive, negative or neutral: {text}"


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(pydantic.BaseModel):
    city: str
    zip_code: str | None = None


class Review(pydantic.BaseModel):
    """A review, read by a model."""

    sentiment: Literal["positive", "negative", "neutral"]
    score: float = pydantic.Field(description="0 to 1", ge=0, le=1)
    stars: int
    spam: bool
    summary: str = pydantic.Field(max_length=200)
    tags: list[str]
    seen: dt.date | None = None


class Nested(pydantic.BaseModel):
    name: str
    home: Address
    work: Address | None = None
    color: Color
    others: list[Address] = pydantic.Field(min_length=2)


MODELS = [Review, Nested, Address]


@pytest.fixture
def sim():
    with Simulator(ttft_ms=2, api_key=KEY, capture_requests=100) as running:
        yield running


def reviews(n: int = 6) -> pd.DataFrame:
    texts = ["I love it, great", "broken and bad", "it is fine", "awful", "superb", "okay"]
    return pd.DataFrame({"text": [texts[i % len(texts)] + f" #{i}" for i in range(n)]})


def run(sim, df, model="openai/gpt-4.1-mini", **options):
    options.setdefault("progress", False)
    base = sim.base_url.removesuffix("/v1") if model.startswith("anthropic/") else sim.base_url
    return df.llm.apply(PROMPT, model=model, base_url=base, api_key=KEY, **options)


# -- the schema each API wants: the SDKs' own transforms are the reference -------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_openai_format_equals_the_sdks(model):
    assert OutputSchema(model).openai_format() == type_to_response_format_param(model)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_anthropic_schema_equals_the_sdks(model):
    assert OutputSchema(model).anthropic_schema() == transform_schema(model.model_json_schema())


def test_our_openai_request_carries_what_the_sdk_sends(sim):
    client = openai.OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
    parsed = client.chat.completions.parse(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "Classify as positive, negative or neutral: ok"}],
        response_format=Review)
    assert isinstance(parsed.choices[0].message.parsed, Review)
    theirs = sim.captured[-1]["body"]
    run(sim, pd.DataFrame({"text": ["ok"]}), schema=Review)
    ours = sim.captured[-1]["body"]
    assert ours["response_format"] == theirs["response_format"]
    assert ours["response_format"]["json_schema"]["strict"] is True
    # prompt_cache_key: an SDK parameter too (issue 14: requests sharing a prefix share a cache)
    assert set(ours) <= set(theirs) | {"max_completion_tokens", "temperature", "prompt_cache_key"}


def test_our_anthropic_request_carries_what_the_sdk_sends(sim):
    client = anthropic.Anthropic(base_url=sim.base_url.removesuffix("/v1"), api_key=KEY, max_retries=0)
    parsed = client.messages.parse(
        model="claude-haiku-4-5", max_tokens=300,
        messages=[{"role": "user", "content": "Classify as positive, negative or neutral: ok"}],
        output_format=Review)
    assert isinstance(parsed.parsed_output, Review)
    theirs = sim.captured[-1]["body"]
    run(sim, pd.DataFrame({"text": ["ok"]}), model="anthropic/claude-haiku-4-5", schema=Review)
    ours = sim.captured[-1]["body"]
    assert ours["output_config"] == theirs["output_config"]
    assert "tools" not in ours


def test_older_claude_models_get_a_forced_tool(sim):
    assert uses_tool_for_schema("claude-3-5-haiku-latest") and not uses_tool_for_schema("claude-haiku-4-5")
    out = run(sim, reviews(3), model="anthropic/claude-3-5-haiku-latest", schema=Review)
    body = sim.captured[-1]["body"]
    assert body["tool_choice"] == {"type": "tool", "name": "Review"}
    assert body["tools"][0]["input_schema"] == transform_schema(Review.model_json_schema())
    assert "output_config" not in body
    assert out["llm_output_error"].isna().all(), out["llm_output_error"].tolist()
    assert set(out["sentiment"]) <= {"positive", "negative", "neutral"}


# -- answers land as typed columns -----------------------------------------------------------


@pytest.mark.parametrize("model", ["openai/gpt-4.1-mini", "anthropic/claude-haiku-4-5"])
def test_one_typed_column_per_field(sim, model):
    df = reviews()
    out = run(sim, df, model=model, schema=Review)
    assert out["llm_output_error"].isna().all(), out["llm_output_error"].tolist()
    assert list(out.columns) == ["text", *Review.model_fields, "llm_output_error"]
    assert isinstance(out["sentiment"].dtype, pd.CategoricalDtype)
    assert list(out["sentiment"].cat.categories) == ["positive", "negative", "neutral"]
    assert str(out["score"].dtype) == "Float64" and out["score"].between(0, 1).all()
    assert str(out["stars"].dtype) == "Int64"
    assert str(out["spam"].dtype) == "boolean"
    assert str(out["summary"].dtype) == "string"
    assert out["tags"].map(lambda v: isinstance(v, list)).all()
    assert str(out["seen"].dtype).startswith("datetime64")
    pd.testing.assert_index_equal(out.index, df.index)


def test_the_enum_answer_follows_the_prompts_options(sim):
    out = run(sim, pd.DataFrame({"text": ["I love it, great, wonderful"]}), schema={"sentiment": Literal["positive", "negative", "neutral"]})
    assert out.loc[0, "sentiment"] in ("positive", "negative", "neutral")


def test_dict_schema_and_output_prefix(sim):
    out = run(sim, reviews(4), schema={"label": str, "n": int, "ok": bool}, output="x")
    assert list(out.columns) == ["text", "x_label", "x_n", "x_ok", "x_error"]
    assert [str(out[c].dtype) for c in ("x_label", "x_n", "x_ok")] == ["string", "Int64", "boolean"]


def test_nested_models_and_enums(sim):
    out = run(sim, reviews(3), schema=Nested)
    assert out["llm_output_error"].isna().all(), out["llm_output_error"].tolist()
    assert out["home"].map(lambda v: isinstance(v, dict) and "city" in v).all()
    assert isinstance(out["color"].dtype, pd.CategoricalDtype)
    assert set(out["color"]) <= {"red", "blue"}
    assert out["others"].map(lambda v: isinstance(v, list) and len(v) >= 2).all()


def test_cached_structured_answers_cost_nothing_the_second_time(sim):
    first = run(sim, reviews(), schema=Review)
    sent = len(sim.log)
    second = run(sim, reviews(), schema=Review)
    assert len(sim.log) == sent
    pd.testing.assert_frame_equal(first, second)
    assert second.llm.report.cached == 6


def test_schema_tokens_count_in_the_estimate(sim):
    plain = reviews().llm.estimate(PROMPT, model="openai/gpt-4.1-mini", base_url=sim.base_url, api_key=KEY)
    shaped = reviews().llm.estimate(PROMPT, model="openai/gpt-4.1-mini", base_url=sim.base_url, api_key=KEY,
                                    schema=Review)
    assert shaped["input_tokens"].iloc[0] > plain["input_tokens"].iloc[0] + 6 * 50
    assert len(sim.log) == 0


# -- bad schemas are refused before anything is sent ----------------------------------------


@pytest.mark.parametrize("schema, words", [
    ({}, "at least one field"),
    ({"not valid": str}, "not a valid identifier"),
    ({"x": object()}, "schema="),
    ("Review", "pydantic model class or a dict"),
    (dict, "pydantic model class or a dict"),
])
def test_bad_schemas_are_input_errors(sim, schema, words):
    with pytest.raises(InputError, match=words):
        run(sim, reviews(), schema=schema)
    assert len(sim.log) == 0


def test_a_field_named_like_a_column_is_refused_unless_prefixed(sim):
    with pytest.raises(InputError, match="overwrite"):
        run(sim, reviews(), schema={"text": str})
    out = run(sim, reviews(2), schema={"text": str}, output="answer")
    assert "answer_text" in out and out["text"].str.contains("#").all()


def test_schema_retries_must_be_a_count(sim):
    with pytest.raises(InputError, match="schema_retries"):
        run(sim, reviews(), schema=Review, schema_retries=-1)


# -- answers that do not fit: asked again a bounded number of times, then the row's error ----


def test_an_answer_that_never_fits_becomes_the_rows_error_after_bounded_retries(sim):
    sim.configure(fault_invalid_json=1.0)
    out = run(sim, reviews(2), schema=Review, schema_retries=2)
    assert out["sentiment"].isna().all()
    assert out["llm_output_error"].str.contains("does not fit the schema").all()
    assert len(sim.log) == 2 * 3  # each row: the first answer and two more tries
    report = out.llm.report
    assert report.stats.by_kind["invalid output"] == 6 and report.failed_rows == 2
    # the unusable answers were paid for and are counted: all 6, by hand at the list price
    assert [e["status"] for e in sim.log] == [200] * 6
    assert report.cost == pytest.approx(bill(sim.log)) and report.cost > 0
    run(sim, reviews(2), schema=Review, schema_retries=0)  # nothing was cached: all sent again, once
    assert len(sim.log) == 6 + 2


def test_a_server_that_ignores_the_schema_stops_the_run_after_three_rows(sim):
    """Every answer unusable (a gateway that drops response_format): three rows, each asked
    three times, then the run stops instead of paying three times for every row."""
    sim.configure(fault_invalid_json=1.0)
    with pytest.raises(StructuredOutputIgnored) as caught:
        run(sim, reviews(20), schema=Review, schema_retries=2)
    assert len(sim.log) == 3 * 3
    errs = caught.value.result["llm_output_error"]
    assert errs.str.startswith("answer does not fit the schema").sum() == 3
    assert errs.str.startswith("not sent").sum() == 17
    assert caught.value.report.cost == pytest.approx(bill(sim.log))


@pytest.mark.parametrize("model", ["openai/gpt-4.1-mini", "anthropic/claude-haiku-4-5",
                                   "anthropic/claude-3-5-haiku-latest"])
def test_a_retry_repairs_an_occasional_bad_answer(sim, model):
    sim.configure(fault_invalid_json=0.3, seed=3)
    out = run(sim, reviews(30), model=model, schema=Review, schema_retries=4)
    report = out.llm.report
    assert report.stats.by_kind["invalid output"] > 0  # some answers were bad ...
    assert out["llm_output_error"].isna().sum() >= 29  # ... and asking again fixed (nearly) all
    assert len(sim.log) == 30 + report.stats.by_kind["invalid output"]
    assert out.loc[out["llm_output_error"].isna(), "sentiment"].notna().all()


def test_unusable_answers_are_never_cached(sim):
    sim.configure(fault_invalid_json=1.0)
    run(sim, reviews(3), schema=Review, schema_retries=0)
    sim.configure(fault_invalid_json=0.0)
    sent = len(sim.log)
    out = run(sim, reviews(3), schema=Review)
    assert len(sim.log) == sent + 3 and out["llm_output_error"].isna().all()


@pytest.mark.parametrize("model", ["openai/gpt-4.1-mini", "anthropic/claude-haiku-4-5"])
def test_batch_mode_lands_typed_columns(sim, model):
    out = run(sim, reviews(5), model=model, schema=Review, mode="batch", poll_interval=0.05)
    assert out["llm_output_error"].isna().all(), out["llm_output_error"].tolist()
    assert isinstance(out["sentiment"].dtype, pd.CategoricalDtype)
    assert str(out["stars"].dtype) == "Int64"


def test_batch_mode_answers_that_do_not_fit_are_row_errors(sim):
    sim.configure(fault_invalid_json=1.0)
    out = run(sim, reviews(3), schema=Review, mode="batch", poll_interval=0.05)
    assert out["llm_output_error"].str.contains("does not fit the schema").all()
    assert out["sentiment"].isna().all()


def test_deepseek_gets_json_mode_with_the_schema_in_the_system_prompt(sim):
    out = run(sim, reviews(4), model="deepseek/deepseek-chat", schema=Review, system="Be brief.")
    body = sim.captured[-1]["body"]
    assert body["response_format"] == {"type": "json_object"}  # DeepSeek has no json_schema
    system = body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.\n\n")
    assert "JSON schema" in system["content"] and '"sentiment"' in system["content"]
    assert out["llm_output_error"].isna().all(), out["llm_output_error"].tolist()
    assert str(out["stars"].dtype) == "Int64"


def test_a_cached_answer_that_no_longer_fits_a_stricter_model_fails_its_row(sim):
    class Loose(pydantic.BaseModel):
        label: str

    class Strict(pydantic.BaseModel):  # same JSON schema, a stricter Python-side check
        label: str

        @pydantic.field_validator("label")
        @classmethod
        def short(cls, value: str) -> str:
            if len(value) > 3:
                raise ValueError("too long")
            return value

    Strict.__name__ = "Loose"
    assert OutputSchema(Strict).openai_format() == OutputSchema(Loose).openai_format()
    first = run(sim, reviews(3), schema=Loose)
    assert first["llm_output_error"].isna().all()
    again = run(sim, reviews(3), schema=Strict)  # the cache answers (same request), the check refuses
    long_ = first["label"].str.len() > 3
    assert long_.any()
    assert again["label"].isna().tolist() == long_.tolist()
    assert again["llm_output_error"].notna().tolist() == long_.tolist()
    report = again.llm.report
    assert report.failed_rows == int(long_.sum()) and report.answered_rows == 3 - int(long_.sum())
