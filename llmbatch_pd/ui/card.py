"""What the two notebook cards share: ``Panel`` (one run) and ``GroupPanel`` (several models).

``Card`` holds the lifecycle (``show``, ``update``, ``finish`` / ``close``), the throttling, the
Run and Cancel clicks, the trait-writing helpers, the budget bar, the buttons and the export
that replaces the live card with its static summary. A subclass builds the widgets it alone
has and says what to render in them: ``_render``, ``_detail``, ``_plan_html``, ``_summary``,
``_errors``, ``_static``, ``_live_text``, ``_saved_text`` and ``_started``. The rules the
module docstring of ``panel.py`` states (one thread writes widgets, a click only flags) hold
here because the clicks below never write a widget.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from html import escape
from typing import Any, Self

import ipywidgets as w

from ..core import numbers as fmt
from ..core.figures import failed as failed_rows
from ..core.figures import not_sent
from . import charts
from .live import projection_sentence
from .style import (
    AMBER,
    AMBER_TEXT,
    BLUE,
    BORDER,
    FONT,
    GREEN,
    GREY,
    MUTED,
    RED,
    RED_TEXT,
    TEXT,
    TRACK,
    card_html,
    errors_html,
    header_html,
)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
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


class Card:
    """The shared machinery of the notebook cards (see the module docstring)."""

    # what differs in the wording between one run and several
    _BUDGET_SHARED = ""
    _RUN_STOPS = "the run stops"
    _BACKGROUND_HINT = "Cancel keeps every finished row."
    _RUN_TIP = "Start sending the requests shown in the estimate"
    _CANCEL_TIP = "Stop sending; requests in flight finish and finished rows are kept"

    budget: float | None

    def __init__(self, *, on_cancel: Callable[[], Any] | None, on_run: Callable[[], Any] | None,
                 background: bool, keep_widget: bool, min_interval: float, clock: Callable[[], float]) -> None:
        self.on_cancel = on_cancel
        self.on_run = on_run
        self.background = background
        self.keep_widget = keep_widget
        self.min_interval = min_interval
        self._clock = clock
        self._last: float | None = None
        self._force = True
        self._finished = False
        self._cancelled = False
        self._cancel_error: str | None = None
        self._run_clicked = False
        self._run_error: str | None = None
        self._handle: Any = None
        self.renders = 0  # how many times the widgets were recomputed (not how many were sent)
        self.rate_window = 10.0
        self._samples: deque[tuple[float, int]] = deque(maxlen=256)

        self.css = w.HTML(value=_CSS, layout=w.Layout(height="0px", margin="0", overflow="hidden"))
        self.header = _html()
        self.plan = _html()
        self.budget_label = _html()
        self.batch_label = _html(display="none")
        self.errors = _html()
        self.note = _html()
        self.summary = _html(display="none")

    def _budget_bar(self, margin: str) -> w.HTML:
        """The budget as a picture (``charts.budget_bar``: spent, projected, expected, budget)."""
        bar = _html()
        bar.layout.margin = margin
        bar.add_class("llmbatch-budget")
        return bar

    def _build(self, children: list[w.Widget]) -> None:
        """Add the buttons under ``children``, make the card and render it once."""
        self.run_button = w.Button(description="Run", icon="play", button_style="primary", tooltip=self._RUN_TIP,
                                   layout=w.Layout(width="auto", margin="0 8px 0 0", flex="0 0 auto"))
        self.run_button.on_click(self._run_click)
        self.cancel_button = w.Button(description="Cancel", icon="stop", button_style="", tooltip=self._CANCEL_TIP,
                                      layout=w.Layout(width="auto", margin="0 10px 0 0", flex="0 0 auto"))
        self.cancel_button.on_click(self._clicked)
        # While a cell blocks, most frontends deliver a click only after the cell ends, so the
        # way to stop that always works (interrupting the kernel) is named beside the button.
        self.hint = w.HTML(value="", layout=w.Layout(margin="0", width="auto", flex="1 1 auto"))
        # Cancel only where its click can arrive while the run goes on: a background job
        # (submit) or a run waiting for Run. In a blocking apply() the click would be delivered
        # after the cell ends, i.e. after every row was paid for (DESIGN: widget clicks are
        # queued behind the running cell); there the hint names the kernel's interrupt instead.
        self.cancellable = self.on_cancel is not None and (self.background or self.on_run is not None)
        buttons = ([self.run_button] if self.on_run is not None else []) + (
            [self.cancel_button] if self.cancellable else [])
        self.actions = w.HBox([*buttons, self.hint],
                              layout=w.Layout(margin="8px 0 0 0", align_items="center", width="100%"))
        self.widget = w.VBox([self.css, *children, self.actions], layout=w.Layout(
            border=f"1px solid {BORDER}", padding="8px 14px 10px 14px", max_width="760px", width="100%",
            margin="2px 0"))
        self.widget.add_class("llmbatch-panel")
        self._render(final=False)

    # -- the interface the accessor drives ---------------------------------------------------

    def show(self) -> Self:
        """Display the panel (once) under a display id, so ``finish()`` can replace it."""
        if self._handle is None:
            from IPython.display import display

            self._handle = display(self._bundle(live=True), raw=True, display_id=True)
        return self

    def update(self) -> None:
        """Refresh from the live counters; cheap to call often (throttled)."""
        if self._finished:
            return
        now = self._clock()
        if not self._force and self._last is not None and now - self._last < self.min_interval:
            return
        self._force = False
        self._last = now
        self._render(final=False)

    def finish(self) -> None:
        """Show the summary, hide the buttons and leave the static summary in the output."""
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
                and not self._finished and not self._started)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def _started(self) -> bool:
        raise NotImplementedError

    @property
    def _stage(self) -> str:
        return "finished" if self._finished else ("running" if self._started else "estimate")

    # -- clicks and trait writes ------------------------------------------------------------

    def _clicked(self, _button: w.Button) -> None:
        self.cancel()  # no widget write here: this may run on the kernel's shell thread

    def _run_click(self, _button: w.Button) -> None:
        self.run()  # no widget write either: the run it starts renders the panel

    @staticmethod
    def _set(obj: Any, name: str, value: Any) -> None:
        """Write a trait only if it changed (traitlets would not send it, but this also skips
        the validation and comparison work of the trait machinery)."""
        if getattr(obj, name) != value:
            setattr(obj, name, value)

    def _show(self, widget: w.Widget, visible: bool) -> None:
        self._set(widget.layout, "display", None if visible else "none")

    @staticmethod
    def _small(inner: str, color: str = TEXT) -> str:
        return f'<div style="font-size:12.5px;color:{color};font-variant-numeric:tabular-nums">{inner}</div>'

    # -- the parts rendered alike -------------------------------------------------------------

    def _render(self, *, final: bool) -> None:
        raise NotImplementedError

    def _detail(self) -> str:
        raise NotImplementedError

    def _plan_html(self, brief: bool) -> str | None:
        """The plan: a table (``brief=False``) or one line; None when there is none."""
        raise NotImplementedError

    def _render_head(self, label: str, tone: str, brief_plan: bool) -> None:
        """The header, and the plan (the table before the run, one line once it runs)."""
        self._set(self.header, "value", header_html("llmbatch_pd", self._detail(), label, tone))
        plan = self._plan_html(brief_plan)
        if plan is not None:
            self._set(self.plan, "value", plan)
        self._show(self.plan, plan is not None)

    def _render_budget(self, spent: float, final: bool, *, expected: float | None = None,
                       projection: Any = None) -> None:
        """Dollars spent against the budget, as a bar with the expected cost and (while the run
        goes on) the projected total; the words turn amber at 80 % and red at 100 %."""
        projected = getattr(projection, "projected_total", None) if not final else None
        show = self.budget is not None
        self._show(self.budget_bar, show)
        self._show(self.budget_label, show)
        if not show:
            return
        used = spent / self.budget if self.budget > 0 else (1.0 if spent else 0.0)
        self._set(self.budget_bar, "value", charts.budget_bar(spent, self.budget, expected=expected,
                                                              projected=projected))
        text_color = RED_TEXT if used >= 0.999 else AMBER_TEXT if used >= 0.8 else TEXT
        words = (f'<span style="color:{text_color};font-weight:600">{fmt.money(spent)}</span>'
                 f' of {fmt.money(self.budget)} budget{self._BUDGET_SHARED} · {fmt.percent(used)}')
        if expected is not None:
            words += f" · {fmt.money(expected)} expected"
        if used >= 0.8 and not final:
            words += f" · {self._RUN_STOPS} before it would go over"
        if projection is not None and not final:
            words += f'<br><span style="color:{MUTED}">{escape(projection_sentence(projection, self.budget))}</span>'
        self._set(self.budget_label, "value", self._small(words))

    def _pace(self, done: int, elapsed: float) -> float | None:
        """Rows per second over the last ``rate_window`` seconds (cached rows land at once, so
        the whole-run average would overstate the pace for the rows still to come); the
        average over ``elapsed`` until a window has passed."""
        now = self._clock()
        samples = self._samples
        if not samples or samples[-1][1] != done or now - samples[-1][0] >= 1.0:
            samples.append((now, done))
        while len(samples) > 2 and now - samples[1][0] >= self.rate_window:
            samples.popleft()
        t0, f0 = samples[0]
        if now - t0 >= 1.0 and done > f0:
            return (done - f0) / (now - t0)
        if elapsed >= 1.0 and done:
            return done / elapsed
        return None

    def _waiting_text(self, head: str) -> str:
        """The row line before anything was sent."""
        waiting = ("waiting for Run" if self.waiting
                   else "starting…" if self._run_clicked and not self._cancelled else "waiting to start")
        return self._small(head + f'<span style="color:{MUTED}"> · {waiting}</span>')

    def _render_end(self, final: bool, note: str, batch: bool) -> None:
        """Errors so far (the summary once final), the note and the buttons: Run only while
        waiting for it; Cancel disabled once clicked, gone when finished."""
        if final:
            self._show(self.errors, False)
            self._set(self.summary, "value", self._summary())
            self._show(self.summary, True)
        else:
            errs = self._errors()
            self._set(self.errors, "value", errors_html(errs, title="Errors so far") if errs else "")
            self._show(self.errors, bool(errs))

        self._set(self.note, "value", note)
        self._show(self.note, bool(note))

        self._show(self.actions, not final)
        self._set(self.hint, "value", self._hint(batch))
        if self.on_run is not None:
            self._show(self.run_button, self.waiting)
        if self.cancellable:
            self._set(self.cancel_button, "disabled", self._cancelled or final)
            self._set(self.cancel_button, "description",
                      "Stopping…" if self._cancelled and not final else "Cancel")
            self._show(self.cancel_button, not final)

    def _summary(self) -> str:
        raise NotImplementedError

    def _errors(self) -> list[tuple[str, int]]:
        raise NotImplementedError

    def _hint(self, batch: bool) -> str:
        if self.waiting:
            return self._small("Nothing is sent until you click Run.", MUTED)
        if batch:
            return self._small("Cancel stops waiting: submitted jobs keep running at the provider "
                               "and the same call run again collects them.", MUTED)
        if self.background:
            return self._small("Runs in the background: the notebook stays usable. " + self._BACKGROUND_HINT, MUTED)
        return self._small(("or interrupt" if self.cancellable else "Interrupt")
                           + " the kernel (■) to stop early: finished rows are kept", MUTED)

    def _note_html(self, lines: list[tuple[str, str]]) -> str:
        """The note: a failed click first, then ``lines`` of (colour, text)."""
        clicks = []
        if self._cancel_error:
            clicks.append((RED_TEXT, f"Cancel failed: {self._cancel_error}"))
        if self._run_error:
            clicks.append((RED_TEXT, f"Run failed: {self._run_error}"))
        return "".join(f'<div style="font-size:12.5px;color:{c};margin-top:4px">{escape(t)}</div>'
                       for c, t in clicks + lines)

    # -- display and export -----------------------------------------------------------------

    def _static(self) -> dict[str, str]:
        """The summary left in the output: ``text/html`` and ``text/plain``."""
        raise NotImplementedError

    def _live_text(self) -> str:
        raise NotImplementedError

    def _saved_text(self) -> str:
        raise NotImplementedError

    def _bundle(self, *, live: bool) -> dict[str, Any]:
        view = self.widget._repr_mimebundle_()[WIDGET_VIEW]
        if not live:
            return {WIDGET_VIEW: view, **self._static()}
        return {WIDGET_VIEW: view, "text/plain": self._live_text(), "text/html": self._snapshot_html()}

    def _snapshot_html(self) -> str:
        """What a notebook saved mid-run (without widget state) shows in place of the panel."""
        return card_html(header_html("llmbatch_pd", self._detail(), "running", "info") + (self._plan_html(False) or "")
                         + f'<div style="color:{MUTED};margin-top:6px">{self._saved_text()}</div>')

    def _export(self) -> None:
        if self._handle is None:
            return
        if self.keep_widget:
            self._handle.update(self._bundle(live=False), raw=True)
            return
        self._handle.update(self._static(), raw=True)
        self._close_widgets()

    def _inner_widgets(self) -> tuple[w.Widget, ...]:
        """Widgets below the card's children that ``_close_widgets`` frees too."""
        return ()

    def _close_widgets(self) -> None:
        """Free the widget models in the kernel and the browser once the summary replaced them."""
        for widget in (*self.widget.children, *self._inner_widgets(), self.run_button, self.cancel_button,
                       self.hint, self.widget):
            for part in (getattr(widget, "style", None), getattr(widget, "layout", None), widget):
                if isinstance(part, w.Widget):
                    part.close()


def render_rows(bar: w.IntProgress, report: Any, tone: str, final: bool) -> tuple[int, int, int]:
    """Move a run's row bar; returns (answered, failed, finished). Rows never sent are not
    failures here: they are not done. One reading of the counts, which the engine moves."""
    answered, failed = report.answered_rows, failed_rows(report)  # skipped rows are no failures
    rows = max(report.rows, 1)
    done = answered + report.failed_rows - not_sent(report)  # skipped rows are done, unsent are not
    finished = min(done, rows) if report.rows else (1 if final else 0)
    Card._set(bar, "max", rows)
    Card._set(bar, "value", finished)
    Card._set(bar.style, "bar_color", BAR_COLORS[tone] if final or tone in ("warn", "bad") else BLUE)
    return answered, failed, finished


__all__ = ["BAR_COLORS", "WIDGET_VIEW", "Card", "render_rows"]
