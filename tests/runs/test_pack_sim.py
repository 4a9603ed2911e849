"""pack= against the simulator over real HTTP: the simulator answers packed requests by id
(``sim.answers.packed_answer`` is the reference for each row's answer) and drops, duplicates
and invents ids on seeded dice. Counts come from the simulator's request log and pack log,
bills are computed by hand from the price table in conftest."""

import json

import pandas as pd
import pytest

from llmbatch_pd.core import errors
from llmbatch_pd.sim import Simulator
from llmbatch_pd.sim.answers import packed_answer, prompt_sha
from llmbatch_pd.sim.packing import find_packed, row_value
from tests.conftest import KEY, MODEL, bill, wait_until
from tests.runs.test_batch import batch_bill

FAULTS = {"fault_pack_drop": 0.02, "fault_pack_dup": 0.02, "fault_pack_invent": 0.02}
TEMPLATE = "Review {title} with {stars} stars"


@pytest.fixture
def faulty():
    with Simulator(ttft_ms=5, api_key=KEY, seed=7, **FAULTS) as s:
        yield s


def _frame(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"title": [f"item {i}" for i in range(start, start + n)],
                         "stars": [i % 5 for i in range(start, start + n)]})


def _fields(df: pd.DataFrame, i: int) -> dict:
    """Row ``i`` as the packed request must show it (values rendered as text)."""
    return {"title": str(df["title"].iloc[i]), "stars": str(df["stars"].iloc[i])}


def _single_prompts(entries) -> set[str]:
    return {e["prompt_sha"] for e in entries if e["status"] == 200 and "pack_ids_sent" not in e}


def _check_rows(df, out, entries) -> tuple[int, int]:
    """(rows carrying their own packed answer, rows answered by their own single request);
    fails on any row that carries another row's answer."""
    expected = [packed_answer(_fields(df, i)) for i in range(len(df))]
    owner = {answer: i for i, answer in enumerate(expected)}
    singles = _single_prompts(entries)
    own = alone = 0
    for i, answer in enumerate(out["llm_output"]):
        if pd.isna(answer):
            continue
        if answer == expected[i]:
            own += 1
            continue
        assert owner.get(answer, i) == i, f"row {i} carries row {owner.get(answer)}'s answer"
        prompt = [{"role": "user", "content": TEMPLATE.format(**_fields(df, i))}]
        assert prompt_sha(prompt) in singles, f"row {i}'s answer came from no request of its own"
        alone += 1
    return own, alone


def _chat(entries):
    return [e for e in entries if e["path"] == "/v1/chat/completions"]


def test_a_thousand_rows_in_packs_of_ten_against_faulty_ids(faulty):
    llm = {"model": MODEL, "base_url": faulty.base_url, "api_key": KEY}
    df = _frame(1000)
    estimate = df.llm.estimate(TEMPLATE, pilot=30, pack=10, **llm)
    before = len(faulty.log)
    out = df.llm.apply(TEMPLATE, pack=10, progress=False, **llm)
    entries = _chat(faulty.log[before:])

    own, alone = _check_rows(df, out, faulty.log)
    answered = int(out["llm_output"].notna().sum())
    assert answered >= 995 and own + alone == answered
    assert own >= 900
    assert len(entries) <= 160  # the run's own requests, by the simulator's count
    packed = [e for e in entries if "pack_ids_sent" in e]
    assert len(packed) >= 90
    stats = faulty.stats()["packed"]
    assert stats["dropped"] and stats["duplicated"] and stats["invented"]  # the faults did happen
    # every row a pack left unanswered or answered twice was asked again
    again = sum(len(e["pack_ids_sent"]) - sum(e["pack_ids_answered"].count(x) == 1 for x in e["pack_ids_sent"])
                for e in packed)
    assert again > 0

    spent = bill(entries)
    assert out.llm.report.cost == pytest.approx(spent, rel=1e-9)
    expected = float(estimate.loc[MODEL, "cost"])
    assert 0.75 <= expected / spent <= 1.33, (expected, spent)
    assert estimate.loc[MODEL, "requests"] <= 100  # the rows the pilot did not answer, ten a request
    assert 0 <= estimate.loc[MODEL, "pack_agreement"] <= 1


