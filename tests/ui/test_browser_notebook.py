"""The ``%%llm`` magic and the counts after a kernel interrupt, in a real browser (issue 15):
JupyterLab on loopback driven by headless Chromium, with the harness of ``test_browser``.

One JupyterLab for the module. Its kernels reach this test's simulator as a real provider
would be reached: ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` come from the kernel spec's
``env`` (a ``python3`` kernel spec on ``JUPYTER_PATH``), so the key is typed in no cell, and
the simulator refuses any other key. The simulator runs in this process: its request log is
the reference the page is checked against.

1. ``notebooks/magic.ipynb`` (``%load_ext llmbatch_pd``, ``%%llm reviews ... --out res``,
   ``%llm_runs``), Run All: the cell leaves a summary with rows and cost, ``res`` holds the
   simulator's answer to every row's prompt, ``%llm_runs`` lists the run with its rows and the
   dollars billed by hand from the simulator's usage, and the key is nowhere in the page.
2. A slow ``%%llm`` run interrupted with Kernel > Interrupt Kernel once the simulator has
   answered some rows: the card's Answered, Failed, Skipped and Not sent add up to its Rows,
   agree with what the simulator answered (a request in flight at the interrupt may count as
   failed), and only the failed rows are red.

Screenshots go to ``build/browser_magic*.png`` and ``build/browser_interrupt.png``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmbatch_pd import load_reviews
from llmbatch_pd.sim import Simulator
from llmbatch_pd.sim.answers import make_answer, prompt_sha

from ..conftest import KEY, PRICES_PER_MTOK, bill, wait_until
from .test_browser import (
    BUILD,
    IDLE,
    browser_tools,
    cell_with,
    jupyterlab,
    notebook_json,
    offline_page,
    run_new_cell,
)

SECRETS = (KEY, KEY[-12:])
RED = "rgb(207, 34, 46)"  # ui.style.RED, the failed part of a card's bar
GREEN = "rgb(26, 127, 55)"  # ui.style.GREEN, the answered part

# -- 1. the magic notebook -----------------------------------------------------------------

# run after the notebook, in its kernel: every row's label to a file beside it (the page keeps
# only a line), and whether the input frame is as loaded
PROBE = """\
import json as _json
import pandas as _pd
from llmbatch_pd import load_reviews as _load
_json.dump([None if _pd.isna(_x) else str(_x) for _x in res["label"]], open("labels.json", "w"))
print(f"PROBE rows={len(res)} unchanged={reviews.equals(_load())} columns={list(reviews.columns) == list(_load().columns)}")"""

# -- 2. the interrupt ----------------------------------------------------------------------

ROWS = 200
CONCURRENCY = 2
INTERRUPT_SETUP = f"""\
%load_ext llmbatch_pd
import pandas as pd
df = pd.DataFrame({{"text": [f"support ticket number {{i}}: the parcel arrived late" for i in range({ROWS})]}})
print("READY")"""
INTERRUPT_RUN = f"""\
%%llm df --model openai/gpt-4.1-mini --output summary --concurrency {CONCURRENCY} --cache off --out slow
Summarise this ticket in five words: {{text}}"""

# the card's bar: each coloured segment's colour and its share of the bar's width
BAR = """(card) => {
  const bar = [...card.querySelectorAll('div')].find(d => d.style.display === 'flex' && d.style.overflow === 'hidden');
  if (!bar) return null;
  const width = bar.getBoundingClientRect().width;
  return [...bar.children].map(s => [getComputedStyle(s).backgroundColor, s.getBoundingClientRect().width / width]);
}"""

# the rendered colour of each figure of the card's table, by its label
FIGURE_COLOURS = """(card) => Object.fromEntries([...card.querySelectorAll('tr')]
  .filter(tr => tr.querySelector('th') && tr.querySelector('td'))
  .map(tr => {
    const td = tr.querySelector('td');
    const figure = td.querySelector('span') || td;
    return [tr.querySelector('th').innerText.trim(), getComputedStyle(figure).color];
  }))"""


def figure(text: str, label: str) -> int | None:
    """The count on the card's line ``label`` (``Answered  1,234 ...``), None without one."""
    m = re.search(rf"^{label}\s+([\d,]+)", text, re.M)
    return int(m.group(1).replace(",", "")) if m else None


