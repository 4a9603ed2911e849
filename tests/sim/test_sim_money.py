"""The simulator's money features over real loopback HTTP, with the official SDKs as clients:
packed requests answered by id (and their drop/duplicate/invent faults, counted here from the
answers themselves), prompt caching as OpenAI and Anthropic bill it, the flex tier, and answers
that grow after a number of requests. Expected token counts are worked out by hand from the
simulator's documented rules (``sim/tokens.py``): an ASCII word costs (len + 2) // 4 tokens
(at least 1), a digit run ceil(len / 3), a punctuation mark 1, spaces nothing; a message costs
3 + its role's tokens + its text, and a prompt 3 more. So "word" is 1 token, "system" 2, "user" 1.
"""

from __future__ import annotations

import io
import json
import threading
from collections import Counter
from typing import Any

import anthropic
import openai
import pytest

from llmbatch_pd.sim import SimConfig, Simulator
from llmbatch_pd.sim.__main__ import build_parser, config_from
from llmbatch_pd.sim.answers import find_options, packed_answer
from llmbatch_pd.sim.prompt_cache import message_pieces
from llmbatch_pd.sim.tokens import count_prompt_tokens

from ..conftest import wait_until

KEY = "sk-test-0123456789"
PACKED = {
    "type": "object",
    "properties": {"rows": {"type": "array", "items": {
        "type": "object",
        "properties": {"id": {"type": "string"}, "answer": {"type": "string"}},
        "required": ["id", "answer"], "additionalProperties": False}}},
    "required": ["rows"], "additionalProperties": False,
}
LABELLED = {  # what schema= makes of the item: id plus the user's fields
    "type": "object",
    "properties": {"rows": {"type": "array", "items": {
        "type": "object",
        "properties": {"id": {"type": "string"},
                       "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
                       "stars": {"type": "integer", "minimum": 1, "maximum": 5}},
        "required": ["id", "sentiment", "stars"], "additionalProperties": False}}},
    "required": ["rows"], "additionalProperties": False,
}
INSTRUCTIONS = ("Answer the task below for each row of the JSON array; return one object per row "
                "with the row's id.\n\nSummarise the review <review> of <product>.")
LONG = "word " * 1500  # 1,500 tokens
LONG_SYSTEM = 3 + 2 + 1500  # the system message: 3 + "system" + its text
USER_ROW = 3 + 1 + 2  # a user message "row N": 3 + "user" + "row" + one digit


def oa(sim: Simulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)


def claude(sim: Simulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.anthropic_url, api_key=KEY, max_retries=0)


def pack_text(rows: list[dict[str, Any]], instructions: str = INSTRUCTIONS) -> str:
    """The user message of a packed request, as CONTRACTS C1 spells it."""
    sent = [{"id": str(i), **row} for i, row in enumerate(rows, start=1)]
    return f"{instructions}\n\n<rows>\n{json.dumps(sent, ensure_ascii=False)}\n</rows>"


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "packed_rows", "strict": True,
                                                   "schema": schema}}


def reviews(start: int, n: int) -> list[dict[str, Any]]:
    return [{"review": f"review number {i} of the shop", "product": f"item {i}"}
            for i in range(start, start + n)]


# -- packed requests ---------------------------------------------------------------------


def test_openai_packed_request_answers_every_row_by_id_in_order() -> None:
    rows = reviews(0, 5)
    with Simulator(ttft_ms=0) as sim:
        reply = oa(sim).chat.completions.create(
            model="gpt-4.1-mini", response_format=json_schema(PACKED),  # type: ignore[arg-type]
            messages=[{"role": "system", "content": "You label reviews."},
                      {"role": "user", "content": pack_text(rows)}])
        answered = json.loads(reply.choices[0].message.content or "")["rows"]
        assert [a["id"] for a in answered] == ["1", "2", "3", "4", "5"]
        assert [a["answer"] for a in answered] == [packed_answer(r) for r in rows]
        assert len({a["answer"] for a in answered}) == 5  # the reference tells rows apart
        (entry,) = sim.log
        assert entry["pack_ids_sent"] == entry["pack_ids_answered"] == ["1", "2", "3", "4", "5"]
        assert sim.packs == [{"path": "/v1/chat/completions", "ids_sent": ["1", "2", "3", "4", "5"],
                              "ids_answered": ["1", "2", "3", "4", "5"]}]
        assert sim.stats()["packed"] == {"requests": 1, "rows_sent": 5, "rows_answered": 5,
                                         "dropped": 0, "duplicated": 0, "invented": 0}


