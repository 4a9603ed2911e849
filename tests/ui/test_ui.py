"""The UI layer without a browser: formatters, the static report, the widget panel's states,
the display chooser, the tqdm bar, and an nbclient-executed notebook exported with nbconvert."""

from __future__ import annotations

import io
import re
import sys
import textwrap
import time

import ipywidgets as w
import pytest

from llmbatch_pd.core import numbers as fmt
from llmbatch_pd.core.errors import InputError
from llmbatch_pd.core.report import RunReport
from llmbatch_pd.planning import estimate as plan
from llmbatch_pd.planning.estimate import Estimate
from llmbatch_pd.planning.pricing import Price
from llmbatch_pd.transport.engine import EngineStats
from llmbatch_pd.ui import (
    ConsoleProgress,
    choose_display,
    report_html,
    report_markdown,
    report_text,
)
from llmbatch_pd.ui.panel import Panel
from llmbatch_pd.ui.style import AMBER, BLUE, GREEN, RED

EVIL = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'

# -- formatters -----------------------------------------------------------------------------


@pytest.mark.parametrize("value, text", [
    (12.345, "$12.35"), (1234.5, "$1,234.50"), (0.0123, "$0.0123"), (0.000045, "$0.000045"),
    (0.5, "$0.50"), (0.1234, "$0.123"), (0, "$0.00"), (0.99996, "$1.00"), (-0.02, "-$0.02"),
    (None, "—"), (float("nan"), "—"),
])
def test_money(value, text):
    assert fmt.money(value) == text


@pytest.mark.parametrize("value, text", [
    (0, "0"), (950, "950"), (999.6, "1k"), (1234, "1.23k"), (12400, "12.4k"), (123456, "123k"),
    (999_999, "1M"), (1_200_000, "1.2M"), (3_000_000_000, "3B"), (None, "—"),
])
def test_tokens(value, text):
    assert fmt.tokens(value) == text


@pytest.mark.parametrize("value, text", [
    (0.012, "12ms"), (0.4, "0.4s"), (4.25, "4.2s"), (45, "45s"), (59.7, "1m 00s"), (200, "3m 20s"),
    (3900, "1h 05m"), (86_399, "1d 00h"), (200_000, "2d 07h"), (None, "—"), (float("inf"), "—"),
])
def test_duration(value, text):
    assert fmt.duration(value) == text


def test_rate_count_percent():
    assert fmt.rate(35.24) == "35.2 rows/s"
    assert fmt.rate(1234, "requests") == "1,234 requests/s"
    assert fmt.rate(0.05) == "3 rows/min"
    assert fmt.rate(0.0001) == "0.36 rows/h"
    assert fmt.rate(0) == "0 rows/s"
    assert fmt.rate(None) == "—"
    assert fmt.count(12345) == "12,345"
    assert fmt.count(None) == "—"
    assert fmt.percent(0.4213) == "42%"
    assert fmt.percent(0.004) == "0.4%"
    assert fmt.percent(0.996) == "99%"  # unfinished work never shows 100%
    assert fmt.percent(1) == "100%"
    assert fmt.money_range(0.95, 4.1) == "$0.95–$4.10"
    assert fmt.plural(1, "row") == "1 row" and fmt.plural(2000, "row") == "2,000 rows"


# -- fixtures -------------------------------------------------------------------------------


GPT_MINI = Price(0.40, 1.60)  # gpt-4.1-mini's list price, dollars per million tokens in / out


def estimate(*, model: str = "openai/gpt-4.1-mini", rows: int = 1000, duplicates: int = 200,
             cached: int = 50, to_send: int = 750, tokens_each: int = 160, price: Price | None = GPT_MINI,
             budget: float | None = 1.0, rpm: float | None = 300) -> Estimate:
    """A plan made by the real code, with the counts ``Run.plan`` hands ``plan.build``:
    ``to_send`` requests of ``tokens_each`` input tokens each (counted exactly), no pilot.

    The defaults, by hand: 1,000 rows = 800 unique prompts + 200 duplicates; 800 = 50 cached +
    750 to send. Input 750 x 160 = 120,000 tokens (x0.98 / x1.05: 117,600-126,000). Output 100 a
    answer = 75,000 (750 x 1 = 750 to 750 x 4,096 = 3,072,000). Cost 120,000 x $0.40/M + 75,000
    x $1.60/M = $0.048 + $0.12 = $0.168 (low $0.04704 + $0.0012 = $0.04824, high $0.0504 +
    $4.9152 = $4.9656); batch half of each. Wall time: 2 s a request (1 s + 100 tokens at
    100/s); 300 rpm = 5/s < 64 in flight / 2 s = 32/s, so 750 / 5 + 2 = 152 s."""
    return plan.build(model, rows=rows, duplicates=duplicates, cached=cached, skipped=0, too_long=0,
                      input_counts=[tokens_each] * to_send, exact=True, token_counting="exact",
                      price=price, max_tokens=None, concurrency=64, rpm=rpm, tpm=None, budget=budget)


def running_report(**over) -> RunReport:
    r = RunReport(model="openai/gpt-4.1-mini", rows=1000, requests=800, duplicates=200, cached=50)
    r.stats = EngineStats(total=1000)
    for k, v in over.items():
        setattr(r, k, v)
    return r


def finished_report() -> RunReport:
    r = running_report(answered_rows=990, failed_rows=10, skipped=2)
    s = r.stats
    s.started, s.finished = time.monotonic() - 100, time.monotonic()
    s.done, s.failed, s.sent = 740, 10, 790
    s.input_tokens, s.output_tokens, s.cost = 118_000, 60_000, 0.1
    s.by_kind.update({"429": 12, "5xx": 3})
    s.errors.update({EVIL: 7, "timeout | after 120s": 3})
    s.stop_reason = "budget reached: $1.00 <b>"
    r.saved_by_cache, r.saved_by_dedup = 0.01, 0.02
    return r


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def all_widgets(panel: Panel) -> list[w.Widget]:
    found: list[w.Widget] = []

    def walk(widget: w.Widget) -> None:
        found.append(widget)
        for part in ("layout", "style"):
            sub = getattr(widget, part, None)
            if isinstance(sub, w.Widget):
                found.append(sub)
        for child in getattr(widget, "children", ()):
            walk(child)

    walk(panel.widget)
    return found


def count_changes(panel: Panel) -> list:
    changes: list = []
    for widget in all_widgets(panel):
        widget.observe(changes.append)
    return changes


