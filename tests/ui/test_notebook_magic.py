"""``notebooks/magic.ipynb`` in a real kernel (nbclient, this interpreter's ipykernel), against
a simulator this test runs itself as the provider (``OPENAI_BASE_URL``/``OPENAI_API_KEY`` in the
kernel's environment: the notebook's "real provider" path): the ``%%llm`` cell answers every
row with the simulator's answer to that row's prompt, leaves the frame unchanged and a summary
with rows and cost behind, ``%llm_runs`` lists the run with the dollars billed by hand from the
simulator's request log, and the key shows in no output and not in the HTML export.

The notebook's helpers (kernel manager, export, summary checks) are ``test_notebooks``'."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from llmbatch_pd import load_reviews
from llmbatch_pd.sim import Simulator
from llmbatch_pd.sim.answers import make_answer, prompt_sha

from ..conftest import KEY, bill
from .test_notebooks import (
    NOTEBOOKS,
    PROVIDER_VARIABLES,
    check_summary,
    errors_of,
    load_tool,
    summaries,
)

nbformat = pytest.importorskip("nbformat")
NotebookClient = pytest.importorskip("nbclient").NotebookClient

PROBE = """\
import json as _json
import pandas as _pd
from llmbatch_pd import load_reviews as _load
print("PROBE " + _json.dumps({
    "labels": [None if _pd.isna(x) else str(x) for x in res["label"]],
    "unchanged": bool(reviews.equals(_load())),
    "columns": [str(c) for c in reviews.columns],
    "index": [int(i) for i in res.index],
}))
"""


def execute_with_probe(path, probe: str):
    """Run every cell of the notebook, then ``probe`` in the same kernel (kept out of the
    returned notebook); the notebook and what the probe printed."""
    tool = load_tool()
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_manager_class=tool.NativeKernelManager, kernel_name="python3",
                            timeout=180, resources={"metadata": {"path": str(path.parent.resolve())}})
    cell = nbformat.v4.new_code_cell(probe)

    async def run() -> None:  # NotebookClient.async_execute, with the probe before the kernel stops
        client.reset_execution_trackers()
        async with client.async_setup_kernel():
            await client.async_wait_for_reply(client.kc.kernel_info())
            for index, each in enumerate(nb.cells):
                await client.async_execute_cell(each, index, execution_count=client.code_cells_executed + 1)
            client.set_widgets_metadata()
            nb.cells.append(cell)
            try:
                await client.async_execute_cell(cell, len(nb.cells) - 1)
            finally:
                nb.cells.pop()

    asyncio.run(run())
    printed = "".join(o.text for o in cell.outputs if o.output_type == "stream")
    return tool, nb, json.loads(printed.split("PROBE ", 1)[1])


def magic_cell(nb, flag: str):
    [cell] = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("%%llm") and flag in c.source]
    return cell


def dollars(text: str) -> float:
    return float(text.replace("$", "").replace(",", ""))


@pytest.mark.slow  # a kernel and 300 requests to the simulator: ~10 s
def test_magic_notebook_against_the_simulator(monkeypatch, private_cache, tmp_path):
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with Simulator(ttft_ms=5, api_key=KEY) as sim:
        monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        tool, nb, probe = execute_with_probe(NOTEBOOKS / "magic.ipynb", PROBE)
        assert all(e["status"] == 200 for e in sim.log)
        log = list(sim.log)
    assert errors_of(nb) == []

    # the template is the body of the %%llm cell
    run = magic_cell(nb, "--out res")
    line, template = run.source.split("\n", 1)
    assert line.split()[:2] == ["%%llm", "reviews"] and "--budget 0.5" in line and "--output label" in line

    # every row's label is the simulator's answer to that row's prompt; rows without a text are
    # not sent (missing values are skipped) and have none
    reviews = load_reviews()
    prompts = [None if text != text else [{"role": "user", "content": template.format(text=text)}]
               for text in reviews["text"]]
    want = [None if p is None else make_answer(p, "gpt-4.1-mini").text for p in prompts]
    assert probe["labels"] == want and probe["index"] == list(reviews.index)
    sent = {e["prompt_sha"] for e in log if e["status"] == 200}
    assert sent == {prompt_sha(p) for p in prompts if p is not None}

    # the input frame is unchanged
    assert probe["unchanged"] and probe["columns"] == list(reviews.columns)

    # the cell leaves a static summary with the rows and the cost
    [summary] = summaries(run)
    answered, _ = check_summary(summary, len(reviews))
    assert answered == sum(label is not None for label in want)
    paid = bill(log)
    cost = re.search(r"^\s+Cost\s+(\$[\d.,]+)", summary["text/plain"], re.MULTILINE)
    assert cost and dollars(cost.group(1)) == pytest.approx(paid, rel=5e-3)

    # %llm_runs lists the run: its rows, answers and dollars; the kernel's total
    [runs_cell] = [c for c in nb.cells if c.cell_type == "code" and c.source.strip() == "%llm_runs"]
    [table] = [o.data for o in runs_cell.outputs if o.output_type == "execute_result"]
    [row] = [r.split() for r in table["text/plain"].splitlines() if "openai/gpt-4.1-mini" in r]
    assert row[1:5] == ["openai/gpt-4.1-mini", "run", f"{len(reviews):,}", f"{answered:,}"], row
    assert dollars(row[8]) == pytest.approx(paid, rel=5e-3) and row[-2] == "done", row
    total = re.search(r"Total spend in this kernel: (\$[\d.,]+)", table["text/plain"])
    assert total and dollars(total.group(1)) == pytest.approx(paid, rel=5e-3)
    assert "openai/gpt-4.1-mini" in table["text/html"] and "<table" in table["text/html"]

    # the estimate cell sent nothing: every request in the log is the run's
    assert len(log) == len(sent) and summaries(magic_cell(nb, "--estimate")) == []

    # no key in any output, the saved widget state, or the HTML export
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    html = tool.to_html(nb)
    (tmp_path / "magic.html").write_text(html, encoding="utf-8")
    for secret in (KEY, KEY[-12:]):
        assert secret not in json.dumps([outputs, nb.metadata]) and secret not in html
    assert "Total spend in this kernel" in html
