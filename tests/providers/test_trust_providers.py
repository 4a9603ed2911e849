"""What reaches the server, and what a run says it cost: model names behind ``base_url=``, the
field that carries ``max_tokens``, Anthropic's required ``max_tokens``, batch mode where there
is no batch API, and models the price list lacks (with and without a gateway's reported cost).

Every test sends real HTTP to the simulator and checks what it captured or logged; costs are
worked out by hand from the simulator's token counts.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

import llmbatch_pd  # noqa: F401  (registers df.llm)
from llmbatch_pd.core.errors import InputError
from llmbatch_pd.core.types import Request
from llmbatch_pd.providers.registry import make_provider, parse_model
from llmbatch_pd.sim import Simulator
from llmbatch_pd.ui.report import reports_html, reports_markdown, reports_text

KEY = "sk-test-0123456789abcdefSECRET"
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
FRAME = pd.DataFrame({"t": ["red", "green", "blue"]})


@pytest.fixture
def sim():
    with Simulator(ttft_ms=1, api_key=KEY, capture_requests=50) as s:
        yield s


def run(sim, model, frame=FRAME, **kw):
    opts = {"base_url": sim.base_url, "api_key": KEY, "progress": False, **kw}
    return frame.llm.apply("Name a fruit that is {t}.", model=model, **opts)


def sent(sim) -> list[tuple[str, dict]]:
    """(path, JSON body) of every completion request the simulator captured."""
    return [(c["path"], c["body"]) for c in sim.captured if c["path"].endswith(("/completions", "/messages"))]


# -- names: the rule the README writes down ---------------------------------------------------

RULE = [
    # model=, path it must reach, the "model" field sent
    ("openai/gpt-4.1-mini", "/v1/chat/completions", "gpt-4.1-mini"),  # known prefix: stripped
    ("anthropic/claude-haiku-4-5", "/v1/messages", "claude-haiku-4-5"),  # ... and picks the protocol
    ("llama3", "/v1/chat/completions", "llama3"),  # bare: as given
    ("gateway/x", "/v1/chat/completions", "gateway/x"),  # unknown prefix: as given
    ("openrouter/meta-llama/llama-3-8b", "/v1/chat/completions", "openrouter/meta-llama/llama-3-8b"),
    ("openai/openai/gpt-4o", "/v1/chat/completions", "openai/gpt-4o"),  # the escape hatch
    ("openai/anthropic/claude-haiku-4-5", "/v1/chat/completions", "anthropic/claude-haiku-4-5"),
]


@pytest.mark.parametrize("model, path, wire", RULE)
def test_each_kind_of_name_reaches_the_server_as_the_rule_says(sim, model, path, wire):
    out = run(sim, model, max_tokens=9)
    assert out["llm_output"].notna().all()  # answered (cut at 9 tokens, which the error says)
    bodies = sent(sim)
    assert len(bodies) == 3
    for got_path, body in bodies:
        assert got_path == path and body["model"] == wire
        assert body["max_tokens"] == 9  # every server but OpenAI's own reads max_tokens
        assert "max_completion_tokens" not in body
    # the report names the model as the user wrote it, or as it was sent when sent as given
    assert out.llm.report.model == (model if "/" in model else wire)


def test_the_readme_examples_of_the_rule_are_what_is_sent(sim):
    """Every "`X` sends `Y`" in the README is sent so, over the protocol it names."""
    section = README.split("How a name reaches the server", 1)[-1].split("\n## ", 1)[0]
    pairs = re.findall(r"`([\w./-]+)`\s+sends\s+`([\w./-]+)`", section)
    assert len(pairs) >= 3, "the README writes down how names reach the server, with examples"
    for model, wire in pairs:
        sim.reset()
        run(sim, model, frame=FRAME.head(1))
        ((path, body),) = sent(sim)
        assert body["model"] == wire, model
        protocol = "/v1/messages" if model.startswith("anthropic/") else "/v1/chat/completions"
        assert path == protocol, model


def test_without_base_url_a_name_with_an_unknown_prefix_is_refused():
    with pytest.raises(InputError, match="base_url="):
        parse_model("gateway/x")


# -- max_tokens: which field, and Anthropic's default ----------------------------------------


def test_openai_itself_gets_max_completion_tokens_and_batch_lines_always_do():
    """api.openai.com refuses max_tokens on its reasoning models. Nothing is sent here (no
    network in tests): these are the bytes prepare() would put on the wire."""
    request = Request(0, [{"role": "user", "content": "hi"}], {"max_tokens": 5}, key="a" * 32)
    real = make_provider(parse_model("openai/o4-mini"), api_key=KEY)
    assert real.base_url == "https://api.openai.com/v1"
    assert json.loads(real.prepare(request)[2])["max_completion_tokens"] == 5
    azure = make_provider(parse_model("openai/o4-mini"), base_url="https://me.openai.azure.com/openai/v1",
                          api_key=KEY)
    assert "max_completion_tokens" in json.loads(azure.prepare(request)[2])
    for base_url in ("http://127.0.0.1:8000/v1", "https://openrouter.ai/api/v1", "https://api.deepseek.com"):
        body = json.loads(make_provider(parse_model("openai/x"), base_url=base_url, api_key=KEY)
                          .prepare(request)[2])
        assert body["max_tokens"] == 5 and "max_completion_tokens" not in body, base_url
        # a batch job runs on OpenAI's own Batch API, whoever forwards it
        line = json.loads(make_provider(parse_model("openai/x"), base_url=base_url, api_key=KEY)
                          .batch_line(request))
        assert line["body"]["max_completion_tokens"] == 5 and "max_tokens" not in line["body"]


def test_batch_jobs_through_the_simulator_carry_max_completion_tokens(sim):
    out = run(sim, "openai/gpt-4.1-mini", max_tokens=9, mode="batch", poll_interval=0.05)
    assert out["llm_output"].notna().all()  # answered (cut at 9 tokens, which the error says)
    (upload,) = [c for c in sim.captured if c["path"] == "/v1/files"]  # the multipart JSONL file
    lines = [json.loads(x) for x in upload["body"].splitlines() if x.startswith('{"custom_id"')]
    assert len(lines) == 3
    for line in lines:
        assert line["body"]["max_completion_tokens"] == 9 and "max_tokens" not in line["body"]


def test_anthropic_gets_its_required_max_tokens_and_the_readme_says_which(sim):
    run(sim, "anthropic/claude-haiku-4-5")
    assert {body["max_tokens"] for _, body in sent(sim)} == {1024}
    sim.reset()
    run(sim, "anthropic/claude-haiku-4-5", max_tokens=50)
    assert {body["max_tokens"] for _, body in sent(sim)} == {50}
    row = next(line for line in README.splitlines() if line.startswith("| `temperature`, `max_tokens`"))
    assert "1,024" in row and "anthropic/" in row


# -- batch mode where there is no batch API ----------------------------------------------------


@pytest.mark.parametrize("model", ["llama3", "gateway/x", "meta-llama/Llama-3-8B"])
def test_batch_mode_is_refused_for_names_sent_as_given_before_anything_is_sent(sim, model):
    with pytest.raises(InputError, match="no batch API") as caught:
        run(sim, model, mode="batch")
    assert "openai/" in str(caught.value)  # says how to use a server that has one
    assert sim.log == []


# -- models without a price ------------------------------------------------------------------


def test_an_unpriced_model_says_price_unknown_everywhere_a_cost_would_be(sim):
    out = run(sim, "gateway/x", usage=True)
    report = out.llm.report
    text, html, md = report.summary(), report._repr_html_(), report.to_markdown()
    for shown in (text, html, md):
        assert "price unknown" in shown
        assert "$0.00" not in shown.replace("\\$", "$").replace("<span>$</span>", "$")
    assert re.search(r"Cost\s+price unknown", text)
    assert out["llm_output_cost"].isna().all()  # not 0.0: nobody knows


def test_a_gateway_reported_cost_is_the_runs_cost(sim):
    sim.configure(response_cost_per_mtok=2000.0)  # $2,000 per million tokens: big enough to read
    out = run(sim, "gateway/x", usage=True)
    # by hand, from the simulator's own token counts: (prompt + completion) x $0.002
    expected = [(e["prompt_tokens"] + e["completion_tokens"]) * 0.002 for e in sim.log]
    assert len(expected) == 3
    report = out.llm.report
    assert math.isclose(report.cost, sum(expected), rel_tol=1e-9)
    assert sorted(out["llm_output_cost"]) == pytest.approx(sorted(expected))
    assert "price unknown" not in report.summary()
    assert "reported by the provider" in report.summary()


def test_a_reported_cost_wins_over_the_price_list(sim):
    """A priced model behind a gateway that reports its bill: the bill is what was paid."""
    sim.configure(response_cost_per_mtok=1000.0)
    out = run(sim, "openai/gpt-4.1-mini")
    tokens = sum(e["prompt_tokens"] + e["completion_tokens"] for e in sim.log)
    assert math.isclose(out.llm.report.cost, tokens * 0.001, rel_tol=1e-9)
    # gpt-4.1-mini's list price ($0.40 in / $1.60 out per million) would have been far less
    listed = sum(e["prompt_tokens"] * 0.40 + e["completion_tokens"] * 1.60 for e in sim.log) / 1e6
    assert out.llm.report.cost > 100 * listed


def test_several_models_with_one_unpriced_say_the_total_leaves_it_out(sim):
    out = FRAME.llm.apply("Name a fruit that is {t}.", model=["openai/gpt-4.1-mini", "gateway/x"],
                          base_url=sim.base_url, api_key=KEY, progress=False)
    reports = out.llm.report
    for shown in (reports_text(reports), reports_html(reports), reports_markdown(reports)):
        assert "price unknown" in shown  # gateway/x's row
        assert "excludes 1 model" in shown  # the total says what it leaves out
    assert re.search(r"x\s.*price unknown", reports_text(reports))
    # the priced model's cost, by hand from the log: gpt-4.1-mini at $0.40 / $1.60 per million
    priced = [e for e in sim.log if e["model"] == "gpt-4.1-mini"]
    by_hand = sum(e["prompt_tokens"] * 0.40 + e["completion_tokens"] * 1.60 for e in priced) / 1e6
    assert math.isclose(reports[0].cost, by_hand, rel_tol=1e-9)