# -- the static report ----------------------------------------------------------------------


def test_report_html_escapes_and_is_self_contained():
    r = finished_report()
    r.model = "evil/<b>model</b>"
    out = report_html(r, estimate())
    assert "<script" not in out and "<img" not in out and "<b>model" not in out
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in out
    assert "evil/&lt;b&gt;model&lt;/b&gt;" in out
    assert "budget reached: <span>$</span>1.00 &lt;b&gt;" in out
    assert "http" not in out and "@import" not in out  # no external resources
    for label in ("Answered", "Failed", "Requests sent", "Duplicates", "Cached", "Errors by kind",
                  "Tokens", "Cost", "Saved", "Wall time", "Throughput", "Stopped early", "Top errors"):
        assert label in out
    # MathJax would typeset "$0.10 ... $0.123" as math: no text run holds two dollar signs
    for run in re.findall(r">([^<>]*)<", out):
        assert run.count("$") <= 1
    assert "429 ×12 · 5xx ×3" in out and "×7" in out


def test_report_markdown_and_text():
    r = finished_report()
    md = report_markdown(r, estimate())
    # 10 rows without an answer: 2 skipped for a missing value (not sent, not failures), 8 failed
    assert "| Failed | 8 |" in md and "| Skipped | 2 (not sent: missing values 2) |" in md
    assert "timeout \\| after 120s" in md  # pipes cannot break the table
    assert "&lt;script&gt;" in md and "<script" not in md
    assert "\\$0.10" in md and " $0.1" not in md.replace("\\$", "")  # no bare $ for MathJax
    text = report_text(r, estimate())
    assert "expected $0.168, range $0.0482–$4.97" in text
    assert "$0.01 by the cache · $0.02 by de-duplication" in text
    assert "Stopped early" in text and EVIL in text  # plain text is not HTML: kept as is
    assert text.splitlines()[0].endswith("· stopped")


def test_rows_not_sent_are_shown_apart_from_failures():
    r = running_report(answered_rows=90, failed_rows=910, not_sent=900)
    s = r.stats
    s.started, s.finished = time.monotonic() - 10, time.monotonic()
    s.stop_reason = "cancelled from the panel"
    text = report_text(r, cancelled=True)
    assert re.search(r"Failed\s+10\b", text) and re.search(r"Not sent\s+900\s+\(the run stopped", text)
    assert re.search(r"Throughput\s+9 rows/s", text)  # answered rows only: 90 in 10 s (issue 15)
    html = report_html(r)
    assert "Not sent" in html and "width:1.00%;background:" + RED in html  # 10 of 1,000 red
    p = Panel(r, estimate())
    p.finish()
    assert p.progress.value == 100 and "100</b> / 1,000 rows" in p.progress_label.value


def test_report_without_estimate_or_stats():
    r = RunReport(model="m", rows=0)
    assert "Wall time" in report_text(r)
    assert "llmbatch-report" in report_html(r)
    r.estimate = estimate(price=None)
    assert re.search(r"Cost\s+price unknown", report_text(r))  # the report's own estimate is used


# -- the panel ------------------------------------------------------------------------------


def test_panel_shows_estimate_before_the_run():
    p = Panel(running_report(), estimate(), on_cancel=lambda: None)
    assert "ESTIMATE" in p.header.value.upper()
    plan = p.plan.value
    for text in ("Requests", "800", "Cache hits", "120k", "$0.168", "$0.0482–$4.97", "$1.00", "~2m 32s"):
        assert text in plan
    # 800 unique prompts, 50 of them cached: 750 to send (not 700)
    assert re.search(r">To send</th><td[^>]*>(<span[^>]*>)?750<", plan)
    assert p.budget == 1.0 and p.budget_bar.layout.display is None
    assert p.progress.value == 0 and p.progress.max == 1000
    assert "waiting to start" in p.progress_label.value
    assert p.summary.layout.display == "none"


def test_panel_progress_counts_and_budget_colour():
    clock = Clock()
    r = running_report()
    p = Panel(r, estimate(), budget=1.0, clock=clock)
    s = r.stats
    s.started = time.monotonic() - 5
    r.answered_rows, r.failed_rows = 400, 20
    s.retrying, s.in_flight, s.cost = 3, 16, 0.5
    s.by_kind.update({"429": 4, "5xx": 2, "timeout": 1})
    s.errors.update({EVIL: 20})
    s.input_tokens, s.output_tokens = 12_400, 5_000
    clock.t += 1
    p.update()
    assert p.progress.value == 420 and p.progress.max == 1000
    assert "RUNNING" in p.header.value.upper()
    assert p.progress.style.bar_color == BLUE
    assert "420</b> / 1,000 rows · 42%" in p.progress_label.value and "ETA" in p.progress_label.value
    counts = p.counts.value
    for text in ("400</b> answered", "20</b> failed", "3</b> retrying", "429 ×4", "5xx ×2", "timeout ×1",
                 "12.4k in", "$0.50 of $1.00"):
        assert text in counts
    assert "&lt;script&gt;" in p.errors.value and "<script" not in p.errors.value
    assert p.budget_bar.value == 0.5 and p.budget_bar.style.bar_color == BLUE
    s.cost = 0.79
    clock.t += 1
    p.update()
    assert p.budget_bar.style.bar_color == BLUE
    s.cost = 0.80
    clock.t += 1
    p.update()
    assert p.budget_bar.style.bar_color == AMBER and "80%" in p.budget_label.value
    s.cost = 1.0
    clock.t += 1
    p.update()
    assert p.budget_bar.style.bar_color == RED


def test_cancel_calls_back_once_and_writes_no_widget_from_the_click():
    calls = []
    clock = Clock()
    r = running_report()
    r.stats.started = time.monotonic()
    p = Panel(r, None, on_cancel=lambda: calls.append(1), clock=clock)
    changes = count_changes(p)
    p.cancel_button.click()  # as a click delivered on the kernel's shell thread would
    assert calls == [1] and p.cancelled
    assert changes == []  # the click wrote nothing; the next update shows it
    p.cancel_button.click()
    assert calls == [1]
    p.update()  # forced: not throttled after a click
    assert p.cancel_button.disabled and p.cancel_button.description == "Stopping…"
    assert "STOPPING" in p.header.value.upper() and "Stopping" in p.note.value


def test_cancel_callback_error_is_shown_not_raised():
    def boom():
        raise RuntimeError("engine gone")

    p = Panel(running_report(), None, on_cancel=boom)
    p.cancel_button.click()
    p.update()
    assert "Cancel failed: RuntimeError: engine gone" in p.note.value


