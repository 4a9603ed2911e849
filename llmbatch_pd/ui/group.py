"""Several models side by side in one display: ``df.llm.apply(template, model=[...])``.

Each model has its own ``Run`` and ``RunReport``; the runs go concurrently under one shared
budget. ``GroupPanel`` is one ipywidgets card for all of them: the estimate as a table (a row
per model and a total row), then per model a compact line with its own progress bar, one
budget bar for the summed cost, one Cancel (the caller cancels every run) and one Run button.
``console.GroupProgress`` is the tqdm fallback: one bar over rows × models with a postfix per model.

Same rules as ``panel.py``: reading the reports only, every widget write inside ``update()``,
``show_estimate()`` or ``finish()`` on one thread, at most one render every ``min_interval``
seconds, and only changed traits written. A click only sets a flag and calls back.
``finish()`` replaces the display with the combined static summary (``reports_html`` /
``reports_text``), which survives nbconvert.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from . import format as fmt
from .panel import _CSS, BAR_COLORS, WIDGET_VIEW, Panel, _html
from .report import (
    AMBER,
    AMBER_TEXT,
    BATCH_NOTE,
    BLUE,
    BORDER,
    GREEN,
    MUTED,
    RED,
    TEXT,
    batch_progress,
    card_html,
    errors_html,
    estimates_for,
    estimates_html,
    expected_cost,
    group_budget,
    group_errors,
    group_status,
    group_warnings,
    header_html,
    mode_of,
    not_sent,
    reports_body_html,
    reports_html,
    reports_text,
    short_models,
    status,
)

if TYPE_CHECKING:
    from ..plan import Estimate
    from ..run import RunReport

_set = Panel._set  # write a trait only if it changed
_small = Panel._small


def _mode_text(modes: list[str]) -> str:
    return modes[0] if len(set(modes)) == 1 else "real time and batch"


class _ModelLine:
    """One model's compact line: short name, its own progress bar, and its figures."""

    def __init__(self, name: str, full: str, rows: int) -> None:
        self.name = w.HTML(value=f'<div title="{escape(full)}" style="font-size:12.5px;font-weight:600;'
                                 f'white-space:nowrap;overflow:hidden;text-overflow:ellipsis">{escape(name)}</div>',
                           layout=w.Layout(margin="0", flex="0 0 24%", width="24%", overflow="hidden"))
        self.bar = w.IntProgress(value=0, min=0, max=max(rows, 1), style={"bar_color": BLUE},
                                 layout=w.Layout(margin="0 10px", flex="1 1 auto", width="auto"))
        self.text = w.HTML(value="", layout=w.Layout(margin="0", flex="0 0 46%", width="46%"))
        self.box = w.HBox([self.name, self.bar, self.text],
                          layout=w.Layout(width="100%", align_items="center", margin="3px 0 0 0"))