def test_schema_fields_per_row_in_packs(faulty):
    llm = {"model": MODEL, "base_url": faulty.base_url, "api_key": KEY, "progress": False}
    faulty.configure(capture_requests=100)
    df = _frame(60)
    out = df.llm.apply(TEMPLATE, pack=10, schema={"label": str, "score": float}, **llm)
    assert out["label"].notna().all() and out["score"].notna().all()
    assert out["score"].dtype.kind == "f"
    by_title = out.set_index("title")
    packs = [c["body"] for c in faulty.captured if "<rows>" in json.dumps(c.get("body"))]
    assert len(packs) >= 6
    own = 0
    for body in packs:
        fmt = body["response_format"]
        assert fmt["json_schema"]["name"] == "packed_rows"
        assert list(fmt["json_schema"]["schema"]["properties"]["rows"]["items"]["properties"]) == [
            "id", "label", "score"]
        packed = find_packed(body["messages"], fmt)
        for row in packed.rows:
            fields = {k: v for k, v in row.items() if k != "id"}
            expected = row_value(packed, fields)  # the simulator's answer for exactly this row
            got = by_title.loc[fields["title"]]
            own += (got["label"], got["score"]) == (expected["label"], expected["score"])
    assert own >= 50  # the rest were asked again (dropped or duplicated ids) and answered alone
    # the same rows asked again one by one reuse the packed answers: nothing sent
    before = len(faulty.log)
    again = df.llm.apply(TEMPLATE, schema={"label": str, "score": float}, **llm)
    assert len(faulty.log) == before
    pd.testing.assert_frame_equal(again, out)


def test_a_rerun_and_a_later_unpacked_run_reuse_the_packed_answers(faulty):
    llm = {"model": MODEL, "base_url": faulty.base_url, "api_key": KEY, "progress": False}
    df = _frame(50)
    first = df.llm.apply(TEMPLATE, pack=10, usage=True, **llm)
    sent = len(faulty.log)
    assert sent >= 5
    # each row's share of its pack's usage: the shares add up to the bill
    assert first["llm_output_cost"].sum() == pytest.approx(bill(faulty.log))
    assert first["llm_output_input_tokens"].sum() == sum(e["prompt_tokens"] for e in faulty.log)
    first = first[["title", "stars", "llm_output", "llm_output_error"]]
    again = df.llm.apply(TEMPLATE, pack=10, **llm)
    assert len(faulty.log) == sent and again.llm.report.cached == 50
    single = df.llm.apply(TEMPLATE, **llm)
    assert len(faulty.log) == sent and single.llm.report.cached == 50
    assert list(single["llm_output"]) == list(first["llm_output"])
    # a frame with ten new rows sends only those, packed
    more = pd.concat([df, _frame(10, start=50)], ignore_index=True)
    grown = more.llm.apply(TEMPLATE, pack=10, **llm)
    new = faulty.log[sent:]
    assert grown["llm_output"].notna().all()
    assert {x for e in new for x in e.get("pack_ids_sent", [])} <= {str(i) for i in range(1, 11)}
    assert sum(len(e.get("pack_ids_sent", [1])) for e in new) >= 10


def test_budget_reserves_a_packs_worst_case(faulty):
    llm = {"model": MODEL, "base_url": faulty.base_url, "api_key": KEY, "progress": False}
    faulty.configure(ttft_ms=50)
    # a pack of ten rows at max_tokens=400 may answer 10 x 412 tokens: at least $0.0066 at
    # $1.60 per million output tokens. A budget of $0.0095 holds one such worst case, not two:
    # the packs go one at a time, and the bill stays under it.
    out = _frame(40).llm.apply(TEMPLATE, pack=10, budget=0.0095, max_tokens=400, **llm)
    assert out["llm_output"].notna().all()
    assert faulty.stats()["max_in_flight"] == 1
    assert 0 < bill(_chat(faulty.log)) <= 0.0095
    # a budget that covers a single row's worst case ($0.00064) but not a pack's is refused
    # before anything is sent
    before = len(faulty.log)
    with pytest.raises(errors.BudgetError, match="pack="):
        _frame(10, start=100).llm.apply(TEMPLATE, pack=10, budget=0.004, max_tokens=400, **llm)
    assert len(faulty.log) == before


def test_batch_mode_sends_packs_as_batch_lines(faulty):
    llm = {"model": MODEL, "base_url": faulty.base_url, "api_key": KEY, "progress": False}
    faulty.configure(batch_seconds=0.2)
    df = _frame(80)
    out = df.llm.apply(TEMPLATE, pack=10, mode="batch", poll_interval=0.05, **llm)
    lines = [p for p in faulty.packs if p.get("batch")]
    assert len(lines) >= 8 and all(len(p["ids_sent"]) <= 10 for p in lines)
    assert not _chat(faulty.log)  # nothing went in real time
    expected = [packed_answer(_fields(df, i)) for i in range(80)]
    owner = {answer: i for i, answer in enumerate(expected)}
    answers = list(out["llm_output"])
    assert all(pd.notna(a) for a in answers)
    assert all(owner.get(a, i) == i for i, a in enumerate(answers))  # nobody carries another's
    assert sum(a == e for a, e in zip(answers, expected, strict=True)) >= 70
    report = out.llm.report
    assert report.cost == pytest.approx(batch_bill(faulty, report.stats.batch_ids))