def test_finish_shows_summary_and_disables_cancel():
    r = finished_report()
    p = Panel(r, estimate(), on_cancel=lambda: None)
    p.finish()
    assert p.summary.layout.display is None and p.counts.layout.display == "none"
    assert p.cancel_button.disabled and p.actions.layout.display == "none"
    assert "Errors by kind" in p.summary.value and "&lt;script&gt;" in p.summary.value
    assert "STOPPED" in p.header.value.upper() and p.progress.style.bar_color == RED
    assert p.progress.value == 1000
    renders = p.renders
    p.finish()
    p.close()
    p.update()
    assert p.renders == renders  # finished: nothing more is written


def test_finish_of_a_clean_run_is_green():
    r = running_report(answered_rows=1000)
    r.stats.started, r.stats.finished = time.monotonic() - 3, time.monotonic()
    p = Panel(r, estimate())
    p.close()
    assert "DONE" in p.header.value.upper() and p.progress.style.bar_color == GREEN
    assert "100%" in p.progress_label.value


def test_updates_are_throttled_and_send_only_changes():
    clock = Clock()
    r = running_report()
    s = r.stats
    s.started = time.monotonic()
    p = Panel(r, estimate(), budget=1.0, clock=clock)
    p.update()
    changes = count_changes(p)
    renders = p.renders
    for i in range(1000):  # a tight loop: 1,000 calls within 0.1 s, every counter moving
        r.answered_rows = i
        s.cost = i / 2000
        s.input_tokens += 100
        clock.t += 0.0001
        p.update()
    assert p.renders - renders <= 1
    assert len(changes) <= 12, [c["name"] for c in changes]
    # four renders a second at most
    renders = p.renders
    for _ in range(100):
        clock.t += 0.01
        p.update()
    assert p.renders - renders <= 4
    # no counter moved: only the pace and ETA line (time passes) may be sent
    s.finished = s.started + 10  # freeze the elapsed time
    clock.t += 1
    p.update()
    changes.clear()
    clock.t += 1
    p.update()
    assert all(c["owner"] is p.progress_label for c in changes)


@pytest.fixture
def shown(monkeypatch):
    """What IPython.display was asked to show: "live" (with "raw" and "id"), then "final"."""
    import IPython.display

    seen: dict = {}

    class Handle:
        def update(self, obj, raw=False):
            seen["final"] = obj

    def fake_display(obj, raw=False, display_id=None):
        seen["live"], seen["raw"], seen["id"] = obj, raw, display_id
        return Handle()

    monkeypatch.setattr(IPython.display, "display", fake_display)
    return seen


def test_show_and_export_bundles(shown):
    view = "application/vnd.jupyter.widget-view+json"

    p = Panel(finished_report(), estimate()).show()
    assert shown["raw"] and shown["id"] is True
    assert shown["live"][view]["model_id"] == p.widget.model_id
    assert "llmbatch-report" in shown["live"]["text/html"]  # a mid-run save shows the plan
    p.finish()
    assert set(shown["final"]) == {"text/html", "text/plain"}  # survives nbconvert and reloads
    assert "Errors by kind" in shown["final"]["text/html"] and "Errors by kind" in shown["final"]["text/plain"]
    assert p.widget.comm is None  # its models were freed

    p = Panel(finished_report(), estimate(), keep_widget=True).show()
    p.finish()
    assert set(shown["final"]) == {view, "text/html", "text/plain"}
    assert shown["final"][view]["model_id"] == p.widget.model_id


def test_run_button_only_with_on_run():
    p = Panel(running_report(), estimate(), on_cancel=lambda: None)
    assert p.run_button not in p.actions.children and not p.waiting
    assert "interrupt the kernel" in p.hint.value
    p = Panel(running_report(), estimate(), on_cancel=lambda: None, background=True)
    assert "background" in p.hint.value and "interrupt" not in p.hint.value


def test_run_button_waits_then_starts_once_and_writes_no_widget_from_the_click():
    calls = []
    clock = Clock()
    r = running_report()
    p = Panel(r, estimate(), on_cancel=lambda: None, on_run=lambda: calls.append(1), background=True,
              clock=clock)
    assert list(p.actions.children[:2]) == [p.run_button, p.cancel_button]
    assert p.waiting and p.run_button.layout.display is None and not p.run_button.disabled
    assert p.run_button.button_style == "primary"
    assert "ESTIMATE" in p.header.value.upper() and "Requests" in p.plan.value  # the full plan
    assert "Nothing is sent until you click Run" in p.hint.value
    assert "waiting for Run" in p.progress_label.value
    changes = count_changes(p)
    p.run_button.click()  # as a click delivered on the kernel's shell thread would
    assert calls == [1] and not p.waiting
    assert changes == []  # the run that starts renders the panel, not the click
    p.run_button.click()
    assert calls == [1]
    p.update()  # forced after the click
    assert p.run_button.layout.display == "none" and p.cancel_button.layout.display is None
    assert "starting" in p.progress_label.value and "background" in p.hint.value
    r.stats.started = time.monotonic()
    r.answered_rows = 10
    clock.t += 1
    p.update()
    assert "RUNNING" in p.header.value.upper() and p.progress.value == 10
    p.finish()
    assert p.actions.layout.display == "none"


def test_cancel_before_run_hides_run_and_a_late_run_click_does_nothing():
    calls = []
    p = Panel(running_report(), estimate(), on_cancel=lambda: calls.append("cancel"),
              on_run=lambda: calls.append("run"))
    p.cancel_button.click()
    p.run_button.click()
    assert calls == ["cancel"] and not p.waiting
    p.update()
    assert p.run_button.layout.display == "none" and p.cancel_button.disabled
    p.finish()
    assert "CANCELLED" in p.header.value.upper()


def test_run_callback_error_is_shown_and_run_can_be_clicked_again():
    attempts = []

    def start():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("engine gone")

    p = Panel(running_report(), estimate(), on_cancel=lambda: None, on_run=start)
    p.run_button.click()
    assert "Run failed: RuntimeError: engine gone" in p.note.value  # rendered by the click itself
    assert p.waiting and p.run_button.layout.display is None
    p.run_button.click()
    assert len(attempts) == 2 and not p.waiting


def _rows(n):
    import pandas as pd

    return pd.DataFrame({"t": [f"confirm row {i}" for i in range(n)]})