def test_json_mode_packs_when_the_prompt_spells_out_a_rows_schema() -> None:
    rows = reviews(0, 3)
    system = f"Reply with JSON matching this JSON schema: {json.dumps(PACKED)}"
    with Simulator(ttft_ms=0) as sim:
        reply = oa(sim).chat.completions.create(
            model="deepseek-chat", response_format={"type": "json_object"},
            messages=[{"role": "system", "content": system},
                      {"role": "user", "content": pack_text(rows)}])
    answered = json.loads(reply.choices[0].message.content or "")["rows"]
    assert answered == [{"id": str(i), "answer": packed_answer(r)} for i, r in enumerate(rows, 1)]


def test_a_rows_schema_without_rows_in_the_prompt_is_an_ordinary_structured_request() -> None:
    with Simulator(ttft_ms=0) as sim:
        reply = oa(sim).chat.completions.create(
            model="gpt-4.1-mini", response_format=json_schema(PACKED),  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "Summarise: the shop was fine"}])
        value = json.loads(reply.choices[0].message.content or "")
        assert isinstance(value["rows"], list)  # filled from the schema, not from rows
        assert sim.packs == [] and "pack_ids_sent" not in sim.log[0]


def test_pack_faults_drop_duplicate_and_invent_ids_at_their_seeded_rates() -> None:
    """100 packs of 10 rows; every figure below is counted from the answers themselves."""

    def run() -> tuple[Counter[str], list[dict[str, Any]], dict[str, int]]:
        seen: Counter[str] = Counter()
        with Simulator(ttft_ms=0, seed=5, fault_pack_drop=0.04, fault_pack_dup=0.04,
                       fault_pack_invent=0.04) as sim:
            client = oa(sim)
            for p in range(100):
                rows = reviews(p * 10, 10)
                sent = {str(i): row for i, row in enumerate(rows, start=1)}
                reply = client.chat.completions.create(
                    model="gpt-4.1-mini", response_format=json_schema(PACKED),  # type: ignore[arg-type]
                    messages=[{"role": "user", "content": pack_text(rows)}])
                answered = json.loads(reply.choices[0].message.content or "")["rows"]
                ids = [a["id"] for a in answered]
                assert sim.log[-1]["pack_ids_answered"] == ids
                seen["dropped"] += sum(1 for i in sent if i not in ids)
                seen["invented"] += sum(1 for i in ids if i not in sent)
                seen["duplicated"] += sum(n - 1 for i, n in Counter(ids).items() if i in sent)
                first: set[str] = set()
                for a in answered:
                    if a["id"] not in sent:
                        continue
                    own = a["answer"] == packed_answer(sent[a["id"]])
                    # An id's first answer is always its own; a wrong one is a second copy.
                    assert own or a["id"] in first
                    seen["wrong copies"] += not own
                    first.add(a["id"])
            return seen, sim.packs, sim.stats()["packed"]

    seen, packs, stats = run()
    for fault in ("dropped", "duplicated", "invented"):
        assert 15 <= seen[fault] <= 75, (fault, seen)  # 4 % of 1,000 rows is 40
        assert stats[fault] == seen[fault]
    assert seen["wrong copies"] == seen["duplicated"]  # every copy carries another row's answer
    assert stats["requests"] == 100 and stats["rows_sent"] == 1000
    assert stats["rows_answered"] == 1000 - seen["dropped"]
    assert run()[1] == packs  # the same seed, the same faults


