"""pack=: the packed request as CONTRACTS C1 spells it, the id checks, the usage split and the
option's checks. Pure parts, nothing sent (the runs against the simulator are in
test_pack_sim.py)."""

import json

import pytest

from llmbatch_pd.core import errors
from llmbatch_pd.core.schema import OutputSchema, PackedSchema
from llmbatch_pd.core.types import Usage
from llmbatch_pd.planning.pilot import agreement
from llmbatch_pd.runs.chat import Run
from llmbatch_pd.runs.chat_spec import chat_spec
from llmbatch_pd.runs.pack import PackedRun
from llmbatch_pd.runs.packing import MAX_AUTO, PREAMBLE, apportion, auto_size, shares, unpack

KEY = "sk-test-0123456789abcdefSECRET"
CONTRACT_SCHEMA = {"type": "object", "properties": {"rows": {"type": "array", "items": {
    "type": "object", "properties": {"id": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["id", "answer"], "additionalProperties": False}}},
    "required": ["rows"], "additionalProperties": False}


def _spec(template="Rate {title} at {price:.2f} for {who}", **options):
    options = {"model": "openai/gpt-4.1-mini", "base_url": "http://127.0.0.1:9", "api_key": KEY,
               "cache": False, "pack": 3, **options}
    return chat_spec(["title", "price", "who"], template, **options)


def _run(rows, **options):
    spec = _spec(**options)
    return PackedRun(spec, lambda: iter(rows), len(rows))


ROWS = [{"title": "Lamp", "price": 12.5, "who": "Ann"}, {"title": "Desk", "price": 80, "who": "Bo"},
        {"title": "Chair", "price": 3.333, "who": "Cy"}, {"title": "Rug", "price": 1, "who": "Di"}]


def test_packed_request_is_the_contracts_shape():
    run = _run(ROWS, system="Be brief.")
    packs = list(run._first_round())
    assert [type(p.index) for p in packs] == [int, int]
    first, last = packs
    assert first.messages[0] == {"role": "system", "content": "Be brief."}
    text = first.messages[-1]["content"]
    head, rows = text.split("\n\n<rows>\n")
    assert head.startswith(PREAMBLE.format(what="that row's answer"))
    assert head.endswith("Rate <title> at <price> for <who>")
    assert rows.endswith("\n</rows>")
    sent = json.loads(rows[: -len("\n</rows>")])
    assert sent == [{"id": "1", "title": "Lamp", "price": "12.50", "who": "Ann"},
                    {"id": "2", "title": "Desk", "price": "80.00", "who": "Bo"},
                    {"id": "3", "title": "Chair", "price": "3.33", "who": "Cy"}]
    assert list(sent[0]) == ["id", "title", "price", "who"]  # the template's order
    fmt = first.params["response_format"]["json_schema"]
    assert fmt["name"] == "packed_rows" and fmt["strict"] is True
    assert fmt["schema"] == CONTRACT_SCHEMA
    # the last pack holds the one row left: a pack of one goes as the row's own request
    assert last.messages[-1]["content"] == "Rate Rug at 1.00 for Di"
    assert "response_format" not in last.params


def test_the_instructions_are_the_same_in_every_pack():
    run = _run([{"title": f"t{i}", "price": i, "who": "x"} for i in range(9)])
    heads = {p.messages[-1]["content"].split("\n\n<rows>\n")[0] for p in run._first_round()}
    assert len(heads) == 1 and len(list(_run(ROWS * 3)._first_round())) == 2  # repeats go once


def test_with_schema_each_item_holds_the_users_fields():
    schema = {"label": str, "score": float}
    packed = PackedSchema(OutputSchema.from_user(schema))
    item = packed.json_schema["properties"]["rows"]["items"]
    assert list(item["properties"]) == ["id", "label", "score"]
    assert item["required"] == ["id", "label", "score"]
    run = _run(ROWS, schema=schema)
    fmt = next(run._first_round()).params["response_format"]["json_schema"]
    assert fmt["name"] == "packed_rows"
    assert fmt["schema"]["properties"]["rows"]["items"]["properties"]["score"]["type"] == "number"
    assert "fields (label, score)" in next(run._first_round()).messages[-1]["content"]


def test_a_schema_field_named_id_is_refused():
    with pytest.raises(errors.InputError, match="'id'"):
        _spec(schema={"id": int, "label": str})


@pytest.mark.parametrize("pack", [0, -2, True, 2.5, "all", "10"])
def test_bad_pack_values_are_refused(pack):
    with pytest.raises(errors.InputError, match="pack="):
        _spec(pack=pack)


def _answer(*items):
    return json.dumps({"rows": list(items)})


def test_unpack_gives_each_row_only_its_own_id():
    packed = PackedSchema()
    text = _answer({"id": "2", "answer": "b"}, {"id": "1", "answer": "a"}, {"id": "3", "answer": "c"})
    answers, problems = unpack(packed, text, 3)
    assert answers == ["a", "b", "c"] and problems == []


def test_missing_duplicated_and_unknown_ids_never_land_on_a_row():
    packed = PackedSchema()
    text = _answer({"id": "1", "answer": "a"},
                   {"id": "2", "answer": "b"}, {"id": "2", "answer": "c"},  # twice: neither is trusted
                   {"id": "9", "answer": "z"},  # never sent
                   {"id": [4], "answer": "w"},  # not an id (a whole number would be: see below)
                   {"id": "5", "answer": 5})  # not an answer string
    answers, problems = unpack(packed, text, 5)
    assert answers == ["a", None, None, None, None]
    assert any("id 2 answered 2 times" in p for p in problems)
    assert any("id 3 missing" in p for p in problems)
    assert any("ids not sent" in p and "9" in p for p in problems)


@pytest.mark.parametrize("schema", [None, {"label": str, "score": float}])
def test_whole_number_ids_are_the_ids_sent(schema):
    """A JSON-mode model that writes ``"id": 1`` for the ``"1"`` it was sent answers row 1;
    ``true`` or ``2.5`` are no ids."""
    packed = PackedSchema(OutputSchema.from_user(schema) if schema else None)
    item = (lambda v: {"label": v, "score": 1.0}) if schema else (lambda v: {"answer": v})
    text = _answer({"id": 1, **item("a")}, {"id": 2.0, **item("b")}, {"id": True, **item("c")},
                   {"id": 2.5, **item("d")}, {"id": "3", **item("e")})
    answers, problems = unpack(packed, text, 3)
    assert [a if a is None or not schema else json.loads(a)["label"] for a in answers] == ["a", "b", "e"]
    assert problems == ["ids not sent: (not an id: 2.5), (not an id: True)"]


def test_a_row_whose_item_fails_the_schema_gets_no_answer():
    packed = PackedSchema(OutputSchema.from_user({"label": str, "score": float}))
    text = _answer({"id": "1", "label": "x", "score": 0.5}, {"id": "2", "label": "y", "score": "high"})
    answers, _ = unpack(packed, text, 2)
    assert json.loads(answers[0]) == {"label": "x", "score": 0.5}
    assert answers[1] is None


@pytest.mark.parametrize("text", [None, "not json", "[]", '{"rows": {"id": "1"}}', '{"answer": "x"}'])
def test_an_answer_not_of_the_packed_shape_is_invalid_output(text):
    with pytest.raises(errors.InvalidOutput):
        unpack(PackedSchema(), text, 2)


def test_shares_add_up_to_the_packs_usage():
    usage = Usage(1001, 97, cached_tokens=513, cache_write_tokens=7, cost=0.0123)
    parts = shares(usage, [10.0, 30.0, 20.0], [5.0, 5.0, 1.0])
    assert sum(p.input_tokens for p in parts) == 1001
    assert sum(p.output_tokens for p in parts) == 97
    assert sum(p.cached_tokens for p in parts) == 513
    assert sum(p.cache_write_tokens for p in parts) == 7
    assert sum(p.cost for p in parts) == pytest.approx(0.0123)
    assert parts[1].input_tokens > parts[2].input_tokens > parts[0].input_tokens
    assert apportion(10, [0.0, 0.0]) == [5, 5]


def test_auto_size_is_bounded_by_answers_context_and_the_cap():
    assert auto_size([50] * 10, 200, 1_000_000, 20) == MAX_AUTO
    assert auto_size([50] * 10, 200, 1_000_000, 988) == 3  # 3,000 output tokens a pack
    assert auto_size([10_000], 1_000, 50_000, 20) == 2  # half the window: 24,000 tokens of rows
    assert auto_size([90_000], 1_000, 128_000, 20) == 1


def test_auto_does_not_pack_when_packing_would_cost_more():
    # a 700-token rubric stated once instead of in every row's prompt: worth packing
    assert auto_size([30] * 10, 800, 1_000_000, 5, single_tokens=[740] * 10) == MAX_AUTO
    # a short template: each row's ids and braces cost more than the instructions saved
    assert auto_size([30] * 10, 150, 1_000_000, 5, single_tokens=[45] * 10) == 1
    # dearer output tips the balance: 12 more output tokens a row at 8x the input price
    assert auto_size([30] * 10, 300, 1_000_000, 5, single_tokens=[110] * 10, output_price_ratio=1) > 1
    assert auto_size([30] * 10, 300, 1_000_000, 5, single_tokens=[110] * 10, output_price_ratio=8) == 1


def test_a_pack_too_long_for_the_window_goes_as_single_requests():
    rows = [{"title": f"{w} " * 3000, "price": 1, "who": "a"} for w in "xyz"]
    run = _run(rows)
    run.spec.context_window = 4000
    sent = list(run._first_round())
    assert len(sent) == 3 and all("<rows>" not in r.messages[-1]["content"] for r in sent)


def test_the_budget_reserves_a_packs_worst_case():
    run = _run(ROWS, budget=1.0, max_tokens=50)
    pack = next(run._first_round())
    assert pack.max_output_tokens == 3 * (50 + 12)
    single = next(Run(_spec(budget=1.0, max_tokens=50, pack=None), lambda: iter(ROWS), 4)._requests())
    assert run.spec.worst_cost(pack) > 2.5 * run.spec.worst_cost(single)


def test_agreement_counts_rows_and_fields():
    text = agreement(["a", "b ", None, "d"], ["a", "b", "c", "x"], 0.4, 1.0)
    assert (text.rows, text.agreed) == (3, 2)
    assert text.rate == pytest.approx(2 / 3) and text.saving == pytest.approx(0.6)
    fields = agreement([{"l": 1, "s": 2}, {"l": 1, "s": 3}], [{"l": 1, "s": 2}, {"l": 2, "s": 3}], 1, 2,
                       ("l", "s"))
    assert fields.rate == 0.5 and fields.fields == {"l": 0.5, "s": 1.0}
    assert "50% agree" in fields.summary()