PROBE_MODEL = "gpt-4.1-nano"  # the job's rows go to gpt-4.1-mini: the log tells them apart


def _round_trip(llm) -> None:
    """One row through the same engine loop and simulator, to the end: a job that was sending
    (it was queued on that loop first) has sent while this ran, so the log would show it."""
    out = _rows(1).llm.apply("Probe {t}", **{**llm, "model": f"openai/{PROBE_MODEL}", "cache": False})
    assert out["llm_output"].notna().all()


def test_submit_confirm_shows_run_and_sends_nothing_until_it_is_clicked(llm, sim, capsys):
    job = _rows(6).llm.submit("Echo {t}", confirm=True, **{**llm, "progress": "widget"})
    panel = job._shown
    assert isinstance(panel, Panel) and panel.waiting
    assert panel.run_button in panel.actions.children and panel.cancel_button in panel.actions.children
    assert "Nothing is sent until you click Run" in panel.hint.value
    _round_trip(llm)  # the engine was free to send meanwhile; the job sent nothing
    assert [e["model"] for e in sim.log] == [PROBE_MODEL]
    assert "waiting to start" in repr(job) and not job.done()
    with pytest.raises(RuntimeError, match="has not started"):
        job.wait(0)
    panel.run_button.click()  # what the click does: job.start()
    out = job.result(timeout=30)
    assert out["llm_output"].notna().all() and len(sim.log) == 1 + 6
    assert "DONE" in panel.header.value.upper() and panel.actions.layout.display == "none"
    panel.run_button.click()  # too late: nothing more happens
    _round_trip(llm)
    assert [e["model"] for e in sim.log].count("gpt-4.1-mini") == 6 and len(sim.log) == 8


def test_submit_confirm_cancel_before_run_sends_nothing(llm, sim, capsys):
    job = _rows(6).llm.submit("Echo {t}", confirm=True, **{**llm, "progress": "widget"})
    panel = job._shown
    panel.cancel_button.click()
    out = job.result(timeout=10)
    assert job.done() and out["llm_output"].isna().all()
    assert out["llm_output_error"].str.contains("not sent: cancelled from the panel before the run").all()
    assert "CANCELLED" in panel.header.value.upper()
    assert re.search(r"Not sent\s+6\b", report_text(job.report)) and job.report.stats.sent == 0
    panel.run_button.click()
    job.start()
    _round_trip(llm)  # the job is done (cancelled); the engine was free to send meanwhile
    assert [e["model"] for e in sim.log] == [PROBE_MODEL]


def test_submit_confirm_start_from_code_hides_run(llm, sim, capsys):
    job = _rows(3).llm.submit("Echo {t}", confirm=True, **{**llm, "progress": "widget"})
    job.start()  # a headless run (nbclient, papermill, a script) starts it this way
    job.result(timeout=30)
    assert len(sim.log) == 3 and not job._shown.waiting
    assert job._shown.run_button.layout.display == "none"


def test_panel_reads_the_estimate_the_run_attached():
    r = running_report()
    p = Panel(r, estimate(price=Price(1.0, 5.0)))  # 120,000 x $1/M + 75,000 x $5/M
    assert "$0.495" in p.plan.value
    r.estimate = estimate(price=Price(0.5, 2.0))  # refined after a pilot: $0.06 + $0.15
    p.show_estimate()
    assert "$0.21" in p.plan.value


# -- choosing a display ---------------------------------------------------------------------


def test_choose_display(monkeypatch):
    r = running_report()
    assert choose_display(r, None, None, False) is None
    assert isinstance(choose_display(r, None, None, "tqdm", show=False), ConsoleProgress)
    assert isinstance(choose_display(r, None, None, "widget", show=False), Panel)
    assert isinstance(choose_display(r, None, None, None, show=False), ConsoleProgress)  # not a kernel
    with pytest.raises(InputError):
        choose_display(r, None, None, "fancy")
    with pytest.raises(InputError):
        choose_display(r, None, None, 1)

    import IPython

    class ZMQInteractiveShell:
        config: dict = {}

    monkeypatch.setattr(IPython, "get_ipython", lambda: ZMQInteractiveShell())
    monkeypatch.delitem(sys.modules, "spyder_kernels", raising=False)
    assert isinstance(choose_display(r, None, None, True, show=False), Panel)
    assert isinstance(choose_display(r, None, None, "tqdm", show=False), ConsoleProgress)

    class TerminalInteractiveShell:
        config: dict = {}

    monkeypatch.setattr(IPython, "get_ipython", lambda: TerminalInteractiveShell())
    assert isinstance(choose_display(r, None, None, None, show=False), ConsoleProgress)


def test_console_progress_postfix_and_plan():
    out = io.StringIO()
    r = running_report()
    bar = ConsoleProgress(r, estimate(), budget=2.0, file=out)
    monkey_write = io.StringIO()
    import tqdm

    orig = tqdm.tqdm.write
    try:
        tqdm.tqdm.write = classmethod(lambda cls, s, file=None, **kw: monkey_write.write(s))
        bar.show_estimate()
    finally:
        tqdm.tqdm.write = orig
    assert "Requests" in monkey_write.getvalue() and "$0.168" in monkey_write.getvalue()
    s = r.stats
    r.answered_rows, r.failed_rows = 10, 2
    s.retrying, s.cost = 1, 0.0123
    s.by_kind.update({"429": 3, "5xx": 1})
    bar.update(force=True)
    assert bar.postfix() == {"ok": 10, "failed": 2, "retrying": 1, "429": 3, "5xx": 1, "$": "$0.0123/$2.00"}
    bar.close()
    bar.close()
    text = out.getvalue()
    # not a terminal (a StringIO): plain lines, the figures in words
    assert "12/1,000 rows" in text and "ok 10" in text and "$0.0123/$2.00" in text and "\r" not in text


# -- export through nbclient and nbconvert --------------------------------------------------

