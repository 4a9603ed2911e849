"""Structured output from the simulator, proven with the official SDKs over real loopback HTTP:
OpenAI's ``json_schema`` response format (strict schemas checked like OpenAI checks them),
Anthropic's ``output_config.format`` and forced tools, message batches, and the
``fault_invalid_json`` knob that breaks answers so clients' validation retries can be tested."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

import anthropic
import openai
import pydantic
import pytest
from anthropic.lib._parse._transform import transform_schema
from openai.lib._parsing._completions import type_to_response_format_param

from llmbatch_pd.sim import Simulator
from llmbatch_pd.sim.answers import make_answer

from ..conftest import wait_until

KEY = "sk-test-0123456789"
SENTIMENT = "Classify the sentiment of this review as positive, negative or neutral:\n{}"


class Address(pydantic.BaseModel):
    city: str
    postcode: str | None = None


class Review(pydantic.BaseModel):
    """Everything pydantic models commonly hold: enums, bounds, formats, nesting, $defs."""

    sentiment: Literal["positive", "negative", "neutral"]
    stars: int = pydantic.Field(ge=1, le=5)
    confidence: float = pydantic.Field(ge=0, le=1)
    urgent: bool
    seen_on: dt.date
    logged_at: dt.datetime
    tags: list[str]
    shop: Address
    branches: list[Address]
    note: str | None
    summary: str = pydantic.Field(max_length=40)


class Ticket(pydantic.BaseModel):
    team: str
    reason: str


def openai_client(sim: Simulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)


def claude(sim: Simulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.anthropic_url, api_key=KEY, max_retries=0)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def tool_for(model: type[pydantic.BaseModel], name: str = "record") -> dict[str, Any]:
    return {"name": name, "description": "Record the answer.",
            "input_schema": transform_schema(model)}


@pytest.fixture
def sim() -> Any:
    with Simulator(ttft_ms=0, api_key=KEY) as running:
        yield running


# -- OpenAI -----------------------------------------------------------------------------


def test_openai_parse_returns_a_model_instance(sim: Simulator) -> None:
    c = openai_client(sim)
    reply = c.chat.completions.parse(
        model="gpt-4.1-mini", messages=user(SENTIMENT.format("I love it, great shop")),  # type: ignore[arg-type]
        response_format=Review,
    )
    parsed = reply.choices[0].message.parsed
    assert isinstance(parsed, Review)
    assert parsed.sentiment == "positive" and 1 <= parsed.stars <= 5
    assert isinstance(parsed.shop, Address) and len(parsed.branches) == 2
    again = c.chat.completions.parse(
        model="gpt-4.1-mini", messages=user(SENTIMENT.format("I love it, great shop")),  # type: ignore[arg-type]
        response_format=Review,
    )
    assert again.choices[0].message.parsed == parsed  # deterministic
    bad = c.chat.completions.parse(
        model="gpt-4.1-mini", messages=user(SENTIMENT.format("Broken, terrible")),  # type: ignore[arg-type]
        response_format=Review,
    )
    assert bad.choices[0].message.parsed.sentiment == "negative"  # type: ignore[union-attr]


def test_enum_and_named_fields_take_the_prompts_options(sim: Simulator) -> None:
    class Routed(pydantic.BaseModel):
        team: Literal["billing", "shipping", "returns", "other"]
        reason: str

    prompt = "Route this ticket to one of: billing, shipping, returns\nMy parcel never came."
    c = openai_client(sim)
    got = [c.chat.completions.parse(model=m, messages=user(prompt),  # type: ignore[arg-type]
                                    response_format=Routed).choices[0].message.parsed
           for m in ("gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o-mini", "sim-small")]
    assert all(r is not None and r.team in ("billing", "shipping", "returns") for r in got)
    # A free string field whose name the prompt does not use where it offers the options is
    # plain text; a generic answer name, a description naming an option, or a name the prompt
    # uses there ("Route this ticket to ...") takes the choice.
    ticket = c.chat.completions.parse(model="m", messages=user(prompt), response_format=Ticket)
    parsed = ticket.choices[0].message.parsed
    assert parsed is not None and parsed.team not in ("billing", "shipping", "returns")
    assert parsed.reason not in ("billing", "shipping", "returns")

    class Labelled(pydantic.BaseModel):
        label: str
        kind: str = pydantic.Field(description="billing, shipping or returns")
        ticket: str

    labelled = c.chat.completions.parse(model="m", messages=user(prompt), response_format=Labelled)
    value = labelled.choices[0].message.parsed
    assert value is not None
    assert {value.label, value.kind, value.ticket} <= {"billing", "shipping", "returns"}


def test_strict_schema_must_be_closed_and_fully_required(sim: Simulator) -> None:
    c = openai_client(sim)
    fmt = type_to_response_format_param(Review)
    schema = fmt["json_schema"]["schema"]  # type: ignore[index]
    open_schema = json.loads(json.dumps(schema))
    del open_schema["$defs"]["Address"]["additionalProperties"]
    with pytest.raises(openai.BadRequestError) as caught:
        c.chat.completions.create(
            model="m", messages=user("hi"),  # type: ignore[arg-type]
            response_format={"type": "json_schema",
                             "json_schema": {"name": "Review", "schema": open_schema, "strict": True}},
        )
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "response_format"
    assert caught.value.status_code == 400 and error["type"] == "invalid_request_error"
    assert error["message"] == (
        "Invalid schema for response_format 'Review': In context=('$defs', 'Address'), "
        "'additionalProperties' is required to be supplied and to be false.")

    partly = json.loads(json.dumps(schema))
    partly["required"].remove("note")
    with pytest.raises(openai.BadRequestError, match="Missing 'note'"):
        c.chat.completions.create(
            model="m", messages=user("hi"),  # type: ignore[arg-type]
            response_format={"type": "json_schema",
                             "json_schema": {"name": "Review", "schema": partly, "strict": True}},
        )
    # Without strict the same schema is accepted, and answered.
    reply = c.chat.completions.create(
        model="m", messages=user("hi"),  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "Review", "schema": partly}},
    )
    Review.model_validate_json(reply.choices[0].message.content or "")
    for bad, param in [({"type": "xml"}, "response_format.type"),
                       ({"type": "json_schema"}, "response_format.json_schema"),
                       ({"type": "json_schema", "json_schema": {"schema": schema}},
                        "response_format.json_schema.name")]:
        with pytest.raises(openai.BadRequestError) as caught:
            c.chat.completions.create(model="m", messages=user("hi"), response_format=bad)  # type: ignore[arg-type]
        assert caught.value.body["param"] == param  # type: ignore[index]


def test_schema_fill_handles_recursion_formats_and_bounds() -> None:
    class Node(pydantic.BaseModel):
        name: str
        children: list[Node]
        parent: Node | None
        ident: pydantic.UUID4
        ip: pydantic.IPvAnyAddress
        wait: dt.timedelta
        at: dt.time
        code: str = pydantic.Field(min_length=12, max_length=12)
        ratio: float = pydantic.Field(gt=0, lt=0.5)

    for fmt in (type_to_response_format_param(Node),
                {"type": "json_schema", "json_schema": {"schema": transform_schema(Node)}}):
        answer = make_answer(user("Describe a tree."), "m", response_format=fmt)  # type: ignore[arg-type]
        Node.model_validate_json(answer.text)


# -- Anthropic --------------------------------------------------------------------------


def test_anthropic_parse_with_output_format(sim: Simulator) -> None:
    c = claude(sim)
    reply = c.messages.parse(model="claude-haiku-4-5", max_tokens=1000, output_format=Review,
                             messages=user(SENTIMENT.format("Terrible, broken on arrival")))  # type: ignore[arg-type]
    assert reply.stop_reason == "end_turn" and reply.content[0].type == "text"
    parsed = reply.parsed_output
    assert isinstance(parsed, Review) and parsed.sentiment == "negative"
    # The same schema sent as a dict through create(output_config=...).
    raw = c.messages.create(
        model="claude-haiku-4-5", max_tokens=1000, messages=user(SENTIMENT.format("ok")),  # type: ignore[arg-type]
        output_config={"format": {"type": "json_schema", "schema": transform_schema(Review)}},
    )
    assert raw.content[0].type == "text"
    assert Review.model_validate_json(raw.content[0].text).sentiment == "neutral"


def test_anthropic_forced_tool_returns_one_conforming_tool_use(sim: Simulator) -> None:
    c = claude(sim)
    reply = c.messages.create(
        model="claude-haiku-4-5", max_tokens=1000, messages=user(SENTIMENT.format("I love it")),  # type: ignore[arg-type]
        tools=[tool_for(Ticket, "other"), tool_for(Review)],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "record"},
    )
    assert reply.stop_reason == "tool_use" and len(reply.content) == 1
    block = reply.content[0]
    assert block.type == "tool_use" and block.name == "record" and block.id.startswith("toolu_")
    assert Review.model_validate(block.input).sentiment == "positive"
    # "any" forces a call too: to the first tool.
    anyway = c.messages.create(
        model="claude-haiku-4-5", max_tokens=1000, messages=user("hi"),  # type: ignore[arg-type]
        tools=[tool_for(Ticket, "ticket")], tool_choice={"type": "any"},  # type: ignore[list-item]
    )
    assert anyway.content[0].type == "tool_use" and anyway.content[0].name == "ticket"
    Ticket.model_validate(anyway.content[0].input)
    # A cap too small for the call stops with max_tokens.
    short = c.messages.create(
        model="claude-haiku-4-5", max_tokens=5, messages=user("hi"),  # type: ignore[arg-type]
        tools=[tool_for(Review)], tool_choice={"type": "tool", "name": "record"},  # type: ignore[list-item]
    )
    assert short.stop_reason == "max_tokens" and short.content[0].type == "tool_use"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"tools": [tool_for(Ticket)], "tool_choice": {"type": "tool", "name": "nope"}},
         "tool_choice.tool.name: Tool 'nope' not found in tools"),
        ({"tool_choice": {"type": "tool", "name": "record"}},
         "tool_choice: tool_choice may only be specified while providing tools."),
        ({"tools": [{"name": "record"}]}, "tools.0.custom.input_schema: Field required"),
        ({"tools": [tool_for(Ticket), tool_for(Ticket)]}, "tools: Tool names must be unique."),
        ({"output_config": {"format": {"type": "json_object"}}},
         "output_config.format.type: Input should be 'json_schema'"),
        ({"output_config": {"format": {"type": "json_schema"}}},
         "output_config.format.schema: Field required"),
        ({"output_config": {"format": {"type": "json_schema", "schema": "{}"}}},
         "output_config.format.schema: Input should be a valid dictionary"),
        ({"output_config": {"format": {"type": "json_schema",
                                       "schema": {"type": "object", "properties": {}}}}},
         "output_config.format.schema: For 'object' type, 'additionalProperties' must be "
         "explicitly set to false"),
    ],
)
def test_anthropic_structured_params_are_checked(sim: Simulator, extra: dict, message: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude(sim).messages.create(model="claude-haiku-4-5", max_tokens=100,
                                    messages=user("hi"), **extra)  # type: ignore[arg-type]
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["error"] == {"type": "invalid_request_error", "message": message}


# -- fault_invalid_json -----------------------------------------------------------------


def test_invalid_json_fault_breaks_every_structured_answer() -> None:
    with Simulator(ttft_ms=0, api_key=KEY, fault_invalid_json=1.0) as sim:
        oa, an = openai_client(sim), claude(sim)
        failures = 0
        for i in range(6):
            prompt = SENTIMENT.format(f"review number {i}")
            with pytest.raises(pydantic.ValidationError):
                oa.chat.completions.parse(model="m", messages=user(prompt), response_format=Review)  # type: ignore[arg-type]
            with pytest.raises(pydantic.ValidationError):
                an.messages.parse(model="claude-haiku-4-5", max_tokens=1000,  # type: ignore[arg-type]
                                  messages=user(prompt), output_format=Review)
            tool = an.messages.create(
                model="claude-haiku-4-5", max_tokens=1000, messages=user(prompt),  # type: ignore[arg-type]
                tools=[tool_for(Review)], tool_choice={"type": "tool", "name": "record"},  # type: ignore[list-item]
            )
            block = tool.content[0]
            assert block.type == "tool_use" and isinstance(block.input, dict)
            with pytest.raises(pydantic.ValidationError):
                Review.model_validate(block.input)
            failures += 3
        # Requests that ask for no JSON are never hit, and never counted.
        plain = oa.chat.completions.create(model="m", messages=user("hello"))  # type: ignore[arg-type]
        assert plain.choices[0].message.content
        stats = sim.stats()
        assert stats["by_fault"] == {"invalid_json": failures}
        assert sim.log[-1]["fault"] is None and sim.log[-1]["status"] == 200


def test_invalid_json_fault_is_seeded_at_its_rate() -> None:
    def broken(seed: int) -> list[bool]:
        with Simulator(ttft_ms=0, api_key=KEY, fault_invalid_json=0.5, seed=seed) as sim:
            out = []
            for _ in range(20):
                reply = openai_client(sim).chat.completions.create(
                    model="m", messages=user("hi"), response_format=type_to_response_format_param(Ticket))  # type: ignore[arg-type]
                try:
                    Ticket.model_validate_json(reply.choices[0].message.content or "")
                    out.append(False)
                except pydantic.ValidationError:
                    out.append(True)
            return out

    first = broken(7)
    assert first == broken(7) and 3 <= sum(first) <= 17


# -- batches ----------------------------------------------------------------------------


def test_anthropic_batch_answers_conform() -> None:
    with Simulator(ttft_ms=0, api_key=KEY, batch_seconds=0.2) as sim:
        c = claude(sim)
        fmt = {"format": {"type": "json_schema", "schema": transform_schema(Review)}}
        requests = [
            {"custom_id": f"row-{i}", "params": {
                "model": "claude-haiku-4-5", "max_tokens": 1000, "output_config": fmt,
                "messages": user(SENTIMENT.format(text))}}
            for i, text in enumerate(["I love it", "Terrible", "It arrived"])
        ]
        requests.append({"custom_id": "tool", "params": {
            "model": "claude-haiku-4-5", "max_tokens": 1000, "messages": user("hi"),
            "tools": [tool_for(Ticket)], "tool_choice": {"type": "tool", "name": "record"}}})
        batch = c.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        wait_until(lambda: c.messages.batches.retrieve(batch.id).processing_status == "ended",
                   30, "the message batch to end", interval=0.05)
        results = {r.custom_id: r.result for r in c.messages.batches.results(batch.id)}
        sentiments = []
        for i in range(3):
            result = results[f"row-{i}"]
            assert result.type == "succeeded" and result.message.content[0].type == "text"
            sentiments.append(Review.model_validate_json(result.message.content[0].text).sentiment)
        assert sentiments == ["positive", "negative", "neutral"]
        tool = results["tool"]
        assert tool.type == "succeeded" and tool.message.stop_reason == "tool_use"
        assert tool.message.content[0].type == "tool_use"
        Ticket.model_validate(tool.message.content[0].input)

        with pytest.raises(anthropic.BadRequestError, match="requests.0.params.output_config"):
            c.messages.batches.create(requests=[{"custom_id": "x", "params": {
                "model": "claude-haiku-4-5", "max_tokens": 10, "messages": user("hi"),
                "output_config": {"format": {"type": "text"}}}}])  # type: ignore[list-item]

        sim.configure(fault_invalid_json=1.0)
        batch = c.messages.batches.create(requests=requests[:2])  # type: ignore[arg-type]
        wait_until(lambda: c.messages.batches.retrieve(batch.id).processing_status == "ended",
                   30, "the message batch of broken answers to end", interval=0.05)
        for r in c.messages.batches.results(batch.id):
            assert r.result.type == "succeeded"
            with pytest.raises(pydantic.ValidationError):
                Review.model_validate_json(r.result.message.content[0].text)  # type: ignore[union-attr]
