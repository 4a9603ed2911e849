"""The bundled notebooks run headless, as ``make demo`` runs them (``tools/run_notebook.py``:
nbclient, this interpreter's kernel), against the simulator they start themselves when no key
is set; the static summary each run leaves behind has the right counts and survives the export
to HTML (nbconvert).

The kernel inherits this process's environment: the conftest's per-test ``LLMBATCH_PD_CACHE``
(so no answer comes from an earlier run's cache) and no provider key (so no request leaves
this machine).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("nbconvert")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PROVIDER_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                      "DEEPSEEK_API_KEY", "GEMINI_API_KEY")


def load_tool():
    spec = importlib.util.spec_from_file_location("run_notebook", ROOT / "tools" / "run_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tool(monkeypatch, private_cache):
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return load_tool()


def errors_of(nb) -> list:
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "error" or (out.output_type == "stream" and "Traceback" in out.text):
                found.append(out)
    return found


def summaries(cell) -> list[dict]:
    """The static run summaries a cell left behind (the panel's final display)."""
    return [out.data for out in cell.outputs
            if out.output_type == "display_data" and "llmbatch-report" in out.data.get("text/html", "")]


def figure(text: str, label: str) -> int:
    match = re.search(rf"^\s+{label}\s+([\d,]+)", text, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{text}"
    return int(match.group(1).replace(",", ""))


def check_summary(data: dict, rows: int) -> tuple[int, int]:
    """A finished run's summary: static (no widget left behind), done, every row accounted for."""
    assert WIDGET_VIEW not in data  # the live panel was replaced: the summary survives without a kernel
    text = data["text/plain"]
    assert text.splitlines()[0].endswith("· done"), text
    answered, failed = figure(text, "Answered"), figure(text, "Failed")
    # skipped (missing values, too long) and not sent rows have lines of their own (issue 15)
    others = sum(figure(text, label) for label in ("Skipped", "Not sent")
                 if re.search(rf"^\s+{label}\s", text, re.MULTILINE))
    assert figure(text, "Rows") == rows and answered + failed + others == rows, text
    assert answered >= 0.9 * rows, text  # injected faults are retried; only rows without text fail
    assert "Cost" in text and "Throughput" in text
    return answered, failed


def code_cell(nb, starts: str):
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.lstrip().startswith(starts)]
    assert len(cells) == 1, starts
    return cells[0]


@pytest.mark.slow  # a kernel and 300 simulated requests: ~7 s
def test_quickstart_runs_headless_and_exports_its_summary(tool, tmp_path):
    nb = tool.execute(NOTEBOOKS / "quickstart.ipynb", timeout=180)
    assert errors_of(nb) == []
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")

    estimate = code_cell(nb, "TEMPLATE =").outputs
    assert "openai/gpt-4.1-mini" in estimate[0].data["text/plain"] and "batch_cost" in estimate[0].data["text/plain"]

    run = code_cell(nb, "out = reviews.llm.apply")
    found = summaries(run)
    assert len(found) == 1, run.outputs  # one display, updated in place: no stale live panel
    answered, failed = check_summary(found[0], 300)
    assert "budget $0.50" in found[0]["text/plain"]

    report = code_cell(nb, "out.llm.report").outputs[0].data
    assert "llmbatch-report" in report["text/html"]

    facts = code_cell(nb, "from typing import Literal")  # schema=: one typed column per field
    assert len(summaries(facts)) == 1
    table = [o for o in facts.outputs if o.output_type == "execute_result"][0].data["text/plain"]
    assert all(name in table for name in ("sentiment", "topic", "urgent", "stars_guess"))
    dtypes = code_cell(nb, "facts.dtypes").outputs[0].data["text/plain"]
    for line in ("sentiment      category", "urgent          boolean", "stars_guess       Int64"):
        assert line in dtypes, dtypes

    html = tool.to_html(nb)
    (tmp_path / "quickstart.html").write_text(html, encoding="utf-8")
    # the summary is rendered as an output of its own, not only kept inside saved widget state
    rendered = html[html.index('jp-OutputArea-output" data-mime-type="text/html"'):]
    assert '<div class="llmbatch-report' in rendered
    for text in ("Answered", "Failed", "Requests sent", "Cost", f">{answered:,}<", f">{failed:,}<"):
        assert text in rendered, text
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    # the stand-in key is in the source only: no output and no saved widget state shows it
    assert "sk-simulator" not in json.dumps([outputs, nb.metadata])


@pytest.mark.slow  # a kernel and 3 x 60 simulated requests: ~8 s
def test_compare_models_runs_headless(tool):
    nb = tool.execute(NOTEBOOKS / "compare_models.ipynb", timeout=180)
    assert errors_of(nb) == []
    models = ["openai/gpt-4.1-mini", "openai/gpt-4o-mini", "openai/gpt-4.1-nano"]
    table = code_cell(nb, "TEMPLATE =").outputs[0].data["text/plain"]
    assert all(m in table for m in models)

    run = code_cell(nb, "out = sample.llm.apply")  # model=[...]: one call, one display
    found = summaries(run)
    assert len(found) == 1, run.outputs
    text = found[0]["text/plain"]
    assert text.splitlines()[0].endswith("3 models · real time · done"), text
    for model in models:
        line = next(row for row in text.splitlines() if row.strip().startswith(model))
        assert line.split()[1:3] == ["60", "0"], line  # answered, failed
    assert "Total (3 models)" in text and WIDGET_VIEW not in found[0]
    side_by_side = [o for o in run.outputs if o.output_type == "execute_result"][0].data["text/plain"]
    models = [f"answer_{m.split('/')[1]}" for m in models]
    assert all(m in side_by_side for m in models)