NOTEBOOK = '''
import time
from llmbatch_pd.transport.engine import EngineStats
from llmbatch_pd.planning import estimate as plan
from llmbatch_pd.planning.pricing import Price
from llmbatch_pd.core.report import RunReport
from llmbatch_pd.ui.panel import Panel

report = RunReport(model="openai/gpt-4.1-mini", rows=300, requests=250, duplicates=50)
est = plan.build("openai/gpt-4.1-mini", rows=300, duplicates=50, cached=0, skipped=0, too_long=0,
                 input_counts=[36] * 250, exact=True, token_counting="exact", price=Price(0.4, 1.6),
                 max_tokens=None, concurrency=64, rpm=None, tpm=None, budget=1.0)
now = [time.monotonic()]  # the panel's clock, moved on by hand: 10 ms a step, no sleeping
panel = Panel(report, est, budget=1.0, on_cancel=lambda: None, min_interval=0.05,
              clock=lambda: now[0]).show()
s = report.stats
s.started = now[0]
for i in range(30):
    report.answered_rows += 9
    report.failed_rows += 1 if i % 10 == 0 else 0
    s.cost += 0.001
    s.by_kind["429"] += i % 2
    panel.update()
    now[0] += 0.01
s.errors["<script>alert(1)</script> bad " + "gateway"] += 3
s.finished = now[0]
panel.finish()
'''


@pytest.mark.slow  # a real kernel: 2-3 s on an idle machine
def test_nbconvert_export_of_an_nbclient_run_shows_the_static_summary(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nbconvert = pytest.importorskip("nbconvert")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(NOTEBOOK))])
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=60, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    displays = [o for o in outputs if o.output_type == "display_data"]
    assert len(displays) == 1, outputs  # the live panel was replaced in place
    data = displays[0].data
    assert "application/vnd.jupyter.widget-view+json" not in data
    assert "llmbatch-report" in data["text/html"] and "Errors by kind" in data["text/plain"]
    html, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    # rendered as an output (not only present inside some saved widget state)
    output_html = html[html.index('jp-OutputArea-output" data-mime-type="text/html"'):]
    assert '<div class="llmbatch-report' in output_html
    for text in ("Answered", "Errors by kind", "429 ×15", "Top errors", "bad gateway"):
        assert text in output_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; bad gateway" in html
    assert "<script>alert(1)" not in html


def test_console_postfix_shows_batch_status():
    from llmbatch_pd.core.report import RunReport
    from llmbatch_pd.ui.console import ConsoleProgress

    report = RunReport(model="openai/gpt-4.1-mini", rows=10)
    report.stats.batch_status = "in_progress"
    report.stats.batch_counts = {"total": 10, "succeeded": 3, "errored": 1}
    bar = ConsoleProgress(report, file=io.StringIO())
    assert bar.postfix()["batch"] == "in_progress 4/10"
    bar.close()


# -- batch jobs in the panel and the summary ------------------------------------------------

BATCH_ID = "batch_6823abcdef0123456789"


def batch_report(**over) -> RunReport:
    r = running_report(mode="batch", rows=100, requests=100, duplicates=0, cached=0, **over)
    s = r.stats
    s.started = time.monotonic() - 50
    s.batch_status = "in_progress"
    s.batch_ids = [BATCH_ID]
    s.batch_counts = {"total": 100, "processing": 60, "succeeded": 38, "errored": 2, "expired": 0, "canceled": 0}
    return r


def test_panel_shows_batch_status_ids_and_counts_until_the_rows_land():
    clock = Clock()
    r = batch_report()
    p = Panel(r, estimate(rows=100, duplicates=0, cached=0, to_send=100), on_cancel=lambda: None, clock=clock)
    assert "openai/gpt-4.1-mini · batch" in p.header.value
    label = p.batch_label.value
    assert p.batch_label.layout.display is None
    assert "Batch job <b>in_progress</b>" in label
    assert "40 / 100 requests processed (38 succeeded, 2 errored)" in label
    assert "batch_6823…6789" in label and f'title="{BATCH_ID}"' in label  # short, full on hover
    for text in ("up to 24 h", "half price", "re-attaches"):
        assert text in label
    assert p.batch_bar.layout.display is None and (p.batch_bar.value, p.batch_bar.max) == (40, 100)
    assert "ETA" not in p.progress_label.value  # rows land when a job ends: no pace to read
    # the plan line at batch prices: (16,000 x $0.40 + 10,000 x $1.60) / M / 2
    assert "$0.0112 expected" in p.plan.value
    assert "Cancel stops waiting" in p.hint.value and "keep running at the provider" in p.hint.value
    r.stats.batch_counts = {**r.stats.batch_counts, "succeeded": 98, "processing": 0}
    clock.t += 1
    p.update()
    assert p.batch_bar.value == 100
    r.stats.batch_status = "completed"
    r.answered_rows, r.failed_rows = 98, 2  # the rows landed: the bar of rows says it all
    clock.t += 1
    p.update()
    assert p.batch_bar.layout.display == "none" and "Batch job <b>completed</b>" in p.batch_label.value
    p.finish()
    assert p.batch_label.layout.display == "none" and p.batch_bar.layout.display == "none"
    assert "Batch jobs" in p.summary.value and "half price" in p.summary.value


def test_panel_batch_several_jobs_and_before_the_jobs_exist():
    r = running_report(mode="batch")
    p = Panel(r, estimate(), on_cancel=lambda: None)
    assert "Batch mode: the requests go to the provider as batch jobs" in p.batch_label.value
    assert "up to 24 h" in p.batch_label.value and p.batch_bar.layout.display == "none"
    r.stats.started = time.monotonic()
    p.show_estimate()
    assert "preparing the jobs" in p.batch_label.value
    r.stats.batch_status = "completed 1, in_progress 2 <b>"
    r.stats.batch_ids = [f"batch_{i}abcdefghijklmnopqrstuvwxyz{i}" for i in range(4)]
    r.stats.batch_counts = {"total": 300, "succeeded": 150}
    p.show_estimate()
    label = p.batch_label.value
    assert "Batch jobs <b>completed 1, in_progress 2 &lt;b&gt;</b>" in label
    assert "batch_0abc…xyz0, batch_1abc…xyz1, batch_2abc…xyz2, +1 more" in label
    assert "150 / 300 requests processed (150 succeeded)" in label
    assert (p.batch_bar.value, p.batch_bar.max) == (150, 300)
    p.cancel()
    p.update()
    assert "no longer waiting for the batch jobs" in p.note.value and "not paid twice" in p.note.value


def test_realtime_panel_has_no_batch_line():
    p = Panel(running_report(), estimate())
    assert p.batch_label.layout.display == "none" and p.batch_bar.layout.display == "none"
    p.finish()
    assert "Batch" not in p.summary.value