def test_anthropic_packs_through_output_config_and_a_forced_tool() -> None:
    rows = reviews(0, 3)
    with Simulator(ttft_ms=0) as sim:
        c = claude(sim)
        text = c.messages.create(
            model="claude-sonnet-4-5", max_tokens=2000,
            messages=[{"role": "user", "content": pack_text(rows)}],
            output_config={"format": {"type": "json_schema", "schema": PACKED}},  # type: ignore[call-arg]
        )
        first = json.loads(text.content[0].text)["rows"]  # type: ignore[union-attr]
        tool = c.messages.create(
            model="claude-sonnet-4-5", max_tokens=2000,
            messages=[{"role": "user", "content": pack_text(rows)}],
            tools=[{"name": "packed_rows", "input_schema": PACKED}],  # type: ignore[list-item]
            tool_choice={"type": "tool", "name": "packed_rows"},
        )
        assert tool.stop_reason == "tool_use" and tool.content[0].type == "tool_use"
        second = tool.content[0].input["rows"]  # type: ignore[index]
        expected = [{"id": str(i), "answer": packed_answer(r)} for i, r in enumerate(rows, 1)]
        assert first == second == expected
        assert [p["path"] for p in sim.packs] == ["/v1/messages", "/v1/messages"]


def test_schema_fields_belong_to_the_row_whatever_the_pack() -> None:
    loved = {"review": "I love it, excellent", "product": "kettle"}
    hated = {"review": "terrible, broken on arrival", "product": "toaster"}
    with Simulator(ttft_ms=0) as sim:
        client = oa(sim)

        def ask(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            reply = client.chat.completions.create(
                model="gpt-4.1-mini", response_format=json_schema(LABELLED),  # type: ignore[arg-type]
                messages=[{"role": "user", "content": pack_text(rows)}])
            return json.loads(reply.choices[0].message.content or "")["rows"]

        one = ask([loved, hated])
        two = ask([*reviews(0, 3), hated, loved])
    strip = [{k: v for k, v in a.items() if k != "id"} for a in one]
    assert strip == [{k: v for k, v in two[4].items() if k != "id"},
                     {k: v for k, v in two[3].items() if k != "id"}]
    assert [a["sentiment"] for a in one] == ["positive", "negative"]
    assert all(1 <= a["stars"] <= 5 for a in one + two)


def test_packed_answers_take_the_options_the_instructions_offer() -> None:
    instructions = "Classify the sentiment of <review> as positive, negative or neutral."
    rows = [{"review": "great value, love it"}, {"review": "awful, a waste"}, {"review": "a box"}]
    with Simulator(ttft_ms=0) as sim:
        reply = oa(sim).chat.completions.create(
            model="gpt-4.1-mini", response_format=json_schema(PACKED),  # type: ignore[arg-type]
            messages=[{"role": "user", "content": pack_text(rows, instructions)}])
    answers = [a["answer"] for a in json.loads(reply.choices[0].message.content or "")["rows"]]
    assert answers == ["positive", "negative", "neutral"]
    assert answers == [packed_answer(r, find_options(instructions)) for r in rows]


def test_packed_lines_of_both_batch_apis_are_answered_by_id() -> None:
    rows = reviews(0, 4)
    with Simulator(ttft_ms=0, batch_seconds=0.1, fault_pack_drop=0.3, seed=2) as sim:
        client = oa(sim)
        lines = [{"custom_id": f"pack-{k}", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "gpt-4.1-mini", "response_format": json_schema(PACKED),
                           "messages": [{"role": "user", "content": pack_text(rows)}]}}
                 for k in range(6)]
        data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        file = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
        job = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                    completion_window="24h")
        done = wait_until(lambda: (b := client.batches.retrieve(job.id)).status == "completed" and b,
                          30, "the OpenAI batch to complete", interval=0.05)
        output = client.files.content(done.output_file_id or "").text.splitlines()
        answered = {}
        for raw in output:
            line = json.loads(raw)
            content = line["response"]["body"]["choices"][0]["message"]["content"]
            answered[line["custom_id"]] = [a["id"] for a in json.loads(content)["rows"]]
        c = claude(sim)
        batch = c.messages.batches.create(requests=[{"custom_id": "claude", "params": {  # type: ignore[list-item]
            "model": "claude-sonnet-4-5", "max_tokens": 2000,
            "messages": [{"role": "user", "content": pack_text(rows)}],
            "output_config": {"format": {"type": "json_schema", "schema": PACKED}}}}])
        wait_until(lambda: c.messages.batches.retrieve(batch.id).processing_status == "ended",
                   30, "the message batch to end", interval=0.05)
        (result,) = list(c.messages.batches.results(batch.id))
        claude_ids = [a["id"] for a in json.loads(result.result.message.content[0].text)["rows"]]  # type: ignore[union-attr]
        packs = sim.packs
    by_line = {p["custom_id"]: p for p in packs}
    assert {k: by_line[k]["ids_answered"] for k in answered} == answered
    assert by_line["claude"]["ids_answered"] == claude_ids
    assert all(p["ids_sent"] == ["1", "2", "3", "4"] for p in packs)
    assert {p["batch"] for p in packs} == {job.id, batch.id}
    assert sum(len(p["ids_answered"]) for p in packs) < 7 * 4  # 30 % of the rows dropped


