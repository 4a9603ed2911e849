"""The notebook panel in a real browser: JupyterLab on loopback, driven by headless Chromium
(Playwright, sync API).

One test, in the order a user would go: open ``quickstart.ipynb``, Run > Run All Cells, watch
the ``apply`` panel (ipywidgets, rendered by the jupyterlab_widgets extension) show the
estimate, then progress, then leave the static summary; then add a cell with a long
``submit(confirm=True)`` (3,000 rows at 300 ms a request, 10 at a time): the panel shows the
estimate with Run and Cancel and sends nothing; Run starts it, Cancel stops it, and a following
cell finds the finished rows kept. Screenshots go to ``build/browser_*.png``.

A second test opens a notebook of its own and checks the two newer panels: ``apply`` with
``model=[...]`` (two models side by side: one card with the estimate table, a row per model and a
total row, then a progress line per model, then the combined summary with its total row), and
``submit(mode="batch")`` (the batch job's status word and processed count while it polls, then a
summary naming the job and half price).

Isolation: the server and its kernel get a temporary root (a copy of ``notebooks/``), Jupyter
config, data, runtime, settings and workspace directories, a private ``LLMBATCH_PD_CACHE`` and
no provider key (the notebook starts its own simulator). The server listens on 127.0.0.1 with a
random token; news, update checks and the PyPI extension manager are off, and the browser aborts
every request that is not for the server, so nothing reaches the internet.

Needs Chromium (Debian's ``chromium`` at ``/usr/bin/chromium``, or ``LLMBATCH_PD_CHROMIUM``):
Playwright cannot download its own browsers here. Without it the test is skipped, except under
``CI=true``, where it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROVIDER_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                      "DEEPSEEK_API_KEY", "GEMINI_API_KEY")
JUPYTER_DIRS = ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
                "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR")
# JupyterLab user settings: start the kernel without asking, never fetch news or updates
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}
DARK = {"@jupyterlab/apputils-extension/themes.jupyterlab-settings": {"theme": "JupyterLab Dark"}}
IDLE = re.compile(r"\| Idle")

# -- the long run added to the notebook ----------------------------------------------------

SUBMIT_CELL = """\
import pandas as pd
from llmbatch_pd.sim import Simulator
slow = Simulator(ttft_ms=300).start()
big = pd.concat([reviews] * 10, ignore_index=True)
big["n"] = range(len(big))
job = big.llm.submit("Review {n}: {text}", model="openai/gpt-4.1-mini", output="sentiment",
                     max_tokens=5, concurrency=10, base_url=slow.base_url, api_key="sk-simulator",
                     confirm=True)"""

# The job is done (cancelled), so it can start nothing more; then one row goes through the same
# engine and simulator to another model, to the end: a run that went on after Cancel would send
# during it, and the simulator would have received more than that one request since.
RESULT_CELL = """\
res = job.result(timeout=30)
def received():  # requests the simulator has finished or is answering
    stats = slow.stats()
    return stats["total"] + stats["in_flight"]
sent = received()
probe = pd.DataFrame({"text": ["after cancel"]}).llm.apply(
    "Probe {text}", model="openai/gpt-4.1-nano", base_url=slow.base_url, api_key="sk-simulator",
    progress=False, cache=False)