def test_summary_of_a_batch_run():
    r = batch_report(answered_rows=98, failed_rows=2)
    r.stats.batch_status = "completed"
    r.stats.finished = time.monotonic()
    e = estimate(rows=100, duplicates=0, cached=0, to_send=100)  # the batch figures above
    text = report_text(r, e)
    assert re.search(r"Batch jobs\s+completed\s+\(1 job: batch_6823…6789; 40 / 100 requests processed", text)
    assert "still running" not in text
    assert re.search(r"Batch\s+half price\s+\(jobs can take up to 24 h; re-running the same call re-attaches", text)
    assert "expected $0.0112, range $0.00322–$0.331 at batch prices" in text
    r.stats.batch_status = "completed 1, in_progress 1"  # the run stopped waiting (Cancel)
    assert "still running at the provider: the same call run again re-attaches" in report_text(r, e)
    html = report_html(r, e)
    assert "Batch jobs" in html and "batch_6823…6789" in html
    md = report_markdown(r, e)
    assert "| Batch jobs | completed 1, in\\_progress 1 (" in md
    assert "Batch" not in report_text(finished_report())  # a real-time run says nothing of it


# -- several models side by side ------------------------------------------------------------

HAIKU = "anthropic/claude-haiku-4-5"


def pair(**over):
    """Two runs (gpt-4.1-mini, real time; claude-haiku-4-5, batch) sharing a $2.00 budget."""
    a = RunReport(model="openai/gpt-4.1-mini", rows=1000, requests=800, cached=50, budget=2.0)
    b = RunReport(model=HAIKU, rows=1000, requests=900, cached=10, budget=2.0, mode="batch")
    a.stats, b.stats = EngineStats(total=1000), EngineStats(total=1000)
    # claude-haiku-4-5 at $1 / $5 per million: 890 to send of 100 tokens; by hand, input 89,000
    # (87,220-93,450), output 89,000 (890-3,645,440); batch (half) $0.267, low $0.045835, high
    # $9.160325; wall 890 / 5 + 2 = 180 s
    ests = [estimate(budget=2.0),
            estimate(model=HAIKU, duplicates=100, cached=10, to_send=890, tokens_each=100,
                     price=Price(1.0, 5.0), budget=2.0)]
    return a, b, ests


def finished_pair():
    a, b, ests = pair()
    now = time.monotonic()
    for r, cost, sent in ((a, 0.1, 790), (b, 0.3, 900)):
        r.stats.started, r.stats.finished = now - 100, now - 10
        r.stats.cost, r.stats.sent = cost, sent
        r.stats.input_tokens, r.stats.output_tokens = 118_000, 60_000
    a.answered_rows, a.failed_rows = 990, 10
    b.answered_rows, b.failed_rows, b.not_sent = 400, 600, 590
    b.stats.stop_reason = "budget reached"
    b.stats.batch_status, b.stats.batch_ids = "completed", [BATCH_ID]
    b.stats.batch_counts = {"total": 400, "succeeded": 395, "errored": 5}
    b.stats.errors.update({EVIL: 4})
    a.warnings.append("tiktoken unavailable: estimating")
    return a, b, ests


def test_short_models():
    from llmbatch_pd.ui.lines import short_models

    assert short_models(["openai/gpt-4.1-mini", HAIKU]) == ["gpt-4.1-mini", "claude-haiku-4-5"]
    assert short_models(["openai/gpt-4o", "azure/gpt-4o", "m"]) == ["openai/gpt-4o", "azure/gpt-4o", "m"]


def test_reports_text_markdown_html():
    from llmbatch_pd.ui import reports_html, reports_markdown, reports_text

    a, b, ests = finished_pair()
    text = reports_text([a, b], ests)
    lines = text.splitlines()
    assert lines[0] == "llmbatch_pd · 2 models · real time and batch · partly stopped"
    head = lines[1].split()
    assert head[:4] == ["Model", "Answered", "Failed", "Sent"] and head[-1] == "Status"
    row_a = next(ln for ln in lines if ln.strip().startswith("openai/gpt-4.1-mini"))
    assert re.search(r"openai/gpt-4\.1-mini\s+990\s+10\s+790\s+50\s+118k / 60k\s+\$0\.10 \(est\. \$0\.168\)\s+"
                     r"1m 30s\s+done$", row_a)
    row_b = next(ln for ln in lines if ln.strip().startswith(HAIKU))
    assert "(batch)" in row_b and "10 (+590 unsent)" in row_b and "stopped (budget reached)" in row_b
    total = next(ln for ln in lines if ln.strip().startswith("Total"))
    assert re.search(r"Total \(2 models\)\s+1,390\s+20 \(\+590 unsent\)\s+1,690\s+60\s+236k / 120k\s+"
                     r"\$0\.40 \(est\. \$0\.435\)\s+1m 30s\s+partly stopped$", total)
    assert re.search(r"Budget\s+\$0\.40 of \$2\.00\s+\(20% used, shared by all models\)", text)
    assert re.search(r"Batch jobs claude-haiku-4-5\s+completed\s+\(1 job: batch_6823…6789", text)
    assert re.search(r"Stopped early claude-haiku-4-5\s+budget reached", text)
    assert f"claude-haiku-4-5: {EVIL}" in text and "gpt-4.1-mini: tiktoken unavailable" in text

    md = reports_markdown([a, b], ests)
    assert "| Model | Answered | Failed | Sent | Cached | Tokens in / out | Cost | Time | Status |" in md
    assert "| **Total** (2 models) | **1,390** | **20** (+590 unsent) |" in md
    assert "\\$0.40" in md and "&lt;script&gt;" in md and "<script" not in md

    html = reports_html([a, b], ests)
    assert html.startswith('<div class="llmbatch-report') and "PARTLY STOPPED" in html.upper()
    assert f'title="{HAIKU}"' in html and ">claude-haiku-4-5<" in html  # short name, full on hover
    assert "1,390" in html and "Total" in html and "&lt;script&gt;" in html and "<script" not in html
    for run in re.findall(r">([^<>]*)<", html):  # MathJax: no text run holds two dollar signs
        assert run.count("$") <= 1
    # the lead's container calls them with the reports alone: each report's own estimate
    a.estimate, b.estimate = ests
    assert reports_text([a, b]) == text
    assert "$0.435" not in reports_text([RunReport(model="m", rows=0)])