# -- prompt caching: OpenAI dialect ---------------------------------------------------------


def ask_long(client: openai.OpenAI, row: int, model: str = "gpt-4.1-mini",
             system: str = LONG, **extra: Any) -> Any:
    return client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": system},
                               {"role": "user", "content": f"row {row}"}], **extra).usage


# The common prefix of two such prompts: the system message, the user's header and "row":
# 1,505 + 4 + 1 = 1,510 tokens, of which 11 whole 128-token blocks (1,408) can be cached.
CACHED = 1408
PROMPT = LONG_SYSTEM + USER_ROW + 3


def test_openai_caches_prefixes_of_1024_tokens_in_128_token_steps() -> None:
    with Simulator(ttft_ms=0) as sim:
        client = oa(sim)
        first, second, third = (ask_long(client, i) for i in range(3))
        assert first.prompt_tokens == second.prompt_tokens == PROMPT
        assert first.prompt_tokens_details.cached_tokens == 0  # nothing cached before it
        assert second.prompt_tokens_details.cached_tokens == CACHED
        assert third.prompt_tokens_details.cached_tokens == CACHED
        assert [e.get("cached_tokens", 0) for e in sim.log] == [0, CACHED, CACHED]
        assert sim.stats()["prompt_cache"] == {"prompt_tokens": 3 * PROMPT,
                                               "cached_tokens": 2 * CACHED,
                                               "cache_write_tokens": 0}
        # 1,000 words of system prompt: 1,005 + 5 = 1,010 tokens in common, under 1,024.
        short = [ask_long(client, i, system="word " * 1000) for i in range(2)]
        assert [u.prompt_tokens_details.cached_tokens for u in short] == [0, 0]


def test_openai_cache_is_per_model_and_prompt_cache_key() -> None:
    with Simulator(ttft_ms=0) as sim:
        client = oa(sim)
        key = {"extra_body": {"prompt_cache_key": "task-a"}}
        other = {"extra_body": {"prompt_cache_key": "task-b"}}
        cached = [ask_long(client, 0, **key), ask_long(client, 1, **key),
                  ask_long(client, 2, **other), ask_long(client, 3),
                  ask_long(client, 4, model="gpt-4.1-nano", **key)]
        assert [u.prompt_tokens_details.cached_tokens for u in cached] == [0, CACHED, 0, 0, 0]
        assert sim.captured == []  # nothing kept but the log


