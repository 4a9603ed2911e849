"""notebooks/dask_scale_out.ipynb runs headless (nbclient, this interpreter's kernel, as
tests/ui/test_notebooks.py runs the others): a LocalCluster of worker processes and the
simulator it starts itself, with no provider key in the environment. The run's static summary
is left in the apply cell's output (it survives the export), with the right counts; the
simulator's own figures printed by the notebook hold the issue's limits; no key shows."""

from __future__ import annotations

import re

import pytest

from tests.ui.test_notebooks import NOTEBOOKS, PROVIDER_VARIABLES, errors_of, load_tool, summaries

pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")
pytestmark = pytest.mark.slow


@pytest.fixture
def tool(monkeypatch, private_cache):
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return load_tool()


def test_the_dask_notebook_runs_and_leaves_its_summary(tool):
    nb = tool.execute(NOTEBOOKS / "dask_scale_out.ipynb", timeout=300)
    assert not errors_of(nb)
    apply_cell = next(c for c in nb.cells if c.cell_type == "code" and "ddf.llm.apply(" in c.source)
    found = summaries(apply_cell)
    assert len(found) == 1, "the panel's display was not replaced by the run's summary"
    text = found[0]["text/plain"]
    assert re.search(r"Rows\s+600\b", text) and re.search(r"Answered\s+5\d\d\b", text)

    printed = "".join(out.get("text", "") for c in nb.cells for out in c.get("outputs", [])
                      if out.output_type == "stream")
    answered, limited, share = re.search(
        r"([\d,]+) answered, (\d+) answered 429 \(([\d.]+)% of requests\)", printed).groups()
    assert int(answered.replace(",", "")) >= 580 and float(share) <= 5.0
    rows = re.search(r"([\d,]+) rows answered on their own index \(True\), (\d+) skipped", printed)
    assert rows and int(rows.group(1).replace(",", "")) + int(rows.group(2)) == 600

    assert "llmbatch-report" in tool.to_html(nb)  # the summary survives the export
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert "sk-simulator" not in str(out)  # the key is in the source only, never shown
