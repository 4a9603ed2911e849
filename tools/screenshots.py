"""Screenshots of the notebook panel (issue 15) in JupyterLab + headless Chromium, light and dark.

    PYTHONPATH=. .venv/bin/python tools/screenshots.py [--out build/screenshots] [--theme light|dark|both]

Runs a notebook of its own against the loopback simulator (nothing leaves the machine: the
browser aborts every request not for the local server) and saves, per theme:

- ``<theme>_midrun.png``: a run whose answers are ~1.9x longer than the estimate assumed, mid-way:
  the estimate table above the live part, the budget bar with its projected segment, the
  projection line ("at this rate the budget stops the run at about N %"), the over-estimate
  warning and the rows/s sparkline;
- ``<theme>_budget_stop.png``: the same run's summary after the budget stopped it;
- ``<theme>_interrupt.png``: a run interrupted with Kernel > Interrupt, counts adding up;
- ``<theme>_models.png``: ``model=[...]``: the summary with cost per model bars;
- ``<theme>_magic.png``: the summary a ``%%llm`` cell leaves (``%load_ext llmbatch_pd``);
- ``<theme>_runs.png``: ``%llm_runs``: every run of the kernel above, with its dollars;
- ``<theme>_refused.png``: the red card a ``BudgetError`` shows above its traceback.

Uses the harness of ``tests/ui/test_browser.py`` (JupyterLab on loopback, Debian's Chromium).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.ui.test_browser import (  # noqa: E402
    DARK,
    IDLE,
    cell_with,
    chromium_path,
    jupyterlab,
    notebook_json,
    offline_page,
)

SETUP = """\
import pandas as pd
import llmbatch_pd
from llmbatch_pd.sim import Simulator
# answers cut at max_tokens=160 where the estimate assumes half of it: ~1.9x its cost a row; a few 429s
sim = Simulator(ttft_ms=350, answer_tokens=190, fault_429=0.04, seed=3).start()
endpoint = {"base_url": sim.base_url, "api_key": "sk-simulator"}
df = pd.DataFrame({"text": [f"review number {i}: the product was fine" for i in range(240)]})
M = "openai/gpt-4.1-mini"
print("READY")"""

BUDGET = """\
res = df.llm.apply("Classify: {text}", model=M, max_tokens=160, budget=0.05, concurrency=4, cache=False,
                   **endpoint)"""

INTERRUPT = """\
big = df.llm.apply("Summarise: {text}", model=M, max_tokens=20, concurrency=2, cache=False, **endpoint)"""

MODELS = """\
both = df.head(40).llm.apply("Label: {text}", model=[M, "openai/gpt-4.1-nano"], max_tokens=20, budget=0.5,
                             concurrency=8, cache=False, **endpoint)"""

MAGIC_LOAD = "%load_ext llmbatch_pd"

# the template is the cell's body; the endpoint comes from the namespace (--options)
MAGIC = """\
%%llm df.head(40) --model openai/gpt-4.1-mini --output label --max-tokens 20 --budget 0.5 --options endpoint --out labels
Classify this review as positive, negative or neutral: {text}"""

RUNS = "%llm_runs"

REFUSED = """\
df.llm.apply("Classify: {text}", model=M, max_tokens=200, budget=0.01, **endpoint)  # refused: BudgetError"""


def shoot(theme: str, out: Path) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    made = []
    with tempfile.TemporaryDirectory() as tmp, \
            jupyterlab(Path(tmp), DARK if theme == "dark" else None) as (base, token), \
            sync_playwright() as pw:
        (Path(tmp) / "notebooks" / "shots.ipynb").write_text(
            notebook_json(SETUP, BUDGET, INTERRUPT, MODELS, MAGIC_LOAD, MAGIC, RUNS, REFUSED))
        with offline_page(pw, executable, base) as (page, outside, errors):
            page.goto(f"{base}/lab/tree/shots.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
            expect(page.locator(".jp-StatusBar-Widget", has_text=IDLE).first).to_be_visible(timeout=60_000)

            def run(source: str):
                # the cell before has returned: a request queued behind one that raises
                # (the interrupt) would be dropped by the kernel
                expect(page.locator(".jp-CodeCell .jp-InputPrompt", has_text="*")).to_have_count(0, timeout=120_000)
                cell = cell_with(page, source)
                cell.locator(".jp-InputPrompt").click()
                page.keyboard.press("Shift+Enter")
                return cell

            def snap(cell, name: str) -> None:
                path = out / f"{theme}_{name}.png"
                cell.screenshot(path=path)
                made.append(path)

            try:
                scenes(page, expect, run, snap)
            except Exception:
                page.screenshot(path=out / f"{theme}_failed.png", full_page=True)
                raise
            assert outside == [], f"the page tried to leave the machine: {outside}"
            if errors:
                print("page errors:", errors, file=sys.stderr)
    return made


def scenes(page, expect, run, snap) -> None:
    """The cells run one by one, a screenshot at each stage worth seeing."""
    setup = run("sim = Simulator")
    expect(setup.locator(".jp-OutputArea-output")).to_contain_text("READY", timeout=60_000)

    cell = run("res = df.llm.apply")
    panel = cell.locator(".llmbatch-panel")
    # mid-way (40 rows in): the projection says where the budget stops the run
    expect(panel).to_contain_text(re.compile(r"\b([4-9]\d|1\d\d) / 240 rows"), timeout=60_000,
                                  use_inner_text=True)
    expect(panel).to_contain_text("budget stops the run at about")
    snap(cell, "midrun")
    expect(cell.locator(".llmbatch-report")).to_be_visible(timeout=120_000)
    snap(cell, "budget_stop")

    cell = run("big = df.llm.apply")
    expect(cell.locator(".llmbatch-panel")).to_contain_text(re.compile(r"\b([2-9]\d) / 240 rows"),
                                                            timeout=60_000, use_inner_text=True)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Kernel$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Interrupt Kernel$")).click()
    expect(cell.locator(".llmbatch-report")).to_be_visible(timeout=60_000)
    snap(cell, "interrupt")

    cell = run("both = df.head(40)")
    expect(cell.locator('.llmbatch-report svg[data-chart="cost"]')).to_be_visible(timeout=120_000)
    snap(cell, "models")

    run("%load_ext llmbatch_pd")
    cell = run("%%llm df.head(40)")
    report = cell.locator(".llmbatch-report")
    expect(report).to_contain_text(re.compile("done", re.I), timeout=120_000)
    snap(report, "magic")  # the card: the cell also shows the frame it returns
    cell = run("%llm_runs")
    expect(cell.locator("table.llmbatch-runs")).to_be_visible(timeout=60_000)
    snap(cell, "runs")

    cell = run("refused: BudgetError")
    expect(cell.locator(".llmbatch-report")).to_be_visible(timeout=60_000)
    snap(cell, "refused")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "screenshots")
    parser.add_argument("--theme", choices=("light", "dark", "both"), default="both")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for theme in ("light", "dark") if args.theme == "both" else (args.theme,):
        for path in shoot(theme, args.out):
            print(path)


if __name__ == "__main__":
    main()