def test_first_wave_misses_and_entries_expire_after_the_ttl() -> None:
    with Simulator(ttft_ms=1000) as sim:
        client = oa(sim)
        usages: list[Any] = []
        threads = [threading.Thread(target=lambda i=i: usages.append(ask_long(client, i)))
                   for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sim.stats()["max_in_flight"] == 2  # both were in flight at once ...
        assert [u.prompt_tokens_details.cached_tokens for u in usages] == [0, 0]  # ... so missed
        sim.configure(ttft_ms=0)
        assert ask_long(client, 3).prompt_tokens_details.cached_tokens == CACHED
        sim.configure(prompt_cache_ttl_s=0)  # an entry now expires as soon as it is stored
        assert ask_long(client, 4).prompt_tokens_details.cached_tokens == CACHED  # stored at 300 s
        assert ask_long(client, 5).prompt_tokens_details.cached_tokens == 0  # refreshed with 0 s
        sim.configure(prompt_cache_ttl_s=300, prompt_caching=False)
        assert ask_long(client, 6).prompt_tokens_details.cached_tokens == 0


def test_deepseek_models_report_hit_and_miss_tokens() -> None:
    with Simulator(ttft_ms=0) as sim:
        client = oa(sim)
        ask_long(client, 0, model="deepseek-chat")
        usage = ask_long(client, 1, model="deepseek-chat").model_dump()
    assert usage["prompt_cache_hit_tokens"] == CACHED
    assert usage["prompt_cache_miss_tokens"] == PROMPT - CACHED
    assert usage["prompt_tokens_details"]["cached_tokens"] == CACHED


def test_the_cache_counts_tokens_as_the_usage_does() -> None:
    """Whatever the script, the cache's token stream is the prompt count minus the priming."""
    text = "Ổn lắm, giá 1234567 đồng! 好吃 😀 naïve e\u0301 under_score " * 60
    messages = [{"role": "system", "content": text}, {"role": "user", "name": "ann", "content": [
        {"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": "x"}}]}]
    plain = [{"role": "developer", "content": "Rate it_now: 12345 x!! (ok) " * 80}]
    for prompt in (messages, plain):
        counted = sum(sum(message_pieces(m)[1]) for m in prompt)
        assert counted + 3 == count_prompt_tokens(prompt)


def test_openai_batch_lines_read_what_earlier_lines_cached() -> None:
    with Simulator(ttft_ms=0, batch_seconds=0.1) as sim:
        client = oa(sim)
        lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "gpt-4.1-mini", "messages": [
                      {"role": "system", "content": LONG},
                      {"role": "user", "content": f"row {i}"}]}} for i in range(3)]
        data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        file = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
        job = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                    completion_window="24h")
        done = wait_until(lambda: (b := client.batches.retrieve(job.id)).status == "completed" and b,
                          30, "the OpenAI batch to complete", interval=0.05)
        output = [json.loads(x) for x in client.files.content(done.output_file_id or "").text.splitlines()]
    cached = {x["custom_id"]: x["response"]["body"]["usage"]["prompt_tokens_details"]["cached_tokens"]
              for x in output}
    assert cached == {"r0": 0, "r1": CACHED, "r2": CACHED}  # lines are taken in order


# -- prompt caching: Anthropic ----------------------------------------------------------------


def marked(text: str, ttl: str | None = None) -> dict[str, Any]:
    control = {"type": "ephemeral"} | ({"ttl": ttl} if ttl else {})
    return {"type": "text", "text": text, "cache_control": control}


def ask_claude(c: anthropic.Anthropic, row: int, system: list[dict[str, Any]],
               model: str = "claude-sonnet-4-5", user: list[dict[str, Any]] | None = None) -> Any:
    content: Any = user if user is not None else f"row {row}"
    return c.messages.create(model=model, max_tokens=100, system=system,  # type: ignore[arg-type]
                             messages=[{"role": "user", "content": content}]).usage


def test_anthropic_caches_what_cache_control_marks() -> None:
    with Simulator(ttft_ms=0) as sim:
        c = claude(sim)
        first, second = (ask_claude(c, i, [marked(LONG)]) for i in range(2))
        # The marked prefix is the system message: 1,505 tokens; the prompt is 1,514.
        assert (first.cache_creation_input_tokens, first.cache_read_input_tokens) == (LONG_SYSTEM, 0)
        assert first.cache_creation.ephemeral_5m_input_tokens == LONG_SYSTEM
        assert first.cache_creation.ephemeral_1h_input_tokens == 0
        assert first.input_tokens == PROMPT - LONG_SYSTEM == 9
        assert (second.cache_creation_input_tokens, second.cache_read_input_tokens) == (0, LONG_SYSTEM)
        assert second.input_tokens == 9
        hour = ask_claude(c, 0, [marked(LONG, "1h")], model="claude-opus-4-1")
        assert hour.cache_creation.ephemeral_1h_input_tokens == LONG_SYSTEM
        assert [e.get("cache_write_tokens", 0) for e in sim.log] == [LONG_SYSTEM, 0, LONG_SYSTEM]
        unmarked = ask_claude(c, 1, [{"type": "text", "text": LONG}], model="claude-opus-4-1")
        assert (unmarked.cache_read_input_tokens, unmarked.input_tokens) == (0, PROMPT)