class GroupPanel:
    """An ipywidgets card for several runs side by side (one per model), with the interface of
    ``Panel``: ``show()``, ``show_estimate()``, ``update()``, ``finish()`` / ``close()``,
    ``cancel()``, ``run()``, ``waiting``, ``cancelled``.

    ``reports`` are read live; ``estimates`` are their plans in the same order (None entries
    allowed; a run's own ``report.estimate`` wins once it has one); ``budget`` is the one
    budget shared by all (default: the first an estimate or report carries). ``on_cancel`` is
    called once, and must cancel every run; ``on_run`` (once) starts them all.
    """

    def __init__(
        self,
        reports: Sequence[RunReport],
        estimates: Sequence[Estimate | None] | None = None,
        budget: float | None = None,
        *,
        on_cancel: Callable[[], Any] | None = None,
        on_run: Callable[[], Any] | None = None,
        background: bool = False,
        keep_widget: bool = False,
        min_interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reports = list(reports)
        if not self.reports:
            raise ValueError("GroupPanel needs at least one report")
        self._estimates = estimates_for(self.reports, estimates)  # checks the length
        self.budget = group_budget(self.reports, self._estimates, budget)
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
        self.renders = 0
        self.names = short_models([r.model for r in self.reports])

        self.css = w.HTML(value=_CSS, layout=w.Layout(height="0px", margin="0", overflow="hidden"))
        self.header = _html()
        self.plan = _html()
        self.lines = [_ModelLine(n, r.model, r.rows) for n, r in zip(self.names, self.reports, strict=True)]
        self.models = w.VBox([ln.box for ln in self.lines], layout=w.Layout(width="100%", margin="4px 0 0 0"))
        self.total_label = _html()
        self.budget_bar = w.FloatProgress(value=0.0, min=0.0, max=self._budget_max(),
                                          layout=w.Layout(width="100%", margin="6px 0 0 0"),
                                          style={"bar_color": BLUE})
        self.budget_bar.add_class("llmbatch-budget")
        self.budget_label = _html()
        self.batch_label = _html(display="none")
        self.errors = _html()
        self.note = _html()
        self.summary = _html(display="none")
        self.run_button = w.Button(description="Run", icon="play", button_style="primary",
                                   tooltip="Start sending the requests of every model shown in the estimate",
                                   layout=w.Layout(width="auto", margin="0 8px 0 0", flex="0 0 auto"))
        self.run_button.on_click(lambda _b: self.run())  # no widget write: the runs render the panel
        self.cancel_button = w.Button(description="Cancel", icon="stop", button_style="",
                                      tooltip="Stop every model; requests in flight finish and finished rows are kept",
                                      layout=w.Layout(width="auto", margin="0 10px 0 0", flex="0 0 auto"))
        self.cancel_button.on_click(lambda _b: self.cancel())  # no widget write (shell thread)
        self.hint = w.HTML(value="", layout=w.Layout(margin="0", width="auto", flex="1 1 auto"))
        buttons = ([self.run_button] if on_run is not None else []) + (
            [self.cancel_button] if on_cancel is not None else [])
        self.actions = w.HBox([*buttons, self.hint],
                              layout=w.Layout(margin="8px 0 0 0", align_items="center", width="100%"))
        self.widget = w.VBox(
            [self.css, self.header, self.plan, self.models, self.total_label, self.budget_bar,
             self.budget_label, self.batch_label, self.errors, self.note, self.summary, self.actions],
            layout=w.Layout(border=f"1px solid {BORDER}", padding="8px 14px 10px 14px", max_width="760px",
                            width="100%", margin="2px 0"))
        self.widget.add_class("llmbatch-panel")
        self._render(final=False)

    # -- the interface the accessor drives ---------------------------------------------------

    def show(self) -> GroupPanel:
        """Display the panel (once) under a display id, so ``finish()`` can replace it."""
        if self._handle is None:
            from IPython.display import display

            self._handle = display(self._bundle(live=True), raw=True, display_id=True)
        return self

    def show_estimate(self, estimates: Sequence[Estimate | None] | None = None) -> None:
        """Show (or replace) the plans: one row per model and the total."""
        if estimates is not None:
            self._estimates = estimates_for(self.reports, estimates)
            self.budget = group_budget(self.reports, self._estimates, self.budget)
        self._force = True
        self.update()

    def update(self) -> None:
        """Refresh from the reports' live counters; cheap to call often (throttled)."""
        if self._finished:
            return
        now = self._clock()
        if not self._force and self._last is not None and now - self._last < self.min_interval:
            return
        self._force = False
        self._last = now
        self._render(final=False)

    def finish(self) -> None:
        """Show the combined summary and leave it (static) in the output."""
        if self._finished:
            return
        self._finished = True
        self._render(final=True)
        self._export()

    close = finish

    def cancel(self) -> None:
        """What a click on Cancel does: flag it, call ``on_cancel`` once (for every run)."""
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
        """What a click on Run does: flag it, call ``on_run`` once."""
        if self.on_run is None or self._run_clicked or self._cancelled or self._finished:
            return
        self._run_clicked = True
        self._force = True
        try:
            self.on_run()
        except Exception as exc:
            self._run_error = f"{type(exc).__name__}: {exc}"
            self._run_clicked = False
            self._render(final=False)

    @property
    def waiting(self) -> bool:
        return (self.on_run is not None and not self._run_clicked and not self._cancelled
                and not self._finished and not self._started)

    @property
    def estimates(self) -> list[Estimate | None]:
        """The plans shown: each run's own (refined after a pilot) once it has one."""
        return estimates_for(self.reports, self._estimates)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def _started(self) -> bool:
        return any(r.stats.started is not None for r in self.reports)

    def __repr__(self) -> str:
        stage = "finished" if self._finished else ("running" if self._started else "estimate")
        done = sum(r.finished_rows for r in self.reports)
        rows = sum(r.rows for r in self.reports)
        return f"<GroupPanel {len(self.reports)} models: {done}/{rows} rows, {stage}>"

    # -- rendering ------------------------------------------------------------------------

    def _budget_max(self) -> float:
        return max(float(self.budget or 0.0), 1e-9)

    def _show(self, widget: w.Widget, visible: bool) -> None:
        _set(widget.layout, "display", None if visible else "none")

    def _render(self, *, final: bool) -> None:
        self.renders += 1
        reports, ests = self.reports, self.estimates
        modes = [mode_of(r, e) for r, e in zip(reports, ests, strict=True)]
        running = self._started
        label, tone = group_status(reports, cancelled=self._cancelled, final=final)
        _set(self.header, "value", header_html(
            "llmbatch_pd", f"{fmt.plural(len(reports), 'model')} · {_mode_text(modes)}", label, tone))

        # plan: the table before the run, one line once it runs
        if any(e is not None for e in ests):
            _set(self.plan, "value", self._plan_line(modes) if running or final
                 else estimates_html(reports, ests, budget=self.budget))
            self._show(self.plan, True)
        else:
            self._show(self.plan, False)

        # one line per model
        finished_all = rows_all = 0
        for line, r, mode in zip(self.lines, reports, modes, strict=True):
            finished = self._model_line(line, r, mode, final)
            finished_all += finished
            rows_all += r.rows
        _set(self.total_label, "value", self._total_text(finished_all, rows_all, final))

        # the summed cost against the one budget
        spent = sum(r.stats.cost for r in reports)
        has_budget = self.budget is not None
        self._show(self.budget_bar, has_budget)
        self._show(self.budget_label, has_budget)
        if has_budget:
            used = spent / self.budget if self.budget > 0 else (1.0 if spent else 0.0)
            _set(self.budget_bar, "max", self._budget_max())
            _set(self.budget_bar, "value", min(float(spent), self._budget_max()))
            _set(self.budget_bar.style, "bar_color", RED if used >= 0.999 else AMBER if used >= 0.8 else BLUE)
            text_color = RED if used >= 0.999 else AMBER_TEXT if used >= 0.8 else TEXT
            _set(self.budget_label, "value", _small(
                f'<span style="color:{text_color};font-weight:600">{fmt.money(spent)}</span>'
                f' of {fmt.money(self.budget)} budget, shared by all models · {fmt.percent(used)}'
                + (" · the runs stop before it would go over" if used >= 0.8 and not final else "")))

        batch = "batch" in modes and not final
        if batch:
            _set(self.batch_label, "value", f'<div style="font-size:12px;color:{MUTED};margin-top:2px">'
                                            f"{escape(BATCH_NOTE)}.</div>")
        self._show(self.batch_label, batch)

        if final:
            self._show(self.errors, False)
            _set(self.summary, "value", reports_body_html(reports, ests, budget=self.budget,
                                                          cancelled=self._cancelled))
            self._show(self.summary, True)
        else:
            errs = group_errors(reports, 3)
            _set(self.errors, "value", errors_html(errs, title="Errors so far") if errs else "")
            self._show(self.errors, bool(errs))

        note = self._note(final, batch)
        _set(self.note, "value", note)
        self._show(self.note, bool(note))

        self._show(self.actions, not final)
        _set(self.hint, "value", self._hint(batch))
        if self.on_run is not None:
            self._show(self.run_button, self.waiting)
        if self.on_cancel is not None:
            _set(self.cancel_button, "disabled", self._cancelled or final)
            _set(self.cancel_button, "description", "Stopping…" if self._cancelled and not final else "Cancel")
            self._show(self.cancel_button, not final)

    def _model_line(self, line: _ModelLine, r: RunReport, mode: str, final: bool) -> int:
        """Render one model's line; returns its finished rows (answered + failed, not unsent)."""
        s = r.stats
        answered, failed = r.answered_rows, r.failed_rows - not_sent(r)
        rows = max(r.rows, 1)
        finished = min(answered + failed, rows) if r.rows else (1 if final else 0)
        _set(line.bar, "max", rows)
        _set(line.bar, "value", finished)
        label, tone = status(r, cancelled=self._cancelled, final=final)
        _set(line.bar.style, "bar_color", BAR_COLORS[tone] if final or tone in ("warn", "bad") else BLUE)

        def span(text: str, color: str | None = None, wrap: bool = False) -> str:
            c = f"color:{color};" if color else ""
            return f'<span style="{c}margin-right:8px;white-space:{"normal" if wrap else "nowrap"}">{text}</span>'

        items = [span(f"<b>{fmt.count(finished)}</b>/{fmt.count(r.rows)}"),
                 span(f"✓{fmt.count(answered)}", GREEN if answered else MUTED),
                 span(f"✗{fmt.count(failed)}", RED if failed else MUTED),
                 span(fmt.money(s.cost))]
        for kind in ("429", "5xx"):
            n = s.by_kind.get(kind, 0)
            if n:
                items.append(span(f"{kind} ×{fmt.count(n)}", AMBER_TEXT))
        if s.batch_status and not final:
            done, total = batch_progress(s)
            items.append(span(f"batch {escape(s.batch_status)}" + (f" {fmt.count(done)}/{fmt.count(total)}"
                                                                   if total else ""), MUTED, wrap=True))
        elif mode == "batch" and not final and s.started is None:
            items.append(span("batch", MUTED))
        if s.stop_reason and not final:
            items.append(span(f"stopping: {escape(s.stop_reason[:60])}", AMBER_TEXT, wrap=True))
        elif final and label != "done":
            items.append(span(escape(label), RED if tone == "bad" else AMBER_TEXT))
        _set(line.text, "value", f'<div style="font-size:12.5px;font-variant-numeric:tabular-nums;'
                                 f'line-height:1.35">{"".join(items)}</div>')
        return finished

    def _total_text(self, finished: int, rows: int, final: bool) -> str:
        frac = finished / rows if rows else 1.0
        head = (f'<b>{fmt.count(finished)}</b> / {fmt.count(rows)} rows over '
                f'{fmt.plural(len(self.reports), "model")} · {fmt.percent(1.0 if final and finished >= rows else frac)}')
        started = [r.stats.started for r in self.reports if r.stats.started is not None]
        if not started:
            waiting = ("waiting for Run" if self.waiting
                       else "starting…" if self._run_clicked and not self._cancelled else "waiting to start")
            return _small(head + f'<span style="color:{MUTED}"> · {waiting}</span>')
        ends = [r.stats.finished if r.stats.finished is not None else time.monotonic()
                for r in self.reports if r.stats.started is not None]
        elapsed = max(ends) - min(started)
        return _small(head + f'<span style="color:{MUTED}"> · {fmt.duration(elapsed)}'
                      f'{"" if final else " elapsed"}</span>')

    def _plan_line(self, modes: list[str]) -> str:
        mids, lows, highs, requests = [], [], [], 0
        for e, mode in zip(self.estimates, modes, strict=True):
            low, mid, high = expected_cost(e, mode)
            lows.append(low)
            mids.append(mid)
            highs.append(high)
            requests += e.requests if e is not None else 0
        parts = [f"{fmt.plural(requests, 'request')} over {fmt.plural(len(modes), 'model')}"]
        if all(m is not None for m in mids):
            parts.append(f"{fmt.money(sum(mids))} expected ({fmt.money_range(sum(lows), sum(highs))})")
        walls = [e.wall_time_s for e in self.estimates if e is not None]
        if walls:
            parts.append(f"~{fmt.duration(max(walls))}")
        return _small("Plan: " + " · ".join(parts), MUTED)

    def _hint(self, batch: bool) -> str:
        if self.waiting:
            return _small("Nothing is sent until you click Run.", MUTED)
        if batch:
            return _small("Cancel stops waiting: submitted jobs keep running at the provider "
                          "and the same call run again collects them.", MUTED)
        if self.background:
            return _small("Runs in the background: the notebook stays usable. "
                          "Cancel stops every model and keeps every finished row.", MUTED)
        return _small(("or interrupt" if self.on_cancel is not None else "Interrupt")
                      + " the kernel (■) to stop early: finished rows are kept", MUTED)

    def _note(self, final: bool, batch: bool) -> str:
        lines = []
        if self._cancel_error:
            lines.append((RED, f"Cancel failed: {self._cancel_error}"))
        if self._run_error:
            lines.append((RED, f"Run failed: {self._run_error}"))
        if not final and self._cancelled:
            lines.append((AMBER_TEXT, "Stopping every model: nothing more is sent; requests in flight "
                                      "finish and every finished row is kept."
                          + (" Batch jobs keep running at the provider; the same call run again "
                             "collects them (not paid twice)." if batch else "")))
        for warning in group_warnings(self.reports)[-2:]:
            lines.append((AMBER_TEXT, f"⚠ {warning}"))
        return "".join(f'<div style="font-size:12.5px;color:{c};margin-top:4px">{escape(t)}</div>'
                       for c, t in lines)

    # -- display and export -----------------------------------------------------------------

    def _static(self) -> dict[str, str]:
        kw = {"budget": self.budget, "cancelled": self._cancelled}
        return {"text/html": reports_html(self.reports, self.estimates, **kw),
                "text/plain": reports_text(self.reports, self.estimates, **kw)}

    def _bundle(self, *, live: bool) -> dict[str, Any]:
        view = self.widget._repr_mimebundle_()[WIDGET_VIEW]
        if not live:
            return {WIDGET_VIEW: view, **self._static()}
        rows = self.reports[0].rows
        plain = (f"llmbatch_pd: {', '.join(r.model for r in self.reports)}, {rows:,} rows each "
                 "(live panel; the summary replaces it when the runs end)")
        return {WIDGET_VIEW: view, "text/plain": plain, "text/html": self._snapshot_html()}

    def _snapshot_html(self) -> str:
        """What a notebook saved mid-run (without widget state) shows in place of the panel."""
        modes = [mode_of(r, e) for r, e in zip(self.reports, self.estimates, strict=True)]
        plan = (estimates_html(self.reports, self.estimates, budget=self.budget)
                if any(e is not None for e in self.estimates) else "")
        return card_html(header_html("llmbatch_pd", f"{fmt.plural(len(self.reports), 'model')} · "
                                     f"{_mode_text(modes)}", "running", "info") + plan
                         + f'<div style="color:{MUTED};margin-top:6px">The runs were in progress when this '
                         f"output was saved.</div>")

    def _export(self) -> None:
        if self._handle is None:
            return
        if self.keep_widget:
            self._handle.update(self._bundle(live=False), raw=True)
            return
        self._handle.update(self._static(), raw=True)
        for widget in (*self.widget.children, *(p for ln in self.lines for p in (ln.name, ln.bar, ln.text)),
                       self.run_button, self.cancel_button, self.hint, self.widget):
            for part in (getattr(widget, "style", None), getattr(widget, "layout", None), widget):
                if isinstance(part, w.Widget):
                    part.close()


__all__ = ["GroupPanel"]