def dollars(text: str) -> tuple[float, float]:
    """``$0.0123`` -> (0.0123, half its last shown digit: the rounding it may carry)."""
    value = text.replace("$", "").replace(",", "")
    decimals = len(value.split(".", 1)[1]) if "." in value else 0
    return float(value), 0.5 * 10 ** -decimals


def kernel_spec(where: Path, env: dict[str, str]) -> Path:
    """A ``python3`` kernel spec (this interpreter's ipykernel) whose kernels get ``env``;
    the directory to put first on ``JUPYTER_PATH``."""
    spec = where / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python", "env": env}))
    return where


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The page, the simulator, the notebooks folder, the page's requests that left the
    machine and its errors, and ``open(notebook)``: one JupyterLab, one Chromium page and
    one simulator (which takes only ``KEY``) for the module."""
    expect, sync_playwright, executable = browser_tools()
    expect.set_options(timeout=30_000)
    tmp = tmp_path_factory.mktemp("lab")
    with Simulator(ttft_ms=5, api_key=KEY, capture_requests=1000) as sim, pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(kernel_spec(tmp / "jupyter_path",
                                                  {"OPENAI_BASE_URL": sim.base_url, "OPENAI_API_KEY": KEY})))
        with jupyterlab(tmp) as (base, token), sync_playwright() as pw:
            with offline_page(pw, executable, base) as (page, outside, errors):
                yield SimpleNamespace(page=page, sim=sim, root=tmp / "notebooks", outside=outside, errors=errors,
                                      open=lambda name: open_notebook(page, base, token, name))


def open_notebook(page, base: str, token: str, name: str):
    """Open ``name`` and wait for its kernel; the status bar's "Idle" locator."""
    from playwright.sync_api import expect

    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")  # reset: the notebook opened before is closed
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
    status = page.locator(".jp-StatusBar-Widget", has_text=IDLE).first
    expect(status).to_be_visible(timeout=60_000)
    return status


def run_all(page) -> None:
    """Run > Run All Cells, the notebook first given the focus (a notebook opened after
    another may not have it yet)."""
    page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").first.click()
    menu(page, "Run", "Run All Cells")


def menu(page, top: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(rf"^{top}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{item}$")).click()


def assert_no_secret(page) -> None:
    """The key is in neither the page's text nor its markup."""
    text, markup = page.evaluate("document.body.innerText"), page.content()
    for secret in SECRETS:
        assert secret not in text and secret not in markup, "the API key is in the page"