def test_anthropic_marks_under_the_models_minimum_are_ignored_silently() -> None:
    with Simulator(ttft_ms=0) as sim:
        c = claude(sim)
        for i in range(2):  # 1,505 tokens: under Haiku 4.5's 4,096
            usage = ask_claude(c, i, [marked(LONG)], model="claude-haiku-4-5-20251001")
            assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (0, 0)
            assert usage.input_tokens == PROMPT
        sim.configure(anthropic_cache_min_tokens={"claude-haiku-4-5": 1500})
        usage = ask_claude(c, 2, [marked(LONG)], model="claude-haiku-4-5-20251001")
        assert usage.cache_creation_input_tokens == LONG_SYSTEM


def test_anthropic_reads_the_longest_cached_breakpoint_and_writes_the_rest() -> None:
    def user(words: int) -> list[dict[str, Any]]:
        return [marked("word " * words + " Row:"), {"type": "text", "text": "row 1"}]

    with Simulator(ttft_ms=0) as sim:
        c = claude(sim)
        # Breakpoint 1: the system message (1,505, 1h). Breakpoint 2: + the user header (4)
        # + 500 words, "Row" and ":" (502) = 2,011, 5m. The prompt adds "row 1" (2) and 3.
        first = ask_claude(c, 0, [marked(LONG, "1h")], user=user(500))
        assert first.cache_creation.ephemeral_1h_input_tokens == LONG_SYSTEM
        assert first.cache_creation.ephemeral_5m_input_tokens == 506
        assert (first.cache_read_input_tokens, first.input_tokens) == (0, 5)
        again = ask_claude(c, 0, [marked(LONG, "1h")], user=user(500))
        assert (again.cache_read_input_tokens, again.cache_creation_input_tokens) == (2011, 0)
        # Another template after the same system prompt: read 1,505, write 4 + 402.
        other = ask_claude(c, 0, [marked(LONG, "1h")], user=user(400))
        assert (other.cache_read_input_tokens, other.cache_creation_input_tokens) == (LONG_SYSTEM, 406)
        assert other.cache_creation.ephemeral_5m_input_tokens == 406


def test_anthropic_refuses_bad_cache_marks() -> None:
    with Simulator(ttft_ms=0) as sim:
        c = claude(sim)
        with pytest.raises(anthropic.BadRequestError, match="A maximum of 4 blocks"):
            ask_claude(c, 0, [marked(f"part {i}") for i in range(5)])
        with pytest.raises(anthropic.BadRequestError, match="cache_control.ttl"):
            ask_claude(c, 0, [marked("text", "2h")])


def test_anthropic_batch_with_one_hour_marks_writes_once_then_reads() -> None:
    with Simulator(ttft_ms=0, batch_seconds=0.1) as sim:
        c = claude(sim)
        batch = c.messages.batches.create(requests=[{"custom_id": f"r{i}", "params": {  # type: ignore[misc]
            "model": "claude-sonnet-4-5", "max_tokens": 100, "system": [marked(LONG, "1h")],
            "messages": [{"role": "user", "content": f"row {i}"}]}} for i in range(3)])
        wait_until(lambda: c.messages.batches.retrieve(batch.id).processing_status == "ended",
                   30, "the message batch to end", interval=0.05)
        usage = {r.custom_id: r.result.message.usage  # type: ignore[union-attr]
                 for r in c.messages.batches.results(batch.id)}
    assert usage["r0"].cache_creation.ephemeral_1h_input_tokens == LONG_SYSTEM
    assert usage["r0"].cache_read_input_tokens == 0
    assert [usage[k].cache_read_input_tokens for k in ("r1", "r2")] == [LONG_SYSTEM] * 2
    assert all(usage[k].input_tokens == 9 for k in ("r1", "r2"))


# -- flex --------------------------------------------------------------------------------------


