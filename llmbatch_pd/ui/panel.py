"""The notebook panel: estimate before the run, live progress during it, a summary after.

The panel only reads a ``RunReport`` (whose ``EngineStats`` the engine updates in place) and an
``Estimate``. It never calls HTTP and it never writes a widget from another thread: every write
happens inside ``update()``, ``show_estimate()`` or ``finish()``, which the caller runs on one
thread (``run_sync`` ticks on the cell's thread; widget messages sent from there reach the
browser while the cell blocks, ipykernel >= 7.0.1). A Cancel click only sets a flag and calls
``on_cancel``; the next ``update()`` shows it. Cancel is shown only where its click can arrive
while the run goes on: a background job (``submit``) and a run waiting for Run. A click on a
card of a blocking ``apply()`` reaches the kernel after the cell has ended (DESIGN), i.e. after
every row was paid for, so that card has no Cancel and names the kernel's interrupt instead.

What the card shows while a run goes: the estimate table (folded under its one-line plan, open
at first) above the live part; the rows bar with the pace of answered rows and the ETA; a 60 s
sparkline of answered rows/s with the seconds that saw a 429; the budget bar (``ui.charts``:
spent, projected at the current cost per row, the expected cost, the budget) with the
projection in words; counts that are not zero; and a warning when the cost per row runs above
1.5x the estimate's (``RunReport.projection``).

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
from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from ..core import numbers as fmt
from ..core.figures import (
    batch_progress,
    budget_of,
    expected_cost,
    mode_of,
    status,
    top_errors,
    warnings_of,
)
from . import charts
from .card import Card, _html, render_rows
from .costs import PRICE_UNKNOWN, spent
from .estimate_view import money3, seconds
from .lines import BATCH_NOTE, batch_counts_text, batch_ids_text, summary_lines
from .live import (
    accounting_of,
    over_estimate_warning,
    projection_of,
    projection_sentence,
    rate_series_of,
)
from .report import estimate_html, report_html, report_text
from .style import AMBER_TEXT, BLUE, GREEN_TEXT, GREY, MUTED, RED_TEXT, errors_html, table_html

if TYPE_CHECKING:
    from ..core.report import RunReport
    from ..planning.estimate import Estimate

KIND_ORDER = ("429", "5xx", "529", "timeout", "connection", "malformed")


class Panel(Card):
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
        super().__init__(on_cancel=on_cancel, on_run=on_run, background=background, keep_widget=keep_widget,
                         min_interval=min_interval, clock=clock)
        self.report = report
        self._estimate = estimate
        self.budget = budget_of(report, estimate, budget)
        self.rate_window = rate_window
        self._answered = self._failed = 0

        rows = max(report.rows, 1)
        self.progress = w.IntProgress(value=0, min=0, max=rows, layout=w.Layout(width="100%", margin="6px 0 0 0"),
                                      style={"bar_color": BLUE})
        self.progress_label = _html()
        # mode="batch": the provider's jobs (status, ids, processed of total) while rows wait
        self.batch_bar = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="100%", margin="4px 0 0 0",
                                                                              display="none"),
                                       style={"bar_color": GREY})
        self.batch_bar.add_class("llmbatch-batch")
        self.budget_bar = self._budget_bar("4px 0 0 0")
        self.sparkline = _html(display="none")  # rows/s over the last 60 s, 429 marks
        self.projection = _html(display="none")  # without a budget: the projected total alone
        self.counts = _html()
        self._build([self.header, self.plan, self.progress, self.progress_label, self.sparkline, self.batch_bar,
                     self.batch_label, self.budget_bar, self.budget_label, self.projection, self.counts,
                     self.errors, self.note, self.summary])

    # -- the interface the accessor drives ---------------------------------------------------

    def show_estimate(self, estimate: Estimate | None = None) -> None:
        """Show (or replace) the plan: rows, requests, tokens, cost range, budget, wall time."""
        if estimate is not None:
            self._estimate = estimate
            if self.budget is None and estimate.budget is not None:
                self.budget = estimate.budget
        self._force = True
        self.update()

    @property
    def estimate(self) -> Estimate | None:
        """The plan shown: the run's own (refined after a pilot) once it has one."""
        return getattr(self.report, "estimate", None) or self._estimate

    @property
    def _started(self) -> bool:
        return self.report.stats.started is not None

    def __repr__(self) -> str:
        r = self.report
        return f"<Panel {r.model}: {r.finished_rows}/{r.rows} rows, {self._stage}>"

    # -- rendering ------------------------------------------------------------------------

    def _rate(self, answered: int) -> float | None:
        return self._pace(answered, self.report.stats.elapsed)

    def _render(self, *, final: bool) -> None:
        self.renders += 1
        r, s = self.report, self.report.stats
        mode = mode_of(r, self.estimate)
        label, tone = status(r, cancelled=self._cancelled, final=final)
        running = s.started is not None
        self._render_head(label, tone, brief_plan=running or final)

        # rows (one reading of the counts per render: the engine's thread moves them meanwhile)
        self._answered, self._failed, finished = render_rows(self.progress, r, tone, final)
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

        proj = projection_of(r, self.estimate, self.budget) if running and not final else None
        self._render_budget(s.cost, final, expected=expected_cost(self.estimate, mode)[1], projection=proj)
        series = rate_series_of(r) if running and not final and mode != "batch" else []
        spark = charts.sparkline(series)
        if spark:
            peak = max(rate for _, rate, _ in series)
            marks = sum(1 for *_, had in series if had)
            spark += (f'<div style="font-size:11px;color:{MUTED}">answered rows/s over the last 60 s · peak '
                      f'{fmt.rate(peak)}' + (f' · <span style="color:{RED_TEXT}">▮</span> {fmt.plural(marks, "second")}'
                                             ' with a 429 (rate limited)' if marks else "") + "</div>")
        self._set(self.sparkline, "value", spark)
        self._show(self.sparkline, bool(spark))
        alone = proj is not None and self.budget is None  # with a budget its label says it
        if alone:
            self._set(self.projection, "value", self._small(escape(projection_sentence(proj, None)).capitalize(),
                                                            MUTED))
        self._show(self.projection, alone)
        if not final:
            self._set(self.counts, "value", self._counts_html(batch=mode == "batch"))
        self._show(self.counts, running and not final)  # before the run they would all be zero
        self._render_end(final, self._note(final, proj), batch=mode == "batch")

    # -- pieces of HTML -------------------------------------------------------------------

    def _detail(self) -> str:
        return f"{self.report.model} · {mode_of(self.report, self.estimate)}"

    def _plan_html(self, brief: bool) -> str | None:
        if self.estimate is None:
            return None
        mode = mode_of(self.report, self.estimate)
        # the table stays above the live part, folded under its one-line plan (open at first)
        return (f'<div><details open><summary style="cursor:pointer">{self._plan_line(mode)}</summary>'
                f'{estimate_html(self.estimate, budget=self.budget, mode=mode)}</details></div>')

    def _plan_line(self, mode: str) -> str:
        e = self.estimate
        low, mid, high = expected_cost(e, mode)
        parts = [f"{fmt.plural(e.to_send, 'request')} to send"]
        if e.cached:
            parts.append(f"{fmt.count(e.cached)} cached")
        parts.append(f"~{fmt.tokens(e.input_tokens)} in / ~{fmt.tokens(e.output_tokens)} out tokens")
        if mid is not None:
            parts.append(f"{money3(mid)} expected ({money3(low)}–{money3(high)})")
        else:
            parts.append(PRICE_UNKNOWN)
        parts.append("up to 24 h (batch jobs)" if mode == "batch" else f"~{seconds(e.wall_time_s)}")
        return f'<span style="font-size:12.5px;color:{MUTED}">{"Plan: " + " · ".join(parts)}</span>'

    def _progress_text(self, finished: int, final: bool) -> str:
        r, s = self.report, self.report.stats
        rows = r.rows
        frac = finished / rows if rows else 1.0
        head = (f'<b>{fmt.count(finished)}</b> / {fmt.count(rows)} rows · '
                f'{fmt.percent(1.0 if final and finished >= rows else frac)}')
        if final:
            rows_s = self._answered / s.elapsed if s.elapsed > 0 and self._answered else None
            tail = f" · {fmt.duration(s.elapsed)}" + (f" · {fmt.rate(rows_s)}" if rows_s else "")
            return self._small(head + f'<span style="color:{MUTED}">{tail}</span>')
        if s.started is None:
            return self._waiting_text(head)
        if mode_of(r, self.estimate) == "batch":  # rows land when a job ends: no pace to read
            return self._small(head + f'<span style="color:{MUTED}"> · {fmt.duration(s.elapsed)} elapsed</span>')
        rate = self._rate(self._answered)  # answered rows: failures and unsent rows are no pace
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

    def _counts_html(self, batch: bool = False) -> str:
        """The live counts, each only when it says something: no "429 ×0", no "0 in flight"
        or "tokens 0 in / 0 out" while batch jobs hold every request, and the dollars here only
        when no budget line above already shows them."""
        r, s = self.report, self.report.stats

        def chip(text: str, color: str | None = None) -> str:
            c = f"color:{color};" if color else ""
            return f'<span style="{c}margin-right:14px;white-space:nowrap">{text}</span>'

        answered, failed = self._answered, self._failed
        items = [chip(f"✓ <b>{fmt.count(answered)}</b> answered", GREEN_TEXT if answered else None),
                 chip(f"✗ <b>{fmt.count(failed)}</b> failed", RED_TEXT if failed else None)]
        acc = accounting_of(r)
        for label, counts in (("skipped", getattr(acc, "skipped", None)), ("not sent", getattr(acc, "not_sent", None))):
            n = sum(dict(counts or {}).values())
            if n:
                items.append(chip(f"<b>{fmt.count(n)}</b> {label}", MUTED))
        if s.retrying:
            items.append(chip(f"↻ <b>{fmt.count(s.retrying)}</b> retrying", AMBER_TEXT))
        if s.in_flight and not batch:
            items.append(chip(f"<b>{fmt.count(s.in_flight)}</b> in flight", MUTED))
        kinds = dict(s.by_kind)
        for kind in (*KIND_ORDER, *sorted(k for k in kinds if k not in KIND_ORDER)):
            n = kinds.get(kind, 0)
            if n:
                items.append(chip(f"{kind} ×{fmt.count(n)}", AMBER_TEXT))
        parts = []
        if s.input_tokens or s.output_tokens:
            parts.append(f"tokens {fmt.tokens(s.input_tokens)} in / {fmt.tokens(s.output_tokens)} out")
        money_text, _ = spent(r, self.estimate)
        if self.budget is None or money_text == PRICE_UNKNOWN:  # else the budget line says it
            parts.append(f"<b>{money_text}</b>" + ("" if money_text == PRICE_UNKNOWN else " spent"))
        if r.cached:
            parts.append(f"{fmt.count(r.cached)} cached")
        if r.duplicates:
            parts.append(f"{fmt.count(r.duplicates)} duplicates")
        line2 = f'<div style="color:{MUTED}">{" · ".join(parts)}</div>' if parts else ""
        return (f'<div style="font-size:12.5px;margin-top:4px;font-variant-numeric:tabular-nums">'
                f'<div>{"".join(items)}</div>{line2}</div>')

    def _note(self, final: bool, projection: Any = None) -> str:
        s = self.report.stats
        kept = "every finished row is kept" if self._finished_rows() else "nothing had finished yet"
        lines = []
        if not final:
            if self._cancelled and mode_of(self.report, self.estimate) == "batch":
                lines.append((AMBER_TEXT, "Stopping: no longer waiting for the batch jobs. They keep "
                                          "running at the provider; the same call run again collects "
                                          "their answers (not paid twice)."))
            elif self._cancelled:
                lines.append((AMBER_TEXT, f"Stopping: nothing more is sent; requests in flight finish and {kept}."))
            elif s.stop_reason:
                lines.append((AMBER_TEXT, f"Stopping: {s.stop_reason}. Requests in flight finish; {kept}."))
            warning = over_estimate_warning(projection) if projection is not None else None
            if warning:
                lines.append((AMBER_TEXT, f"⚠ {warning[0].upper()}{warning[1:]}"))
        for warning in warnings_of(self.report)[-2:]:
            lines.append((AMBER_TEXT, f"⚠ {warning}"))
        return self._note_html(lines)

    def _finished_rows(self) -> int:
        return self._answered + self._failed

    def _summary(self) -> str:
        lines = summary_lines(self.report, self.estimate, budget=self.budget)
        skip = {"Rows"}  # the bar above already says it
        return (table_html([ln for ln in lines if ln.label not in skip])
                + errors_html(top_errors(self.report.stats)))

    def _errors(self) -> list[tuple[str, int]]:
        return top_errors(self.report.stats, 3)

    # -- display and export -----------------------------------------------------------------

    def _static(self) -> dict[str, str]:
        kw = {"budget": self.budget, "cancelled": self._cancelled}
        return {"text/html": report_html(self.report, self.estimate, **kw),
                "text/plain": report_text(self.report, self.estimate, **kw)}

    def _live_text(self) -> str:
        r = self.report
        return f"llmbatch_pd: {r.model}, {r.rows:,} rows (live panel; the summary replaces it when the run ends)"

    def _saved_text(self) -> str:
        return f"The run was in progress when this output was saved: {fmt.count(self.report.rows)} rows."


__all__ = ["Panel"]
