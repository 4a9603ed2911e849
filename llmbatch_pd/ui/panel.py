"""The notebook panel: estimate before the run, live progress during it, a summary after.

The panel only reads a ``RunReport`` (whose ``EngineStats`` the engine updates in place) and an
``Estimate``. It never calls HTTP and it never writes a widget from another thread: every write
happens inside ``update()``, ``show_estimate()`` or ``finish()``, which the caller runs on one
thread (``run_sync`` ticks on the cell's thread; widget messages sent from there reach the
browser while the cell blocks, ipykernel >= 7.0.1). A Cancel click only sets a flag and calls
``on_cancel``; the next ``update()`` shows it.

Run (``on_run``, for ``submit(confirm=True)``): the panel shows the estimate with Run and Cancel
and nothing is sent until Run is clicked. A click reaches the kernel only once the cell that
showed the panel has returned, which is the case for ``submit``; a headless run (nbclient,
papermill, a script) never clicks, so only ``job.start()`` starts it there. A click on Run calls
``on_run`` and writes no widget either: the run it starts renders the panel from then on.

Traffic stays small however many rows there are: ``update()`` renders at most once every
``min_interval`` seconds (4 per second by default; it may be called far more often), and only
traits whose value changed are written, so an unchanged figure sends nothing.

Export: ``show()`` displays the panel under a display id. ``finish()`` replaces that display with
the static summary (``text/html`` from ``report.py`` and ``text/plain``), which survives
``jupyter nbconvert --to html``, a reload of the notebook without its kernel, GitHub and an
offline reader. With ``keep_widget=True`` the final bundle also holds the widget view (the
ipympl pattern); nbconvert then prefers the widget whenever the notebook carries widget state
(nbclient and papermill save it by default) and shows it only to online readers.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from . import format as fmt
from .report import (
    AMBER,
    AMBER_TEXT,
    BATCH_NOTE,
    BLUE,
    BORDER,
    FONT,
    GREEN,
    GREY,
    MUTED,
    RED,
    TEXT,
    TRACK,
    batch_counts_text,
    batch_ids_text,
    batch_progress,
    budget_of,
    card_html,
    errors_html,
    estimate_html,
    expected_cost,
    header_html,
    mode_of,
    not_sent,
    report_html,
    report_text,
    status,
    summary_lines,
    table_html,
    top_errors,
    warnings_of,
)

if TYPE_CHECKING:
    from ..plan import Estimate
    from ..run import RunReport

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
KIND_ORDER = ("429", "5xx", "529", "timeout", "connection", "malformed")
BAR_COLORS = {"info": BLUE, "ok": GREEN, "bad": RED, "warn": AMBER, "muted": GREY}

# Scoped to the panel's class; no external resources.
_CSS = f"""<style>
.llmbatch-panel {{ border-radius: 8px; font-family: {FONT}; color: {TEXT}; }}
.llmbatch-panel .widget-html-content {{ line-height: 1.45; font-size: 13px; font-family: {FONT}; }}
.llmbatch-panel .widget-hprogress {{ height: 12px !important; min-height: 0 !important; }}
.llmbatch-panel .widget-hprogress .progress {{ height: 8px !important; align-self: center;
  border-radius: 4px; overflow: hidden; background: {TRACK} !important; }}
.llmbatch-panel .llmbatch-budget .progress, .llmbatch-panel .llmbatch-batch .progress {{
  height: 5px !important; }}