def test_flex_is_echoed_refused_for_models_without_it_and_unavailable_at_its_rate() -> None:
    with Simulator(ttft_ms=0, flex_slowdown=2.0) as sim:
        client = oa(sim)
        hello = [{"role": "user", "content": "hello"}]
        reply = client.chat.completions.create(model="gpt-4.1-mini", messages=hello,  # type: ignore[arg-type]
                                               service_tier="flex")
        assert reply.service_tier == "flex"
        plain = client.chat.completions.create(model="gpt-4.1-mini", messages=hello)  # type: ignore[arg-type]
        assert plain.service_tier is None
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="gpt-4o-mini", messages=hello,  # type: ignore[arg-type]
                                           service_tier="flex")
        assert refused.value.body["param"] == "service_tier"  # type: ignore[index]
        assert refused.value.body["type"] == "invalid_request_error"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError, match="'cheapest'") as unknown:
            client.chat.completions.create(model="gpt-4.1-mini", messages=hello,  # type: ignore[arg-type]
                                           service_tier="cheapest")  # type: ignore[arg-type]
        assert unknown.value.body["param"] == "service_tier"  # type: ignore[index]
        sim.configure(fault_flex_429=1.0)
        used = sim.stats()["quota_used"]
        with pytest.raises(openai.RateLimitError) as busy:
            client.chat.completions.create(model="o3", messages=hello,  # type: ignore[arg-type]
                                           service_tier="flex")
        assert busy.value.status_code == 429 and busy.value.code == "resource_unavailable"
        assert "Resource Unavailable" in busy.value.message
        assert sim.stats()["quota_used"] == used  # not charged
        assert sim.log[-1]["fault"] == "flex_429" and sim.log[-1]["service_tier"] == "flex"
        ok = client.chat.completions.create(model="o3", messages=hello)  # type: ignore[arg-type]
        assert ok.choices[0].message.content  # the standard tier still answers


# -- answers that grow ---------------------------------------------------------------------------


def test_answers_grow_after_n_answered_requests() -> None:
    with Simulator(ttft_ms=0, answer_tokens=10, answer_tokens_after=(3, 300)) as sim:
        client = oa(sim)
        sizes = []
        for i in range(5):
            reply = client.chat.completions.create(
                model="gpt-4.1-mini", messages=[{"role": "user", "content": f"Describe item {i}"}])
            sizes.append(reply.usage.completion_tokens)  # type: ignore[union-attr]
        label = client.chat.completions.create(model="gpt-4.1-mini", messages=[{
            "role": "user", "content": "Classify as positive, negative or neutral: I love it"}])
        assert sim.stats()["answered"] == 6
    assert all(n <= 15 for n in sizes[:3]) and all(n >= 150 for n in sizes[3:])  # 10 or 300 +-50 %
    text = label.choices[0].message.content or ""
    assert text.startswith("positive. ") and label.usage.completion_tokens >= 150  # type: ignore[union-attr]


# -- knobs ---------------------------------------------------------------------------------------


def test_new_knobs_travel_as_flags_json_and_to_a_subprocess() -> None:
    args = build_parser().parse_args([
        "--answer-tokens-after", "100,400", "--flex-models", "o3,gpt-5",
        "--anthropic-cache-min-tokens", "claude-x=2048,claude-y=512", "--fault-pack-dup", "0.1"])
    cfg = config_from(args)
    assert cfg.answer_tokens_after == (100, 400) and cfg.flex_models == ("o3", "gpt-5")
    assert cfg.anthropic_cache_min_tokens == {"claude-x": 2048, "claude-y": 512}
    assert SimConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert len({cfg, SimConfig.from_dict(cfg.to_dict())}) == 1  # still hashable with a dict knob
    for bad in ({"answer_tokens_after": (1,)}, {"fault_pack_drop": 1.5},
                {"anthropic_cache_min_tokens": {"x": "big"}}):
        with pytest.raises((ValueError, TypeError)):
            SimConfig(**bad)
    with Simulator(process=True, ttft_ms=0, fault_pack_drop=1.0) as sim:
        reply = oa(sim).chat.completions.create(
            model="gpt-4.1-mini", response_format=json_schema(PACKED),  # type: ignore[arg-type]
            messages=[{"role": "user", "content": pack_text(reviews(0, 2))}])
        assert json.loads(reply.choices[0].message.content or "")["rows"] == []
        assert sim.packs == [{"path": "/v1/chat/completions", "ids_sent": ["1", "2"],
                              "ids_answered": []}]
        assert sim.stats()["packed"]["dropped"] == 2
