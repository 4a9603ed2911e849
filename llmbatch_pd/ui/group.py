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

from ..core import numbers as fmt
from ..core.figures import (
    batch_progress,
    estimates_for,
    expected_cost,
    group_budget,
    group_status,
    mode_of,
    status,
)
from .card import Card, _html, render_rows
from .costs import PRICE_UNKNOWN, excludes, spent
from .lines import BATCH_NOTE, group_errors, group_warnings, short_models
from .live import over_estimate_warning, projection_of
from .report import estimates_html, group_title, reports_body_html, reports_html, reports_text
from .style import AMBER_TEXT, BLUE, GREEN_TEXT, MUTED, RED_TEXT

if TYPE_CHECKING:
    from ..core.report import RunReport
    from ..planning.estimate import Estimate

_set = Card._set  # write a trait only if it changed
_small = Card._small


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


class _Total:
    """The group's projection for the budget line: the models' projected totals summed."""

    def __init__(self, projected: float, budget: float | None, expected: float | None) -> None:
        self.projected_total = projected
        self.expected_total = expected
        self.cost_per_row = None
        self.stops_at_fraction = None
        self.over_estimate = bool(expected) and projected > 1.5 * expected
        self.budget = budget


class GroupPanel(Card):
    """An ipywidgets card for several runs side by side (one per model), with the interface of
    ``Panel``: ``show()``, ``show_estimate()``, ``update()``, ``finish()`` / ``close()``,
    ``cancel()``, ``run()``, ``waiting``, ``cancelled``.

    ``reports`` are read live; ``estimates`` are their plans in the same order (None entries
    allowed; a run's own ``report.estimate`` wins once it has one); ``budget`` is the one
    budget shared by all (default: the first an estimate or report carries). ``on_cancel`` is
    called once, and must cancel every run; ``on_run`` (once) starts them all.
    """

    _BUDGET_SHARED = ", shared by all models"
    _RUN_STOPS = "the runs stop"
    _BACKGROUND_HINT = "Cancel stops every model and keeps every finished row."
    _RUN_TIP = "Start sending the requests of every model shown in the estimate"
    _CANCEL_TIP = "Stop every model; requests in flight finish and finished rows are kept"

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
        super().__init__(on_cancel=on_cancel, on_run=on_run, background=background, keep_widget=keep_widget,
                         min_interval=min_interval, clock=clock)
        self.budget = group_budget(self.reports, self._estimates, budget)
        self.names = short_models([r.model for r in self.reports])

        self.lines = [_ModelLine(n, r.model, r.rows) for n, r in zip(self.names, self.reports, strict=True)]
        self.models = w.VBox([ln.box for ln in self.lines], layout=w.Layout(width="100%", margin="4px 0 0 0"))
        self.total_label = _html()
        self.budget_bar = self._budget_bar("6px 0 0 0")
        self._build([self.header, self.plan, self.models, self.total_label, self.budget_bar, self.budget_label,
                     self.batch_label, self.errors, self.note, self.summary])

    # -- the interface the accessor drives ---------------------------------------------------

    def show_estimate(self, estimates: Sequence[Estimate | None] | None = None) -> None:
        """Show (or replace) the plans: one row per model and the total."""
        if estimates is not None:
            self._estimates = estimates_for(self.reports, estimates)
            self.budget = group_budget(self.reports, self._estimates, self.budget)
        self._force = True
        self.update()

    @property
    def estimates(self) -> list[Estimate | None]:
        """The plans shown: each run's own (refined after a pilot) once it has one."""
        return estimates_for(self.reports, self._estimates)

    @property
    def _started(self) -> bool:
        return any(r.stats.started is not None for r in self.reports)

    def __repr__(self) -> str:
        done = sum(r.finished_rows for r in self.reports)
        rows = sum(r.rows for r in self.reports)
        return f"<GroupPanel {len(self.reports)} models: {done}/{rows} rows, {self._stage}>"

    # -- rendering ------------------------------------------------------------------------

    def _modes(self) -> list[str]:
        return [mode_of(r, e) for r, e in zip(self.reports, self.estimates, strict=True)]

    def _render(self, *, final: bool) -> None:
        self.renders += 1
        reports = self.reports
        modes = self._modes()
        label, tone = group_status(reports, cancelled=self._cancelled, final=final)
        self._render_head(label, tone, brief_plan=self._started or final)

        # one line per model
        finished_all = rows_all = 0
        for line, r, mode in zip(self.lines, reports, modes, strict=True):
            finished_all += self._model_line(line, r, mode, final)
            rows_all += r.rows
        _set(self.total_label, "value", self._total_text(finished_all, rows_all, final))

        # the summed cost against the one budget, the summed expectation and projection
        mids = [expected_cost(e, m)[1] for e, m in zip(self.estimates, modes, strict=True)]
        expected = None if any(m is None for m in mids) else sum(mids)
        projs = ([projection_of(r, e, self.budget) for r, e in zip(reports, self.estimates, strict=True)]
                 if self._started and not final else [])
        projected = (sum(p.projected_total for p in projs)
                     if projs and all(p is not None for p in projs) else None)
        total = _Total(projected, self.budget, expected) if projected is not None else None
        self._render_budget(sum(r.stats.cost for r in reports), final, expected=expected, projection=total)

        batch = "batch" in modes and not final
        if batch:
            _set(self.batch_label, "value", f'<div style="font-size:12px;color:{MUTED};margin-top:2px">'
                                            f"{escape(BATCH_NOTE)}.</div>")
        self._show(self.batch_label, batch)
        self._render_end(final, self._note(final, batch, total), batch)

    def _model_line(self, line: _ModelLine, r: RunReport, mode: str, final: bool) -> int:
        """Render one model's line; returns its finished rows (answered + failed, not unsent)."""
        label, tone = status(r, cancelled=self._cancelled, final=final)
        answered, failed, finished = render_rows(line.bar, r, tone, final)
        s = r.stats

        def span(text: str, color: str | None = None, wrap: bool = False) -> str:
            c = f"color:{color};" if color else ""
            return f'<span style="{c}margin-right:8px;white-space:{"normal" if wrap else "nowrap"}">{text}</span>'

        items = [span(f"<b>{fmt.count(finished)}</b>/{fmt.count(r.rows)}"),
                 span(f"✓{fmt.count(answered)}", GREEN_TEXT if answered else MUTED),
                 span(f"✗{fmt.count(failed)}", RED_TEXT if failed else MUTED),
                 span(spent(r)[0])]
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
            items.append(span(escape(label), RED_TEXT if tone == "bad" else AMBER_TEXT))
        _set(line.text, "value", f'<div style="font-size:12.5px;font-variant-numeric:tabular-nums;'
                                 f'line-height:1.35">{"".join(items)}</div>')
        return finished

    def _total_text(self, finished: int, rows: int, final: bool) -> str:
        frac = finished / rows if rows else 1.0
        head = (f'<b>{fmt.count(finished)}</b> / {fmt.count(rows)} rows over '
                f'{fmt.plural(len(self.reports), "model")} · {fmt.percent(1.0 if final and finished >= rows else frac)}')
        started = [r.stats.started for r in self.reports if r.stats.started is not None]
        if not started:
            return self._waiting_text(head)
        ends = [r.stats.finished if r.stats.finished is not None else time.monotonic()
                for r in self.reports if r.stats.started is not None]
        elapsed = max(ends) - min(started)
        answered = sum(r.answered_rows for r in self.reports)
        tail = ""
        if final:
            tail = f" · {fmt.rate(answered / elapsed)}" if answered and elapsed > 0 else ""
        elif "batch" not in self._modes():  # batch rows land when a job ends: no pace to read
            rate = self._pace(answered, elapsed)
            if rate:
                tail = f" · {fmt.rate(rate)} · ETA {fmt.duration(max(rows - finished, 0) / rate)}"
        return _small(head + f'<span style="color:{MUTED}">{tail} · {fmt.duration(elapsed)}'
                      f'{"" if final else " elapsed"}</span>')

    def _plan_line(self, modes: list[str]) -> str:
        mids, lows, highs, to_send = [], [], [], 0
        for e, mode in zip(self.estimates, modes, strict=True):
            low, mid, high = expected_cost(e, mode)
            lows.append(low)
            mids.append(mid)
            highs.append(high)
            to_send += e.to_send if e is not None else 0
        parts = [f"{fmt.plural(to_send, 'request')} over {fmt.plural(len(modes), 'model')}"]
        known = [i for i, m in enumerate(mids) if m is not None]
        if known:
            low, high = sum(lows[i] or 0.0 for i in known), sum(highs[i] or 0.0 for i in known)
            parts.append(f"{fmt.money(sum(mids[i] or 0.0 for i in known))} expected "
                         f"({fmt.money_range(low, high)})" + (f", {excludes(len(mids) - len(known))}"
                                                              if len(known) < len(mids) else ""))
        else:
            parts.append(PRICE_UNKNOWN)
        walls = [e.wall_time_s for e in self.estimates if e is not None]
        if walls:
            parts.append(f"~{fmt.duration(max(walls))}")
        return f'<span style="font-size:12.5px;color:{MUTED}">{"Plan: " + " · ".join(parts)}</span>'

    def _detail(self) -> str:
        return group_title(self.reports, self.estimates)[1]

    def _plan_html(self, brief: bool) -> str | None:
        if all(e is None for e in self.estimates):
            return None
        # the table stays above the live part, folded under its one-line plan (open at first)
        return (f'<div><details open><summary style="cursor:pointer">{self._plan_line(self._modes())}</summary>'
                f'{estimates_html(self.reports, self.estimates, budget=self.budget)}</details></div>')

    def _note(self, final: bool, batch: bool, projection: Any = None) -> str:
        lines = []
        warning = over_estimate_warning(projection) if projection is not None and not final else None
        if warning:
            lines.append((AMBER_TEXT, f"⚠ {warning[0].upper()}{warning[1:]}"))
        if not final and self._cancelled:
            lines.append((AMBER_TEXT, "Stopping every model: nothing more is sent; requests in flight "
                                      "finish and every finished row is kept."
                          + (" Batch jobs keep running at the provider; the same call run again "
                             "collects them (not paid twice)." if batch else "")))
        for warning in group_warnings(self.reports)[-2:]:
            lines.append((AMBER_TEXT, f"⚠ {warning}"))
        return self._note_html(lines)

    def _summary(self) -> str:
        return reports_body_html(self.reports, self.estimates, budget=self.budget, cancelled=self._cancelled)

    def _errors(self) -> list[tuple[str, int]]:
        return group_errors(self.reports, 3)

    # -- display and export -----------------------------------------------------------------

    def _static(self) -> dict[str, str]:
        kw = {"budget": self.budget, "cancelled": self._cancelled}
        return {"text/html": reports_html(self.reports, self.estimates, **kw),
                "text/plain": reports_text(self.reports, self.estimates, **kw)}

    def _live_text(self) -> str:
        return (f"llmbatch_pd: {', '.join(r.model for r in self.reports)}, {self.reports[0].rows:,} rows each "
                "(live panel; the summary replaces it when the runs end)")

    def _saved_text(self) -> str:
        return "The runs were in progress when this output was saved."

    def _inner_widgets(self) -> tuple[w.Widget, ...]:
        return tuple(p for ln in self.lines for p in (ln.name, ln.bar, ln.text))


__all__ = ["GroupPanel"]