print(f"KEPT answered={int(res['sentiment'].notna().sum())} rows={len(res)} sent={sent} "
      f"later={received()} done={job.done()} probe={bool(probe['llm_output'].notna().all())}")"""

# Every text a panel or a summary in the page has shown, recorded by the page itself (the
# apply run takes about two seconds: polling from here could miss its stages).
RECORDER = """() => {
  window.__llmbatch = [];
  let pending = false;
  const record = () => {
    pending = false;
    document.querySelectorAll('.llmbatch-panel, .llmbatch-report').forEach(el => {
      const text = (el.classList.contains('llmbatch-panel') ? 'PANEL ' : 'SUMMARY ') + el.innerText;
      if (!window.__llmbatch.includes(text)) window.__llmbatch.push(text);
    });
  };
  new MutationObserver(() => { if (!pending) { pending = true; requestAnimationFrame(record); } })
    .observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def unavailable(reason: str):
    if CI:
        pytest.fail(f"{reason} (CI=true: the browser test must run in CI)")
    pytest.skip(reason)


def chromium_path() -> str:
    """``LLMBATCH_PD_CHROMIUM`` if set, else ``chromium`` on the PATH or at /usr/bin."""
    chosen = os.environ.get("LLMBATCH_PD_CHROMIUM")
    for candidate in [chosen] if chosen else [shutil.which("chromium"), "/usr/bin/chromium"]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    unavailable(f"no Chromium at {chosen}" if chosen else
                "no Chromium: install Debian's chromium (apt-get install chromium) or set "
                "LLMBATCH_PD_CHROMIUM; Playwright cannot download browsers here")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(tmp_path: Path, settings: dict | None = None):
    """A JupyterLab server on loopback over a copy of notebooks/; yields (base url, token).
    ``settings`` adds JupyterLab user settings (e.g. ``DARK``)."""
    root = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    env = {k: v for k, v in os.environ.items() if k not in PROVIDER_VARIABLES}
    for name in JUPYTER_DIRS:
        (tmp_path / name).mkdir()
        env[name] = str(tmp_path / name)
    for rel, values in {**SETTINGS, **(settings or {})}.items():
        path = tmp_path / "JUPYTERLAB_SETTINGS_DIR" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env["LLMBATCH_PD_CACHE"] = str(tmp_path / "cache.sqlite")
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.open_browser=False",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.terminals_enabled=False", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    log_path = tmp_path / "jupyterlab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start in 60 s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.1)
        yield base, token
    finally:
        proc.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def browser_tools():
    """Playwright's expect and sync_playwright, and Debian's Chromium; skipped (failed under
    CI=true) when either is missing."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[dev]')")
    executable = chromium_path()
    BUILD.mkdir(exist_ok=True)
    return expect, sync_playwright, executable


@contextlib.contextmanager
def offline_page(pw, executable: str, base: str):
    """A Chromium page that may reach only the Jupyter server: any other URL is recorded in
    ``outside`` and aborted; page errors are collected in ``errors``."""
    from playwright.sync_api import expect

    browser = pw.chromium.launch(executable_path=executable, args=BROWSER_ARGS, headless=True)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        outside: list[str] = []

        def only_the_server(route):
            url = route.request.url
            if url.startswith((base + "/", base.replace("http", "ws", 1) + "/")):
                route.continue_()
            else:
                outside.append(url)
                route.abort()

        context.route("**/*", only_the_server)
        context.set_default_timeout(30_000)
        expect.set_options(timeout=30_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page, outside, errors
    finally:
        browser.close()


def cell_with(page, source: str):
    """The code cell whose input contains ``source``."""
    return page.locator(".jp-Notebook .jp-CodeCell").filter(
        has=page.locator(".jp-InputArea", has_text=source)).first


def run_new_cell(page, code: str):
    """Add a code cell at the end (command mode, B), type ``code``, run it in place (Ctrl+Enter)."""
    from playwright.sync_api import expect

    cells = page.locator(".jp-Notebook .jp-Cell")
    count = cells.count()
    cells.last.locator(".jp-InputPrompt").click()  # select the cell without editing it
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    expect(cells).to_have_count(count + 1)
    editor = cells.last.locator(".cm-content")
    editor.click()
    page.keyboard.insert_text(code)  # as pasted: no auto-closed brackets, no auto-indent
    expect(editor).to_contain_text(code.splitlines()[-1].strip())
    page.keyboard.press("Control+Enter")
    return cells.nth(count)


@pytest.mark.slow  # about 35 s: JupyterLab, Chromium, a kernel and ~400 simulated requests
@pytest.mark.timeout(180)
def test_panel_in_jupyterlab(tmp_path):
    expect, sync_playwright, executable = browser_tools()

    with jupyterlab(tmp_path) as (base, token), sync_playwright() as pw:
        with offline_page(pw, executable, base) as (page, outside, errors):

            # -- 1. open the notebook, wait for its kernel ---------------------------------
            page.goto(f"{base}/lab/tree/quickstart.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
            status = page.locator(".jp-StatusBar-Widget", has_text=IDLE).first
            expect(status).to_be_visible(timeout=60_000)  # "Python 3 (ipykernel) | Idle"
            page.evaluate(RECORDER)

            # -- 2. Run > Run All Cells: estimate, progress, summary -----------------------
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            apply_cell = cell_with(page, "out = reviews.llm.apply")
            summary = apply_cell.locator(".llmbatch-report")
            expect(summary).to_be_visible(timeout=60_000)
            expect(summary).to_contain_text(re.compile("done", re.I))
            expect(cell_with(page, "out.llm.report").locator(".llmbatch-report")).to_be_visible()
            expect(status).to_be_visible()
            apply_cell.screenshot(path=BUILD / "browser_summary.png")

            seen = page.evaluate("window.__llmbatch")
            panels = [t for t in seen if t.startswith("PANEL ")]
            assert panels, f"the widget panel never rendered (is jupyterlab_widgets installed?): {seen}"
            assert any("Requests" in t and "To send" in t or "Plan:" in t for t in panels), panels
            progress = [int(m.group(1).replace(",", "")) for t in panels
                        for m in [re.search(r"([\d,]+) / 300 rows", t)] if m]
            assert any(0 < n < 300 for n in progress), f"no progress between 0 and 300 rows: {progress}"
            assert any(re.search("running", t, re.I) for t in panels)
            text = summary.inner_text()
            answered = int(re.search(r"Answered\s+([\d,]+)", text).group(1).replace(",", ""))
            failed = int(re.search(r"Failed\s+([\d,]+)", text).group(1).replace(",", ""))
            # skipped rows (missing values) are neither answered nor failed (issue 15 #1)
            skipped = re.search(r"Skipped\s+([\d,]+)", text)
            skipped = int(skipped.group(1).replace(",", "")) if skipped else 0
            assert answered + failed + skipped == 300 and answered >= 270, text
            assert apply_cell.locator(".llmbatch-panel").count() == 0  # replaced by the summary

            # -- 3. a long submit(confirm=True): estimate with Run, nothing sent ------------
            submit_cell = run_new_cell(page, SUBMIT_CELL)
            panel = submit_cell.locator(".llmbatch-panel")
            run_button = panel.locator("button", has_text=re.compile(r"^\s*Run\s*$"))
            cancel_button = panel.locator("button", has_text="Cancel")
            expect(run_button).to_be_visible()
            expect(cancel_button).to_be_visible()
            expect(panel).to_contain_text("Nothing is sent until you click Run")
            expect(panel).to_contain_text("3,000")
            expect(panel).to_contain_text("To send")
            expect(submit_cell.locator(".jp-InputPrompt")).not_to_contain_text("*")  # the cell returned
            submit_cell.screenshot(path=BUILD / "browser_estimate.png")

            # -- 4. Run: progress --------------------------------------------------------
            run_button.click()
            expect(panel).to_contain_text(re.compile("running", re.I))
            expect(run_button).to_be_hidden()
            expect(panel).to_contain_text(re.compile(r"^([3-9]\d|\d{3}|\d,\d{3}) / 3,000 rows", re.M),
                                          use_inner_text=True)  # at least 30 rows done
            submit_cell.screenshot(path=BUILD / "browser_progress.png")

            # -- 5. Cancel: the run stops, finished rows are kept ---------------------------
            cancel_button.click()
            stopped = submit_cell.locator(".llmbatch-report")
            expect(stopped).to_be_visible()
            expect(stopped).to_contain_text(re.compile("cancelled", re.I))
            expect(stopped).to_contain_text("Not sent")
            submit_cell.screenshot(path=BUILD / "browser_cancel.png")

            result_cell = run_new_cell(page, RESULT_CELL)
            output = result_cell.locator(".jp-OutputArea-output", has_text="KEPT")
            expect(output).to_be_visible()
            kept = dict(re.findall(r"(\w+)=(\w+)", output.inner_text()))
            answered, sent = int(kept["answered"]), int(kept["sent"])
            assert kept["rows"] == "3000" and kept["done"] == "True", kept
            assert 0 < answered < 3000, kept
            assert answered >= sent - 10, kept  # requests in flight finished and were kept
            assert kept["probe"] == "True", kept  # the engine still works after Cancel
            assert int(kept["later"]) == sent + 1, kept  # the probe only: the run had stopped
            assert sent < 1500, kept  # it stopped early, well before the end

            assert outside == [], f"the page tried to leave the machine: {outside}"
            assert errors == [], errors


# -- several models side by side, and batch mode ------------------------------------------

# A notebook of its own: one simulator answers both runs (ttft_ms slows the real-time
# requests so the live lines last a few seconds; batch_seconds is how long a batch job takes).
SETUP_CELL = """\
import pandas as pd
import llmbatch_pd
from llmbatch_pd.sim import Simulator
sim = Simulator(ttft_ms=300, batch_seconds=4).start()
endpoint = {"base_url": sim.base_url, "api_key": "sk-simulator"}
df = pd.DataFrame({"text": [f"review number {i}" for i in range(60)]})
TEMPLATE = "Classify the sentiment of this review: {text}"
print("READY")"""

MODELS_CELL = """\
both = df.llm.apply(TEMPLATE, model=["openai/gpt-4.1-mini", "openai/gpt-4.1-nano"], output="sentiment",
                    max_tokens=5, concurrency=4, **endpoint)"""

# another template: the side-by-side run put its answers in the cache
BATCH_CELL = """\
job = df.llm.submit("Batch: classify this review: {text}", model="openai/gpt-4.1-mini", output="sentiment",
                    max_tokens=5, mode="batch", poll_interval=0.05, **endpoint)"""

BATCH_LIVE = re.compile(r"Batch job\s+(validating|in_progress|finalizing)")


def notebook_json(*sources: str) -> str:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"cell{i}", "metadata": {},
              "outputs": [], "source": source} for i, source in enumerate(sources)]
    return json.dumps({"cells": cells, "nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"}}})


@pytest.mark.slow  # about 25 s: JupyterLab, Chromium, a kernel, 120 slow requests, one 4 s batch job
@pytest.mark.timeout(180)
def test_side_by_side_and_batch_in_jupyterlab(tmp_path):
    """``model=[...]``: one card with the estimate table (a row per model and a total row), a
    progress line per model while they run, then the combined summary. ``mode="batch"``: the
    panel shows the job's status while it polls, and the summary names the job and half price."""
    expect, sync_playwright, executable = browser_tools()

    with jupyterlab(tmp_path) as (base, token), sync_playwright() as pw:
        (tmp_path / "notebooks" / "panels.ipynb").write_text(notebook_json(SETUP_CELL, MODELS_CELL))
        with offline_page(pw, executable, base) as (page, outside, errors):

            page.goto(f"{base}/lab/tree/panels.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
            status = page.locator(".jp-StatusBar-Widget", has_text=IDLE).first
            expect(status).to_be_visible(timeout=60_000)
            page.evaluate(RECORDER)

            # -- 1. two models side by side: one card, a line per model, one summary ---------
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            setup_output = cell_with(page, "sim = Simulator").locator(".jp-OutputArea-output")
            expect(setup_output).to_contain_text("READY")
            models_cell = cell_with(page, "both = df.llm.apply")
            live = models_cell.locator(".llmbatch-panel")
            expect(live).to_contain_text(re.compile(r"running", re.I))
            expect(live).to_have_count(1)  # one card for both models
            lines_live = re.compile(r"gpt-4\.1-mini\s+\d+/60.*gpt-4\.1-nano\s+([1-9]|[1-5]\d)/60", re.S)
            expect(live).to_contain_text(lines_live, use_inner_text=True)  # a line per model, in one card
            models_cell.screenshot(path=BUILD / "browser_models_progress.png")
            summary = models_cell.locator(".llmbatch-report")
            expect(summary).to_be_visible()
            expect(live).to_have_count(0)  # replaced by the summary
            expect(summary).to_have_count(1)
            models_cell.screenshot(path=BUILD / "browser_models_summary.png")

            text = summary.inner_text()
            assert "gpt-4.1-mini" in text and "gpt-4.1-nano" in text, text
            assert re.search(r"Total\s+2 models", text), text
            assert re.search(r"\bdone\b", text, re.I), text
            for model in ("gpt-4.1-mini", "gpt-4.1-nano"):  # every row answered by each model
                assert re.search(rf"{re.escape(model)}\s+60\s+0\b", text), text
            assert re.search(r"Total\s+2 models\s+120\s+0\b", text), text

            panels = [t[len("PANEL "):] for t in page.evaluate("window.__llmbatch") if t.startswith("PANEL ")]
            assert panels, "the widget panel never rendered (is jupyterlab_widgets installed?)"
            # the estimate table is the state the card is displayed with; the first update
            # (a tick, 0.1 s, later) turns it into the plan line: the recorder sees the table
            # (tests/ui/test_ui.py pins the table itself; a loaded CI machine may paint only the
            # plan line that follows it, as the single-model test above also accepts)
            tables = [t for t in panels if "Tokens in" in t and "Wall time" in t]
            assert any("gpt-4.1-mini" in t and "gpt-4.1-nano" in t and re.search(r"Total\s+2 models", t)
                       for t in tables) or any("Plan:" in t for t in panels), panels[:3]
            lines = {model: [int(n) for t in panels for n in re.findall(rf"{re.escape(model)}\s+(\d+)/60", t)]
                     for model in ("gpt-4.1-mini", "gpt-4.1-nano")}
            for model, seen in lines.items():
                assert any(0 < n < 60 for n in seen), f"no live line for {model} between 0 and 60: {seen}"
            totals = [int(n) for t in panels for n in re.findall(r"(\d+) / 120 rows over 2 models", t)]
            assert any(0 < n < 120 for n in totals), totals

            # -- 2. batch mode: the job's status while it polls, then the summary ------------
            batch_cell = run_new_cell(page, BATCH_CELL)
            panel = batch_cell.locator(".llmbatch-panel")
            expect(panel).to_contain_text(BATCH_LIVE, use_inner_text=True)
            expect(panel).to_contain_text("half price applies")
            expect(panel).to_contain_text(re.compile(r"Batch job\s+in_progress\s+·\s+([1-9]|[1-5]\d) / 60 "
                                                     r"requests processed"), use_inner_text=True)
            batch_cell.screenshot(path=BUILD / "browser_batch_status.png")
            report = batch_cell.locator(".llmbatch-report")
            expect(report).to_be_visible()
            expect(panel).to_have_count(0)
            batch_cell.screenshot(path=BUILD / "browser_batch_summary.png")
            text = report.inner_text()
            assert re.search(r"Batch jobs\s+completed", text), text
            assert re.search(r"1 job: batch_", text), text
            assert re.search(r"Batch\s+half price", text), text
            assert re.search(r"Answered\s+60\b", text), text
            assert "gpt-4.1-mini · batch" in text, text

            seen = [t for t in page.evaluate("window.__llmbatch") if t.startswith("PANEL ")]
            words = {m.group(1) for t in seen for m in [BATCH_LIVE.search(t)] if m}
            assert "in_progress" in words, words

            assert outside == [], f"the page tried to leave the machine: {outside}"
            assert errors == [], errors


# -- dark theme contrast and the exported HTML (issue 15) ----------------------------------

# A run the budget stops (answers ~1.9x longer than the estimate assumes): green, amber and red
# text in its summary; then two models side by side: the cost per model chart.
DARK_SETUP = """\
import pandas as pd
import llmbatch_pd
from llmbatch_pd.sim import Simulator
sim = Simulator(ttft_ms=20, answer_tokens=190, fault_429=0.05, seed=3).start()
endpoint = {"base_url": sim.base_url, "api_key": "sk-simulator"}
df = pd.DataFrame({"text": [f"review number {i}: the product was fine" for i in range(240)]})
print("READY")"""
DARK_BUDGET = """\
res = df.llm.apply("Classify: {text}", model="openai/gpt-4.1-mini", max_tokens=200, budget=0.05,
                   concurrency=4, cache=False, **endpoint)"""
DARK_MODELS = """\
both = df.head(30).llm.apply("Label: {text}", model=["openai/gpt-4.1-mini", "openai/gpt-4.1-nano"],
                             max_tokens=20, budget=0.5, cache=False, **endpoint)"""
# last (it raises, which stops Run All): the budget refuses the run; the card shows why
DARK_REFUSED = """\
df.llm.apply("Classify: {text}", model="openai/gpt-4.1-mini", max_tokens=200, budget=0.001, **endpoint)"""

# every element of our cards whose text colour is a theme mix: its rendered colour, and the
# first opaque background behind it (the card's, else the page's)
COLOURS = """() => [...document.querySelectorAll('.llmbatch-report [style*="color-mix"], .llmbatch-panel [style*="color-mix"]')]
  .filter(el => el.innerText.trim())
  .map(el => {
    let bg = 'rgba(0, 0, 0, 0)';
    for (let node = el; node; node = node.parentElement) {
      const c = getComputedStyle(node).backgroundColor;
      if (c && c !== 'transparent' && !/rgba\\(.*,\\s*0\\)$/.test(c)) { bg = c; break; }
    }
    if (bg === 'rgba(0, 0, 0, 0)') bg = getComputedStyle(document.body).backgroundColor;
    return [el.innerText.trim().slice(0, 40), getComputedStyle(el).color, bg];
  })"""


def css_rgb(value: str) -> tuple[float, float, float]:
    """``rgb(1, 2, 3)``, ``rgba(...)`` or ``color(srgb 0.1 0.2 0.3)`` (what Chromium computes
    for color-mix) as 0-255 channels; a colour with alpha below 1 fails (we ask for none)."""
    m = re.match(r"rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)", value)
    if m:
        assert m.group(4) in (None, "1"), value
        return tuple(float(m.group(i)) for i in (1, 2, 3))
    m = re.match(r"color\(srgb ([\d.e-]+) ([\d.e-]+) ([\d.e-]+)(?: / ([\d.]+))?\)", value)
    assert m, value
    assert m.group(4) in (None, "1"), value
    return tuple(float(m.group(i)) * 255 for i in (1, 2, 3))


def contrast(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """WCAG 2 contrast ratio of two sRGB colours (0-255 channels)."""
    def lum(rgb):
        def lin(c):
            c /= 255
            return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
        r, g, b = (lin(x) for x in rgb)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b
    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.slow  # about 30 s: JupyterLab (dark theme), Chromium, a kernel, ~250 requests, nbconvert
@pytest.mark.timeout(240)
def test_dark_theme_contrast_and_exported_charts(tmp_path):
    """In JupyterLab's dark theme every green, amber and red text of the cards is >= 4.5:1
    against the background it is drawn on (measured from the rendered colours); the notebook
    saved and exported with nbconvert keeps the charts as well-formed inline SVG."""
    import xml.etree.ElementTree as ET

    expect, sync_playwright, executable = browser_tools()
    with jupyterlab(tmp_path, DARK) as (base, token), sync_playwright() as pw:
        path = tmp_path / "notebooks" / "dark.ipynb"
        path.write_text(notebook_json(DARK_SETUP, DARK_BUDGET, DARK_MODELS, DARK_REFUSED))
        with offline_page(pw, executable, base) as (page, outside, errors):
            page.goto(f"{base}/lab/tree/dark.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
            expect(page.locator(".jp-StatusBar-Widget", has_text=IDLE).first).to_be_visible(timeout=60_000)
            assert page.evaluate("document.body.dataset.jpThemeLight") == "false"  # the dark theme is on
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            budget_cell = cell_with(page, "res = df.llm.apply")
            expect(budget_cell.locator(".llmbatch-report")).to_contain_text(re.compile("stopped", re.I),
                                                                            timeout=120_000)
            models_cell = cell_with(page, "both = df.head(30)")
            expect(models_cell.locator('.llmbatch-report svg[data-chart="cost"]')).to_be_visible(timeout=120_000)
            budget_cell.screenshot(path=BUILD / "browser_dark_budget_stop.png")
            refused_cell = cell_with(page, "budget=0.001")
            card = refused_cell.locator(".llmbatch-report")
            expect(card).to_contain_text(re.compile("refused: over budget", re.I), timeout=60_000)
            expect(card).to_contain_text("not started: the expected cost is above the budget")
            expect(refused_cell.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'],"
                                        " .jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']")
                   .first).to_contain_text("BudgetError")  # and the exception was raised
            assert "Traceback" not in refused_cell.inner_text()  # one line, not the library's frames
            refused_cell.screenshot(path=BUILD / "browser_dark_refused.png")

            measured = page.evaluate(COLOURS)
            ratios = [(text, round(contrast(css_rgb(fg), css_rgb(bg)), 2)) for text, fg, bg in measured]
            colours = {fg for _, fg, _ in measured}
            assert len(colours) >= 3, measured  # green (answered), amber (cost, warnings), red (stopped)
            low = [(t, r) for t, r in ratios if r < 4.5]
            assert not low, f"text under 4.5:1 on the dark theme: {low}"
            assert any("Stopped early" in t or "budget reached" in t for t, _, _ in measured) or len(colours) >= 3

            page.keyboard.press("Control+s")
            expect(page.locator(".jp-mod-dirty")).to_have_count(0)
            assert outside == [], f"the page tried to leave the machine: {outside}"
            assert errors == [], errors

    saved = json.loads(path.read_text())
    assert any("llmbatch-report" in json.dumps(c.get("outputs", [])) for c in saved["cells"]), "outputs not saved"
    html_path = tmp_path / "dark.html"
    subprocess.run([sys.executable, "-m", "nbconvert", "--to", "html", "--output", str(html_path), str(path)],
                   check=True, capture_output=True, timeout=120)
    exported = html_path.read_text()
    charts = re.findall(r"<svg[^>]*llmbatch-chart.*?</svg>", exported, re.S)
    kinds = [re.search(r'data-chart="(\w+)"', svg).group(1) for svg in charts]
    assert "budget" in kinds and "cost" in kinds, kinds
    for svg in charts:
        ET.fromstring(svg)  # well-formed: nothing (such as a <span>) inside SVG text
    # nbconvert passes the HTML through its sanitizer (attributes sorted, SVG attribute names
    # lower-cased, which an HTML parser restores): the picture and its figures stay
    (cost_svg,) = [svg for svg, kind in zip(charts, kinds, strict=True) if kind == "cost"]
    bars = [dict(re.findall(r'([\w-]+)="([^"]*)"', m)) for m in re.findall(r"<rect([^>]*)>", cost_svg)]
    bars = {b["data-model"]: b for b in bars if b.get("data-part") == "cost"}
    assert set(bars) == {"gpt-4.1-mini", "gpt-4.1-nano"}, cost_svg
    mini, nano = (bars[m] for m in ("gpt-4.1-mini", "gpt-4.1-nano"))
    assert float(mini["data-dollars"]) > float(nano["data-dollars"]) > 0  # nano is 4x cheaper
    assert float(nano["width"]) / float(mini["width"]) == pytest.approx(
        float(nano["data-dollars"]) / float(mini["data-dollars"]), rel=1e-3)