@pytest.mark.slow  # about 20 s with the module's JupyterLab start: one kernel, 300 simulated requests
@pytest.mark.timeout(240)
def test_magic_in_jupyterlab(lab):
    from playwright.sync_api import expect

    page, sim, root = lab.page, lab.sim, lab.root
    sim.configure(ttft_ms=5)
    sim.reset()
    status = lab.open("magic.ipynb")
    run_all(page)

    # -- the %%llm cell: a summary with rows and cost --------------------------------------
    run = cell_with(page, "--out res")
    summary = run.locator(".llmbatch-report")
    expect(summary).to_contain_text(re.compile(r"\bdone\b", re.I), timeout=90_000, use_inner_text=True)
    runs = cell_with(page, "%llm_runs").locator("table.llmbatch-runs")
    expect(runs).to_be_visible(timeout=60_000)
    expect(status).to_be_visible(timeout=60_000)
    summary.screenshot(path=BUILD / "browser_magic.png")  # the card (the cell also shows the frame)
    cell_with(page, "%llm_runs").screenshot(path=BUILD / "browser_magic_runs.png")

    wait_until(lambda: sim.stats()["in_flight"] == 0, 30, "the simulator to finish its requests")
    log = list(sim.log)
    assert log and all(e["status"] == 200 for e in log), {e["status"] for e in log}
    assert {e["model"] for e in log} == {"gpt-4.1-mini"} and "gpt-4.1-mini" in PRICES_PER_MTOK
    paid = bill(log)  # by hand: the usage the simulator reported, at the list price

    reviews = load_reviews()
    text = summary.inner_text()
    assert figure(text, "Rows") == len(reviews), text
    # every row with a text is answered; those without are skipped (not sent); a prompt two
    # rows share is sent once
    texts = [t for t in reviews["text"] if t == t]
    answered, skipped = figure(text, "Answered"), figure(text, "Skipped") or 0
    assert (answered, skipped) == (len(texts), len(reviews) - len(texts)), text
    assert len(log) == len(set(texts)), (len(log), len(set(texts)))
    assert figure(text, "Failed") == 0 and figure(text, "Not sent") is None, text
    cost = re.search(r"^Cost\s+(\$[\d.,]+)", text, re.M)
    assert cost, text
    shown, rounding = dollars(cost.group(1))
    assert abs(shown - paid) <= rounding + 1e-12, (cost.group(1), paid)

    # -- res: every row's label is the simulator's answer to the prompt it received --------
    [source] = [src for c in json.loads((root / "magic.ipynb").read_text())["cells"]
                for src in ["".join(c["source"])] if src.startswith("%%llm") and "--out res" in src]
    template = source.split("\n", 1)[1].strip()  # the cell's body
    assert "{text}" in template, template
    probe = run_new_cell(page, PROBE).locator(".jp-OutputArea-output", has_text="PROBE")
    expect(probe).to_be_visible()
    assert f"rows={len(reviews)} unchanged=True columns=True" in probe.inner_text(), probe.inner_text()
    labels = json.loads((root / "labels.json").read_text())
    received = {prompt_sha(c["body"]["messages"]): c["body"] for c in sim.captured
                if c["path"].endswith("/chat/completions")}
    assert len(received) == len(log)  # one captured body for each request the log holds
    for text_, label in zip(reviews["text"], labels, strict=True):
        if text_ != text_:  # a missing value: skipped, never sent, no label
            assert label is None
            continue
        messages = [{"role": "user", "content": template.format(text=text_)}]
        body = received.get(prompt_sha(messages))
        assert body is not None, f"the simulator never received the prompt for {text_!r}"
        assert label == make_answer(body["messages"], body["model"].split("/")[-1],
                                    max_tokens=body.get("max_tokens") or body.get("max_completion_tokens")).text
    assert sum(label is not None for label in labels) == answered

    # -- %llm_runs: the run with its rows and dollars; the kernel's total --------------------
    head = runs.locator("thead th").all_inner_texts()
    rows = [dict(zip(head, r.locator("td").all_inner_texts(), strict=True)) for r in runs.locator("tbody tr").all()]
    [row] = rows
    assert row["Model"] == "openai/gpt-4.1-mini" and row["Status"] == "done", row
    assert (row["Rows"], row["Answered"], row["Failed"]) == (f"{len(reviews):,}", f"{answered:,}", "0"), row
    shown, rounding = dollars(row["Cost"])
    assert abs(shown - paid) <= rounding + 1e-12, (row, paid)
    footer = cell_with(page, "%llm_runs").inner_text()
    total = re.search(r"Total spend in this kernel: (\$[\d.,]+) \(1 run\)", footer)
    assert total and abs(dollars(total.group(1))[0] - paid) <= dollars(total.group(1))[1] + 1e-12, footer

    # -- the key shows nowhere -------------------------------------------------------------
    assert_no_secret(page)
    assert lab.outside == [], f"the page tried to leave the machine: {lab.outside}"
    assert lab.errors == [], lab.errors