.llmbatch-panel .widget-hprogress .progress-bar {{ border-radius: 4px; transition: width .2s linear; }}
.llmbatch-panel .widget-button {{ height: 26px; font-size: 12px; padding: 0 12px; }}
</style>"""


def _html(**layout: Any) -> w.HTML:
    return w.HTML(value="", layout=w.Layout(margin="0", width="100%", **layout))


class Panel:
    """An ipywidgets card for one run, with the ``update()`` / ``close()`` interface of
    ``ConsoleProgress`` plus ``show()``, ``show_estimate()`` and ``finish()``.

    ``report`` is read live (the engine mutates its stats); ``estimate`` is the plan made before
    the run (or None); ``budget`` is in dollars (default: ``estimate.budget``); ``on_cancel`` is
    called (once, on whatever thread delivers the click) when Cancel is clicked. With ``on_run``
    the panel waits: it shows a Run button, and a click calls ``on_run`` (once) to start sending.
    ``background`` says the run goes on while other cells run (``submit``), which the hint says.
    """

    def __init__(
        self,
        report: RunReport,
        estimate: Estimate | None = None,
        budget: float | None = None,
        *,
        on_cancel: Callable[[], Any] | None = None,
        on_run: Callable[[], Any] | None = None,
        background: bool = False,
        keep_widget: bool = False,
        min_interval: float = 0.25,
        rate_window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.report = report
        self._estimate = estimate
        self.budget = budget_of(report, estimate, budget)
        self.on_cancel = on_cancel
        self.on_run = on_run
        self.background = background
        self.keep_widget = keep_widget
        self.min_interval = min_interval
        self.rate_window = rate_window
        self._clock = clock
        self._last: float | None = None
        self._force = True
        self._finished = False
        self._cancelled = False
        self._cancel_error: str | None = None
        self._run_clicked = False
        self._run_error: str | None = None
        self._handle: Any = None
        self._samples: deque[tuple[float, int]] = deque(maxlen=256)
        self._answered = self._failed = 0
        self.renders = 0  # how many times the widgets were recomputed (not how many were sent)

        rows = max(report.rows, 1)
        self.css = w.HTML(value=_CSS, layout=w.Layout(height="0px", margin="0", overflow="hidden"))
        self.header = _html()
        self.plan = _html()
        self.progress = w.IntProgress(value=0, min=0, max=rows, layout=w.Layout(width="100%", margin="6px 0 0 0"),
                                      style={"bar_color": BLUE})
        self.progress_label = _html()
        # mode="batch": the provider's jobs (status, ids, processed of total) while rows wait
        self.batch_bar = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="100%", margin="4px 0 0 0",
                                                                              display="none"),
                                       style={"bar_color": GREY})
        self.batch_bar.add_class("llmbatch-batch")
        self.batch_label = _html(display="none")
        self.budget_bar = w.FloatProgress(value=0.0, min=0.0, max=self._budget_max(),
                                          layout=w.Layout(width="100%", margin="4px 0 0 0"),
                                          style={"bar_color": BLUE})
        self.budget_bar.add_class("llmbatch-budget")
        self.budget_label = _html()
        self.counts = _html()
        self.errors = _html()
        self.note = _html()
        self.summary = _html(display="none")
        self.run_button = w.Button(description="Run", icon="play", button_style="primary",
                                   tooltip="Start sending the requests shown in the estimate",
                                   layout=w.Layout(width="auto", margin="0 8px 0 0", flex="0 0 auto"))
        self.run_button.on_click(self._run_click)
        self.cancel_button = w.Button(description="Cancel", icon="stop", button_style="",
                                      tooltip="Stop sending; requests in flight finish and finished rows are kept",
                                      layout=w.Layout(width="auto", margin="0 10px 0 0", flex="0 0 auto"))
        self.cancel_button.on_click(self._clicked)
        children: list[w.Widget] = [self.css, self.header, self.plan, self.progress, self.progress_label,
                                    self.batch_bar, self.batch_label, self.budget_bar, self.budget_label, self.counts, self.errors,
                                    self.note, self.summary]
        # While a cell blocks, most frontends deliver a click only after the cell ends, so the
        # way to stop that always works (interrupting the kernel) is named beside the button.
        self.hint = w.HTML(value="", layout=w.Layout(margin="0", width="auto", flex="1 1 auto"))
        buttons = ([self.run_button] if on_run is not None else []) + (
            [self.cancel_button] if on_cancel is not None else [])
        self.actions = w.HBox([*buttons, self.hint],
                              layout=w.Layout(margin="8px 0 0 0", align_items="center", width="100%"))
        children.append(self.actions)
        self.widget = w.VBox(children, layout=w.Layout(
            border=f"1px solid {BORDER}", padding="8px 14px 10px 14px", max_width="760px", width="100%",
            margin="2px 0"))
        self.widget.add_class("llmbatch-panel")
        self._render(final=False)

    # -- the interface the accessor drives ---------------------------------------------------

    def show(self) -> Panel:
        """Display the panel (once) under a display id, so ``finish()`` can replace it."""
        if self._handle is None:
            from IPython.display import display

            self._handle = display(self._bundle(live=True), raw=True, display_id=True)
        return self

    def show_estimate(self, estimate: Estimate | None = None) -> None:
        """Show (or replace) the plan: rows, requests, tokens, cost range, budget, wall time."""
        if estimate is not None:
            self._estimate = estimate
            if self.budget is None and estimate.budget is not None:
                self.budget = estimate.budget
        self._force = True
        self.update()

    def update(self) -> None:
        """Refresh from the report's live counters; cheap to call often (throttled)."""
        if self._finished:
            return
        now = self._clock()
        if not self._force and self._last is not None and now - self._last < self.min_interval:
            return
        self._force = False
        self._last = now
        self._render(final=False)

    def finish(self) -> None:
        """Show the summary, disable Cancel and leave the static summary in the output."""
        if self._finished:
            return
        self._finished = True
        self._render(final=True)
        self._export()

    close = finish  # the accessor closes every display in a ``finally``

    def cancel(self) -> None:
        """What a click on Cancel does: flag it, call ``on_cancel`` once."""
        if self._cancelled or self._finished:
            return
        self._cancelled = True
        self._force = True
        if self.on_cancel is not None:
            try:
                self.on_cancel()
            except Exception as exc:  # shown by the next update; never raised into the comm handler
                self._cancel_error = f"{type(exc).__name__}: {exc}"

    def run(self) -> None:
        """What a click on Run does: flag it, call ``on_run`` once. If ``on_run`` fails, nothing
        started that would render the panel, so the error is shown from here."""
        if self.on_run is None or self._run_clicked or self._cancelled or self._finished:
            return
        self._run_clicked = True
        self._force = True
        try:
            self.on_run()
        except Exception as exc:  # shown in the panel; never raised into the comm handler
            self._run_error = f"{type(exc).__name__}: {exc}"
            self._run_clicked = False
            self._render(final=False)

    @property
    def waiting(self) -> bool:
        """True while the panel waits for Run (``on_run`` given, not clicked, not cancelled)."""
        return (self.on_run is not None and not self._run_clicked and not self._cancelled
                and not self._finished and self.report.stats.started is None)

    @property
    def estimate(self) -> Estimate | None:
        """The plan shown: the run's own (refined after a pilot) once it has one."""
        return getattr(self.report, "estimate", None) or self._estimate

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def __repr__(self) -> str:
        r = self.report
        stage = "finished" if self._finished else ("running" if r.stats.started is not None else "estimate")
        return f"<Panel {r.model}: {r.finished_rows}/{r.rows} rows, {stage}>"

    # -- rendering ------------------------------------------------------------------------

    def _clicked(self, _button: w.Button) -> None:
        self.cancel()  # no widget write here: this may run on the kernel's shell thread

    def _run_click(self, _button: w.Button) -> None:
        self.run()  # no widget write either: the run it starts renders the panel

    def _budget_max(self) -> float:
        return max(float(self.budget or 0.0), 1e-9)

    @staticmethod
    def _set(obj: Any, name: str, value: Any) -> None:
        """Write a trait only if it changed (traitlets would not send it, but this also skips
        the validation and comparison work of the trait machinery)."""
        if getattr(obj, name) != value:
            setattr(obj, name, value)

    def _show(self, widget: w.Widget, visible: bool) -> None:
        self._set(widget.layout, "display", None if visible else "none")

    def _rate(self, finished: int) -> float | None:
        """Rows per second over the last ``rate_window`` seconds (cached rows land at once, so
        the whole-run average would overstate the pace for the rows still to come)."""
        now = self._clock()
        samples = self._samples
        if not samples or samples[-1][1] != finished or now - samples[-1][0] >= 1.0:
            samples.append((now, finished))
        while len(samples) > 2 and now - samples[1][0] >= self.rate_window:
            samples.popleft()
        t0, f0 = samples[0]
        if now - t0 >= 1.0 and finished > f0:
            return (finished - f0) / (now - t0)
        elapsed = self.report.stats.elapsed
        if elapsed >= 1.0 and finished:
            return finished / elapsed
        return None

    def _render(self, *, final: bool) -> None:
        self.renders += 1
        r, s = self.report, self.report.stats
        # one reading of the row counts per render (the engine's thread moves them meanwhile)
        self._answered, self._failed = r.answered_rows, r.failed_rows - not_sent(r)  # unsent: not done
        mode = mode_of(r, self.estimate)
        label, tone = status(r, cancelled=self._cancelled, final=final)
        running = s.started is not None
        self._set(self.header, "value", header_html("llmbatch_pd", f"{r.model} · {mode}", label, tone))

        # plan: the full table before the run, one line once it runs
        if self.estimate is None:
            self._show(self.plan, False)
        else:
            self._set(self.plan, "value", self._plan_line(mode) if running or final
                      else estimate_html(self.estimate, budget=self.budget, mode=mode))
            self._show(self.plan, True)

        # rows
        rows = max(r.rows, 1)
        finished = min(self._answered + self._failed, rows) if r.rows else (1 if final else 0)
        self._set(self.progress, "max", rows)
        self._set(self.progress, "value", finished)
        color = BAR_COLORS[tone] if final or tone in ("warn", "bad") else BLUE
        self._set(self.progress.style, "bar_color", color)
        self._set(self.progress_label, "value", self._progress_text(finished, final))

        # batch jobs: status, ids, and (until the rows land) how far the provider has got
        batch = mode == "batch" and not final
        if batch:
            self._set(self.batch_label, "value", self._batch_html(running))
        self._show(self.batch_label, batch)
        done, total = batch_progress(s)
        batch_bar = batch and total > 0 and finished < r.rows
        if batch_bar:
            self._set(self.batch_bar, "max", total)
            self._set(self.batch_bar, "value", min(done, total))
        self._show(self.batch_bar, batch_bar)

        # dollars against the budget
        self._show(self.budget_bar, self.budget is not None)
        self._show(self.budget_label, self.budget is not None)
        if self.budget is not None:
            used = s.cost / self.budget if self.budget > 0 else (1.0 if s.cost else 0.0)
            self._set(self.budget_bar, "max", self._budget_max())
            self._set(self.budget_bar, "value", min(float(s.cost), self._budget_max()))
            bar = RED if used >= 0.999 else AMBER if used >= 0.8 else BLUE
            self._set(self.budget_bar.style, "bar_color", bar)
            text_color = RED if used >= 0.999 else AMBER_TEXT if used >= 0.8 else TEXT
            self._set(self.budget_label, "value", self._small(
                f'<span style="color:{text_color};font-weight:600">{fmt.money(s.cost)}</span>'
                f' of {fmt.money(self.budget)} budget · {fmt.percent(used)}'
                + (" · the run stops before it would go over" if used >= 0.8 and not final else "")))

        if final:
            self._show(self.counts, False)
            self._show(self.errors, False)
            self._set(self.summary, "value", self._summary())
            self._show(self.summary, True)
        else:
            self._set(self.counts, "value", self._counts_html())
            self._show(self.counts, running)  # before the run they would all be zero
            errs = top_errors(s, 3)
            self._set(self.errors, "value", errors_html(errs, title="Errors so far") if errs else "")
            self._show(self.errors, bool(errs))

        note = self._note(final)
        self._set(self.note, "value", note)
        self._show(self.note, bool(note))

        # Run: only while waiting for it; Cancel: disabled once clicked, gone when finished
        self._show(self.actions, not final)
        self._set(self.hint, "value", self._hint())
        if self.on_run is not None:
            self._show(self.run_button, self.waiting)
        if self.on_cancel is not None:
            self._set(self.cancel_button, "disabled", self._cancelled or final)
            self._set(self.cancel_button, "description",
                      "Stopping…" if self._cancelled and not final else "Cancel")
            self._show(self.cancel_button, not final)

    # -- pieces of HTML -------------------------------------------------------------------

    def _hint(self) -> str:
        if self.waiting:
            return self._small("Nothing is sent until you click Run.", MUTED)
        if mode_of(self.report, self.estimate) == "batch":
            return self._small("Cancel stops waiting: submitted jobs keep running at the provider "
                               "and the same call run again collects them.", MUTED)
        if self.background:
            return self._small("Runs in the background: the notebook stays usable. "
                               "Cancel keeps every finished row.", MUTED)
        return self._small(("or interrupt" if self.on_cancel is not None else "Interrupt")
                           + " the kernel (■) to stop early: finished rows are kept", MUTED)

    @staticmethod
    def _small(inner: str, color: str = TEXT) -> str:
        return f'<div style="font-size:12.5px;color:{color};font-variant-numeric:tabular-nums">{inner}</div>'

    def _plan_line(self, mode: str) -> str:
        e = self.estimate
        low, mid, high = expected_cost(e, mode)
        parts = [f"{fmt.plural(e.requests, 'request')} after de-duplication"]
        if e.cached:
            parts.append(f"{fmt.count(e.cached)} cached")
        parts.append(f"~{fmt.tokens(e.input_tokens)} in / ~{fmt.tokens(e.output_tokens)} out tokens")
        if mid is not None:
            parts.append(f"{fmt.money(mid)} expected ({fmt.money_range(low, high)})")
        parts.append(f"~{fmt.duration(e.wall_time_s)}")
        return self._small("Plan: " + " · ".join(parts), MUTED)

    def _progress_text(self, finished: int, final: bool) -> str:
        r, s = self.report, self.report.stats
        rows = r.rows
        frac = finished / rows if rows else 1.0
        head = (f'<b>{fmt.count(finished)}</b> / {fmt.count(rows)} rows · '
                f'{fmt.percent(1.0 if final and finished >= rows else frac)}')
        if final:
            rows_s = finished / s.elapsed if s.elapsed > 0 and r.rows else None
            tail = f" · {fmt.duration(s.elapsed)}" + (f" · {fmt.rate(rows_s)}" if rows_s else "")
            return self._small(head + f'<span style="color:{MUTED}">{tail}</span>')
        if s.started is None:
            waiting = ("waiting for Run" if self.waiting
                       else "starting…" if self._run_clicked and not self._cancelled else "waiting to start")
            return self._small(head + f'<span style="color:{MUTED}"> · {waiting}</span>')
        if mode_of(r, self.estimate) == "batch":  # rows land when a job ends: no pace to read
            return self._small(head + f'<span style="color:{MUTED}"> · {fmt.duration(s.elapsed)} elapsed</span>')
        rate = self._rate(finished)
        remaining = max(rows - finished, 0)
        eta = remaining / rate if rate else None
        tail = f" · {fmt.rate(rate)} · ETA {fmt.duration(eta)}" if eta is not None else ""
        tail += f" · {fmt.duration(s.elapsed)} elapsed"
        return self._small(head + f'<span style="color:{MUTED}">{tail}</span>')

    def _batch_html(self, running: bool) -> str:
        """The batch line: the jobs' status (the provider's word), their ids shortened (in full
        on hover), requests processed of total; and the note on time, price and re-runs."""
        s = self.report.stats
        ids = list(s.batch_ids)
        status_word = s.batch_status
        if status_word or ids:
            parts = [f"Batch job{'s' if len(ids) > 1 else ''} <b>{escape(status_word or '…')}</b>"]
            counts = batch_counts_text(s)
            if counts:
                parts.append(counts)
            if ids:
                parts.append(f'<span title="{escape(", ".join(ids))}" style="font-family:ui-monospace,'
                             f'SFMono-Regular,Menlo,Consolas,monospace;font-size:11.5px">'
                             f'{escape(batch_ids_text(ids))}</span>')
            head = " · ".join(parts)
        elif running:
            head = "Batch mode: preparing the jobs…"
        else:
            head = "Batch mode: the requests go to the provider as batch jobs"
        return (self._small(head)
                + f'<div style="font-size:12px;color:{MUTED}">{escape(BATCH_NOTE)}.</div>')

    def _counts_html(self) -> str:
        r, s = self.report, self.report.stats

        def chip(text: str, color: str | None = None) -> str:
            c = f"color:{color};" if color else ""
            return f'<span style="{c}margin-right:14px;white-space:nowrap">{text}</span>'

        answered, failed = self._answered, self._failed
        items = [chip(f"✓ <b>{fmt.count(answered)}</b> answered", GREEN if answered else None),
                 chip(f"✗ <b>{fmt.count(failed)}</b> failed", RED if failed else None)]
        items.append(chip(f"↻ <b>{fmt.count(s.retrying)}</b> retrying", AMBER_TEXT if s.retrying else MUTED))
        items.append(chip(f"<b>{fmt.count(s.in_flight)}</b> in flight", MUTED))
        kinds = dict(s.by_kind)
        for kind in (*KIND_ORDER, *sorted(k for k in kinds if k not in KIND_ORDER)):
            n = kinds.get(kind, 0)
            if n or kind in ("429", "5xx"):
                items.append(chip(f"{kind} ×{fmt.count(n)}", AMBER_TEXT if n else MUTED))
        money_text = fmt.money(s.cost)
        if self.budget is not None:
            money_text += f" of {fmt.money(self.budget)}"
        line2 = (f"tokens {fmt.tokens(s.input_tokens)} in / {fmt.tokens(s.output_tokens)} out · "
                 f"<b>{money_text}</b> spent")
        if r.cached or r.duplicates:
            line2 += f" · {fmt.count(r.cached)} cached · {fmt.count(r.duplicates)} duplicates"
        return (f'<div style="font-size:12.5px;margin-top:4px;font-variant-numeric:tabular-nums">'
                f'<div>{"".join(items)}</div><div style="color:{MUTED}">{line2}</div></div>')

    def _note(self, final: bool) -> str:
        s = self.report.stats
        lines = []
        if self._cancel_error:
            lines.append((RED, f"Cancel failed: {self._cancel_error}"))
        if self._run_error:
            lines.append((RED, f"Run failed: {self._run_error}"))
        if not final:
            if self._cancelled and mode_of(self.report, self.estimate) == "batch":
                lines.append((AMBER_TEXT, "Stopping: no longer waiting for the batch jobs. They keep "
                                          "running at the provider; the same call run again collects "
                                          "their answers (not paid twice)."))
            elif self._cancelled:
                lines.append((AMBER_TEXT, "Stopping: nothing more is sent; requests in flight finish "
                                          "and every finished row is kept."))
            elif s.stop_reason:
                lines.append((AMBER_TEXT, f"Stopping: {s.stop_reason}. Requests in flight finish; "
                                          "finished rows are kept."))
        for warning in warnings_of(self.report)[-2:]:
            lines.append((AMBER_TEXT, f"⚠ {warning}"))
        if not lines:
            return ""
        return "".join(f'<div style="font-size:12.5px;color:{c};margin-top:4px">{escape(t)}</div>'
                       for c, t in lines)

    def _summary(self) -> str:
        lines = summary_lines(self.report, self.estimate, budget=self.budget)
        skip = {"Rows"}  # the bar above already says it
        return (table_html([ln for ln in lines if ln.label not in skip])
                + errors_html(top_errors(self.report.stats)))

    # -- display and export -----------------------------------------------------------------

    def _static(self) -> dict[str, str]:
        kw = {"budget": self.budget, "cancelled": self._cancelled}
        return {"text/html": report_html(self.report, self.estimate, **kw),
                "text/plain": report_text(self.report, self.estimate, **kw)}

    def _bundle(self, *, live: bool) -> dict[str, Any]:
        view = self.widget._repr_mimebundle_()[WIDGET_VIEW]
        if live:
            r = self.report
            plain = f"llmbatch_pd: {r.model}, {r.rows:,} rows (live panel; the summary replaces it when the run ends)"
            snapshot = self._snapshot_html()
            return {WIDGET_VIEW: view, "text/plain": plain, "text/html": snapshot}
        return {WIDGET_VIEW: view, **self._static()}

    def _snapshot_html(self) -> str:
        """What a notebook saved mid-run (without widget state) shows in place of the panel."""
        r = self.report
        mode = mode_of(r, self.estimate)
        plan = estimate_html(self.estimate, budget=self.budget, mode=mode) if self.estimate else ""
        return card_html(header_html("llmbatch_pd", f"{r.model} · {mode}", "running", "info") + plan
                         + f'<div style="color:{MUTED};margin-top:6px">The run was in progress when this '
                         f'output was saved: {fmt.count(r.rows)} rows.</div>')

    def _export(self) -> None:
        if self._handle is None:
            return
        if self.keep_widget:
            self._handle.update(self._bundle(live=False), raw=True)
            return
        self._handle.update(self._static(), raw=True)
        self._close_widgets()

    def _close_widgets(self) -> None:
        """Free the widget models in the kernel and the browser once the summary replaced them."""
        for widget in (*self.widget.children, self.run_button, self.cancel_button, self.hint,
                       self.widget):
            for part in (getattr(widget, "style", None), getattr(widget, "layout", None), widget):
                if isinstance(part, w.Widget):
                    part.close()


__all__ = ["Panel"]