def test_pilot_and_several_models_with_pack(faulty):
    llm = {"base_url": faulty.base_url, "api_key": KEY, "progress": False}
    df = _frame(40)
    out = df.llm.apply(TEMPLATE, model=[MODEL, "openai/gpt-4.1-nano"], pack=10, pilot=10, **llm)
    for name in ("gpt-4.1-mini", "gpt-4.1-nano"):
        assert out[f"llm_output_{name}"].notna().all()
    models = {e["model"] for e in faulty.log if "pack_ids_sent" in e}
    assert models == {"gpt-4.1-mini", "gpt-4.1-nano"}


def test_pack_auto_packs_only_where_it_saves(faulty):
    llm = {"model": MODEL, "base_url": faulty.base_url, "api_key": KEY, "progress": False}
    df = _frame(100)
    # a short template: a row's id and braces cost more than the instructions saved
    out = df.llm.apply(TEMPLATE, pack="auto", **llm)
    assert out["llm_output"].notna().all()
    assert not [e for e in faulty.log if "pack_ids_sent" in e] and len(faulty.log) == 100
    # a long rubric before the fields: stated once a pack, at most 20 rows a pack
    rubric = " ".join(f"Rule {i}: weigh delivery, price and quality." for i in range(40)) + "\n"
    before = len(faulty.log)
    out = df.llm.apply(rubric + TEMPLATE, pack="auto", **llm)
    assert out["llm_output"].notna().all()
    sizes = [len(e["pack_ids_sent"]) for e in faulty.log[before:] if "pack_ids_sent" in e]
    assert sizes and max(sizes) == 20
    assert len(faulty.log) - before < 15


def test_estimate_with_a_pilot_compares_packed_and_single_answers(sim):
    """The simulator picks a sentiment option by the row's words both ways (packed rows and
    single prompts alike), but answers free text differently packed (``packed_answer``'s
    words) and alone (sentences): agreement 100 % and 0 %, from the answers themselves."""
    llm = {"model": MODEL, "base_url": sim.base_url, "api_key": KEY}
    words = ["great", "terrible", "loved it", "awful"]
    df = pd.DataFrame({"review": [f"The lamp was {words[i % 4]}, order {i}" for i in range(60)]})
    labels = df.llm.estimate("Answer with positive or negative: {review}", pilot=20, pack=10, **llm)
    assert labels.loc[MODEL, "pack_agreement"] == 1.0
    free = df.llm.estimate("Summarise: {review}", pilot=20, pack=10, **llm)
    assert free.loc[MODEL, "pack_agreement"] == 0.0
    assert "cheaper packed" in free.loc[MODEL, "output_basis"]
    packed = [e for e in sim.log if "pack_ids_sent" in e]
    assert len(packed) == 4 and len(_chat(sim.log)) == 4 + 40  # two pilots, each both ways
    # the estimates count only the rows the pilots did not answer: 40 rows, 10 a request
    assert labels.loc[MODEL, "requests"] == free.loc[MODEL, "requests"] == 4



def test_answers_that_do_not_fit_the_schema_are_asked_again(sim):
    """A packed answer the simulator breaks (JSON cut short, a field dropped) gets its rows
    asked again in smaller packs, then alone, each alone up to schema_retries times."""
    sim.configure(fault_invalid_json=0.4, seed=11)
    llm = {"model": MODEL, "base_url": sim.base_url, "api_key": KEY, "progress": False}
    df = _frame(100)
    out = df.llm.apply(TEMPLATE, pack=10, schema={"label": str, "score": float}, schema_retries=3, **llm)
    assert sim.stats()["by_fault"].get("invalid_json", 0) >= 3
    answered = out["label"].notna() & out["score"].notna()
    assert answered.sum() >= 97
    assert out.loc[~answered, "llm_output_error"].str.contains("schema").all()
    sizes = [len(e["pack_ids_sent"]) for e in sim.log if "pack_ids_sent" in e]
    assert 10 in sizes and any(s < 10 for s in sizes)  # broken packs were split


def test_cancel_keeps_every_row_a_pack_answered():
    with Simulator(ttft_ms=100, api_key=KEY) as sim:
        df = _frame(2000)
        job = df.llm.submit(TEMPLATE, model=MODEL, base_url=sim.base_url, api_key=KEY, progress=False,
                            concurrency=4, pack=10)
        wait_until(lambda: len(sim.log) >= 8, 60, "8 packs answered by the simulator")
        job.cancel()
        out = job.result(timeout=30)
        answered_ids = sum(len(e["pack_ids_answered"]) for e in sim.log if e["status"] == 200)
    done = int(out["llm_output"].notna().sum())
    assert 80 <= done < 2000
    assert done == answered_ids  # every pack sent was answered and its rows kept
    assert all(a == packed_answer(_fields(df, i)) for i, a in enumerate(out["llm_output"]) if pd.notna(a))
    assert out["llm_output_error"].dropna().str.contains("cancelled by the user").all()