@pytest.mark.slow  # about 15 s: a kernel, a run of 2 requests at a time at 300 ms each, interrupted
@pytest.mark.timeout(240)
def test_counts_after_a_kernel_interrupt(lab):
    from playwright.sync_api import expect

    page, sim, root = lab.page, lab.sim, lab.root
    (root / "interrupt.ipynb").write_text(notebook_json(INTERRUPT_SETUP, INTERRUPT_RUN))
    status = lab.open("interrupt.ipynb")
    sim.configure(ttft_ms=300)  # ~6 rows a second at 2 in flight: the run lasts ~30 s
    sim.reset()
    run_all(page)
    run = cell_with(page, "%%llm df")
    panel = run.locator(".llmbatch-panel")
    expect(panel).to_contain_text(re.compile("running", re.I), timeout=60_000)

    # interrupt once the simulator has answered a few rows
    def answered_by_sim() -> int:
        return sum(e["status"] == 200 for e in sim.log)

    before = wait_until(lambda: answered_by_sim() >= 8 and answered_by_sim(), 60,
                        "the simulator to answer 8 rows")
    menu(page, "Kernel", "Interrupt Kernel")
    card = run.locator(".llmbatch-report")
    expect(card).to_contain_text(re.compile("interrupted", re.I), timeout=60_000)
    expect(status).to_be_visible(timeout=60_000)
    expect(run.locator(".jp-OutputArea-output", has_text="RunInterrupted")).to_be_visible()
    run.screenshot(path=BUILD / "browser_interrupt.png")
    wait_until(lambda: sim.stats()["in_flight"] == 0, 30, "the simulator to finish or drop its requests")
    log = list(sim.log)
    sim_answered = sum(e["status"] == 200 for e in log)
    received = len(log)

    # the card's counts, as rendered: they add up to the rows
    text = card.inner_text()
    rows, answered, failed = figure(text, "Rows"), figure(text, "Answered"), figure(text, "Failed")
    skipped, not_sent = figure(text, "Skipped") or 0, figure(text, "Not sent") or 0
    assert rows == ROWS, text
    assert answered + failed + skipped + not_sent == rows, text
    assert skipped == 0, text  # no missing values
    # what the simulator answered: every answer the card counts, plus at most the requests that
    # were in flight at the interrupt, which the card counts as failed (interrupted)
    assert before <= sim_answered and answered <= sim_answered <= answered + failed, (text, sim_answered)
    assert failed <= CONCURRENCY, text
    assert received <= answered + failed, (text, received)  # nothing was sent the card does not count
    assert not_sent >= rows - answered - failed and not_sent > 0, text  # the interrupt came mid-run
    if failed:
        assert re.search(r"^Failed\s+\d+\s+interrupted", text, re.M), text
    assert re.search(r"^Not sent\s+[\d,]+\s.*interrupted", text, re.M), text

    # only the failed rows are red: the bar's red part is their share, not the not-sent rows'
    bar = run.locator(".llmbatch-report").evaluate(BAR)
    assert bar, "the card has no bar"
    shares = {colour: share for colour, share in bar}
    assert shares.get(GREEN, 0) == pytest.approx(answered / rows, abs=0.01), bar
    assert shares.get(RED, 0) == pytest.approx(failed / rows, abs=0.01), bar
    assert set(shares) <= {GREEN, RED}, bar
    colours = run.locator(".llmbatch-report").evaluate(FIGURE_COLOURS)
    assert colours["Not sent"] != colours["Failed"] or not failed, colours  # amber, not red
    red_text = page.evaluate("""() => { const e = document.createElement('span');
        e.style.color = 'color-mix(in srgb, var(--jp-error-color1, #d32f2f) 70%, var(--jp-ui-font-color0, #000))';
        document.body.appendChild(e); const c = getComputedStyle(e).color; e.remove(); return c; }""")
    assert colours["Not sent"] != red_text, colours

    # the run's row is in %llm_runs, interrupted, with the same counts
    table = run_new_cell(page, "%llm_runs").locator("table.llmbatch-runs")
    expect(table).to_be_visible()
    head = table.locator("thead th").all_inner_texts()
    [row] = [dict(zip(head, r.locator("td").all_inner_texts(), strict=True)) for r in table.locator("tbody tr").all()]
    assert row["Status"] == "interrupted", row
    assert [int(row[k].replace(",", "")) for k in ("Rows", "Answered", "Failed", "Not sent")] == \
        [rows, answered, failed, not_sent], row
    # its dollars: the simulator's bill, less at most the answers the card never received
    paid, unread = bill(log), max((bill([e]) for e in log), default=0.0) * (sim_answered - answered)
    shown, rounding = dollars(row["Cost"])
    assert paid - unread - rounding - 1e-12 <= shown <= paid + rounding + 1e-12, (row, paid, unread)

    assert_no_secret(page)
    assert lab.outside == [], f"the page tried to leave the machine: {lab.outside}"
    assert lab.errors == [], lab.errors