def test_group_panel_estimate_table_and_lines():
    from llmbatch_pd.ui.group import GroupPanel

    a, b, ests = pair()
    p = GroupPanel([a, b], ests, on_cancel=lambda: None)
    assert p.budget == 2.0 and "ESTIMATE" in p.header.value.upper() and "2 models" in p.header.value
    plan = p.plan.value
    for text in ("Model", "Requests", "Tokens in", "Tokens out", "Range", "Wall time", "gpt-4.1-mini",
                 "claude-haiku-4-5", "batch prices", "$0.0482–$4.97", "$0.0458–$9.16"):
        assert text in plan
    total = plan[plan.index(">Total<"):]
    # one model runs in batch: the group's time is the batch window, not a real-time figure
    for text in ("2,000", "1,640", "209k", "~164k", "$0.435", "$0.0941–$14.13", "up to 24 h"):
        assert text in total, text
    assert "Budget" in plan and "the high end of the total is above it" in plan
    assert [ln.bar.max for ln in p.lines] == [1000, 1000] and [ln.bar.value for ln in p.lines] == [0, 0]
    assert "gpt-4.1-mini" in p.lines[0].name.value and "batch" in p.lines[1].text.value
    assert "0</b> / 2,000 rows over 2 models" in p.total_label.value
    assert "up to 24 h" in p.batch_label.value  # one of the models goes through batch jobs
    assert p.budget_bar.max == 2.0 and p.budget_bar.value == 0
    with pytest.raises(ValueError, match="one per model"):
        GroupPanel([a, b], ests[:1])


def test_group_panel_progress_and_budget_bar_sum():
    from llmbatch_pd.ui.group import GroupPanel

    clock = Clock()
    a, b, ests = pair()
    p = GroupPanel([a, b], ests, on_cancel=lambda: None, clock=clock)
    now = time.monotonic()
    a.stats.started = b.stats.started = now - 5
    a.answered_rows, a.failed_rows, a.stats.cost = 400, 20, 0.5
    a.stats.by_kind.update({"429": 4, "5xx": 2})
    b.answered_rows, b.stats.cost = 10, 0.3
    b.stats.batch_status = "in_progress"
    b.stats.batch_counts = {"total": 890, "succeeded": 100, "errored": 1}
    b.stats.errors.update({EVIL: 2})
    clock.t += 1
    p.update()
    assert "RUNNING" in p.header.value.upper() and p.plan.value.startswith("<div") and "Plan:" in p.plan.value
    assert [ln.bar.value for ln in p.lines] == [420, 10]
    line_a, line_b = p.lines[0].text.value, p.lines[1].text.value
    for text in ("420</b>/1,000", "✓400", "✗20", "$0.50", "429 ×4", "5xx ×2"):
        assert text in line_a
    assert "batch in_progress 101/890" in line_b and "429" not in line_b
    assert "430</b> / 2,000 rows over 2 models" in p.total_label.value
    assert p.budget_bar.value == pytest.approx(0.8) and p.budget_bar.style.bar_color == BLUE
    assert "$0.80</span> of $2.00 budget, shared by all models · 40%" in p.budget_label.value
    assert "claude-haiku-4-5: &lt;script&gt;" in p.errors.value and "<script" not in p.errors.value
    a.stats.cost = 1.3  # 1.6 of 2.0: amber
    clock.t += 1
    p.update()
    assert p.budget_bar.style.bar_color == AMBER and "80%" in p.budget_label.value
    b.stats.cost = 0.7
    b.stats.stop_reason = "budget reached"
    clock.t += 1
    p.update()
    assert p.budget_bar.style.bar_color == RED and p.budget_bar.value == pytest.approx(2.0)
    assert "stopping: budget reached" in p.lines[1].text.value and p.lines[1].bar.style.bar_color == AMBER
    assert "STOPPING" in p.header.value.upper()


def test_group_panel_cancel_calls_on_cancel_once_and_run_button():
    from llmbatch_pd.ui.group import GroupPanel

    calls = []
    a, b, ests = pair()
    p = GroupPanel([a, b], ests, on_cancel=lambda: calls.append("cancel"), on_run=lambda: calls.append("run"))
    assert p.waiting and list(p.actions.children[:2]) == [p.run_button, p.cancel_button]
    assert "Nothing is sent until you click Run" in p.hint.value and "waiting for Run" in p.total_label.value
    changes = count_changes(p)
    p.run_button.click()
    p.run_button.click()
    assert calls == ["run"] and changes == []  # the click wrote no widget
    p.update()
    assert p.run_button.layout.display == "none" and "starting" in p.total_label.value
    a.stats.started = time.monotonic()
    p.cancel_button.click()
    p.cancel_button.click()
    assert calls == ["run", "cancel"] and p.cancelled
    p.update()
    assert p.cancel_button.disabled and p.cancel_button.description == "Stopping…"
    assert "Stopping every model" in p.note.value and "Batch jobs keep running" in p.note.value
    p.finish()
    assert "CANCELLED" in p.header.value.upper() and p.actions.layout.display == "none"


def test_group_panel_cancel_error_is_shown():
    from llmbatch_pd.ui.group import GroupPanel

    def boom():
        raise RuntimeError("loop gone")

    a, b, ests = pair()
    p = GroupPanel([a, b], ests, on_cancel=boom)
    p.cancel()
    p.update()
    assert "Cancel failed: RuntimeError: loop gone" in p.note.value


def test_group_panel_updates_are_throttled_and_send_only_changes():
    from llmbatch_pd.ui.group import GroupPanel

    clock = Clock()
    a, b, ests = pair()
    a.stats.started = b.stats.started = time.monotonic()
    p = GroupPanel([a, b], ests, clock=clock)
    p.update()
    changes = count_changes(p)
    for ln in p.lines:  # the lines' own widgets sit in an HBox in a VBox: walked too
        assert ln.bar in all_widgets(p)
    renders = p.renders
    for i in range(1000):
        a.answered_rows = b.answered_rows = i
        a.stats.cost = i / 4000
        clock.t += 0.0001
        p.update()
    assert p.renders - renders <= 1 and len(changes) <= 12, [c["name"] for c in changes]
    a.stats.finished = b.stats.finished = a.stats.started + 10
    clock.t += 1
    p.update()
    changes.clear()
    clock.t += 1
    p.update()
    assert changes == []  # nothing moved, the clock stopped: nothing is sent


def test_group_panel_finish_exports_the_combined_summary(shown):
    from llmbatch_pd.ui.group import GroupPanel

    a, b, ests = finished_pair()
    p = GroupPanel([a, b], ests, on_cancel=lambda: None).show()
    view = "application/vnd.jupyter.widget-view+json"
    assert shown["live"][view]["model_id"] == p.widget.model_id and "Tokens out" in shown["live"]["text/html"]
    p.finish()
    assert set(shown["final"]) == {"text/html", "text/plain"}
    assert "llmbatch-report" in shown["final"]["text/html"] and "Total" in shown["final"]["text/html"]
    assert shown["final"]["text/plain"].startswith("llmbatch_pd · 2 models")
    assert "Total (2 models)" in shown["final"]["text/plain"]
    assert p.widget.comm is None and p.lines[0].bar.comm is None
    assert "Total" in p.summary.value and p.lines[1].bar.style.bar_color == RED
    assert [ln.bar.value for ln in p.lines] == [1000, 410]  # unsent rows are not done


def test_choose_display_with_several_reports():
    from llmbatch_pd.ui import GroupProgress
    from llmbatch_pd.ui.group import GroupPanel

    a, b, ests = pair()
    assert choose_display([a, b], ests, 2.0, False) is None
    assert isinstance(choose_display([a, b], ests, 2.0, "widget", show=False), GroupPanel)
    assert isinstance(choose_display([a, b], [None, None], None, "tqdm", show=False), GroupProgress)
    assert isinstance(choose_display((a, b), None, None, None, show=False), GroupProgress)  # not a kernel
    assert isinstance(choose_display(a, ests[0], 2.0, "widget", show=False), Panel)  # one: as before
    with pytest.raises(TypeError):
        choose_display([a, b], ests[0], 2.0, "tqdm", show=False)
    with pytest.raises(ValueError):
        choose_display([a, b], ests[:1], 2.0, "tqdm", show=False)
    with pytest.raises(InputError):
        choose_display([a, b], ests, 2.0, "fancy")


def test_group_progress_postfix_and_plan():
    import tqdm

    from llmbatch_pd.ui import GroupProgress

    a, b, ests = pair()
    out, plan = io.StringIO(), io.StringIO()
    bar = GroupProgress([a, b], ests, file=out)
    orig = tqdm.tqdm.write
    try:
        tqdm.tqdm.write = classmethod(lambda cls, s, file=None, **kw: plan.write(s))
        bar.show_estimate()
    finally:
        tqdm.tqdm.write = orig
    assert "claude-haiku-4-5 (batch)" in plan.getvalue() and "Total (2 models)" in plan.getvalue()
    assert "$0.435" in plan.getvalue() and "Budget  $2.00" in plan.getvalue()
    a.answered_rows, a.failed_rows, a.stats.cost = 10, 2, 0.0123
    b.answered_rows, b.stats.cost = 5, 0.01
    b.stats.batch_status, b.stats.batch_counts = "in_progress", {"total": 890, "succeeded": 3, "errored": 1}
    bar.update(force=True)
    assert bar.postfix() == {"gpt-4.1-mini": "10/1,000, 2 failed",
                             "claude-haiku-4-5": "5/1,000, batch in_progress 4/890", "$": "$0.0223/$2.00"}
    bar.close()
    bar.close()
    text = out.getvalue()
    assert "2 models" in text and "17/2,000" in text and "gpt-4.1-mini 10/1,000, 2 failed" in text
    assert "$0.0223/$2.00" in text


# -- "To send": a real plan with cached rows -------------------------------------------------


def test_to_send_counts_cached_rows_once(llm, sim):
    """The estimate's ``requests`` already leaves the cached prompts out: the panel must not
    take them off a second time."""
    import pandas as pd

    from llmbatch_pd.accessor import _spec
    from llmbatch_pd.runs.chat import Run
    from llmbatch_pd.ui.lines import plan_lines

    df = pd.DataFrame({"t": ["a", "a", "b", "c", "d", "e"]})
    df.iloc[[2, 3]].llm.apply("Echo {t}", **llm)  # b and c answered: in the cache now
    assert len(sim.log) == 2
    options = {k: v for k, v in llm.items() if k != "progress"}
    spec, rows = _spec(df, "Echo {t}", **options)
    est = Run(spec, rows, len(df)).plan()
    # by hand: 6 rows, "a" twice -> 5 unique prompts; b and c cached -> 3 to send
    figures = {ln.label: ln.value for ln in plan_lines(est)}
    assert (figures["Rows"], figures["Requests"], figures["Cache hits"], figures["To send"]) == ("6", "5", "2", "3")
    report = RunReport(model=est.model, rows=6)
    p = Panel(report, est)
    assert re.search(r">To send</th><td[^>]*>(<span[^>]*>)?3<", p.plan.value)
    assert "3 requests to send" in p._plan_line("real time")
    df.llm.apply("Echo {t}", **llm)
    assert len(sim.log) == 2 + 3  # what the simulator received: the plan's "To send"


# -- a model without a price -----------------------------------------------------------------


def test_unpriced_model_says_price_unknown_in_the_panel_and_the_bar():
    r = running_report(priced=False)  # as a run of a model the price list lacks makes it
    e = estimate(price=None, budget=None)  # no budget= without a price: refused before the run
    clock = Clock()
    p = Panel(r, e, on_cancel=lambda: None, clock=clock)
    assert "price unknown" in p.plan.value and "$0.00" not in p.plan.value
    assert "price unknown" in p._plan_line("real time")
    r.stats.started = time.monotonic()
    r.answered_rows = 10
    p.update()
    assert "<b>price unknown</b>" in p.counts.value and "$0.00" not in p.counts.value
    bar = ConsoleProgress(r, e, file=io.StringIO())
    assert bar.postfix()["$"] == "price unknown"
    bar.close()
    r.stats.cost = 0.0042  # a gateway reported what it billed: that is the cost
    clock.t += 1
    p.update()
    assert "<b>$0.0042</b> spent" in p.counts.value
    p.finish()
    assert "reported by the provider" in p.summary.value


def test_group_with_one_unpriced_model_says_what_its_totals_leave_out():
    from llmbatch_pd.ui import GroupProgress
    from llmbatch_pd.ui.group import GroupPanel

    a, b, ests = pair()
    b.priced, ests[1] = False, estimate(model=HAIKU, price=None, budget=None)
    p = GroupPanel([a, b], ests, on_cancel=lambda: None)
    plan = p.plan.value
    assert "price unknown" in plan
    total = plan[plan.index(">Total<"):]
    assert "$0.168" in total and "excludes 1 model: price unknown" in total  # gpt-4.1-mini's alone
    assert "excludes 1 model" in p._plan_line(p._modes())
    a.stats.cost = 0.05
    bar = GroupProgress([a, b], ests, file=io.StringIO())
    assert bar.postfix()["$"] == "$0.05/$2.00 (excludes 1)"
    bar.close()
