"""The static summary of a run (or of several side by side): one list of figures, rendered as
HTML, Markdown or text.

These are the renderers ``llmbatch_pd.ui`` registers with ``core.report``, so that a
``RunReport`` shows itself (``str()``, ``_repr_html_``, ``to_markdown()``) without the core
importing the UI. The figures come from ``ui.lines`` and ``ui.grid``, the look from
``ui.style``. Nothing here reads the network or pandas: it reads a ``RunReport`` (with its
``EngineStats``) and, optionally, the ``Estimate`` made before the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core import numbers as fmt
from ..core.figures import (
    budget_of,
    estimate_of,
    estimates_for,
    failed,
    group_status,
    mode_of,
    status,
    top_errors,
    warnings_of,
)
from .grid import (
    ESTIMATE_HEAD,
    REPORT_HEAD,
    estimate_rows,
    grid_html,
    grid_markdown,
    grid_text,
    report_rows,
)
from .lines import (
    Line,
    estimate_budget_line,
    group_errors,
    group_lines,
    group_warnings,
    plan_lines,
    summary_lines,
)
from .style import (
    GREEN,
    RED,
    bar_html,
    card_html,
    errors_html,
    header_html,
    md,
    one_line,
    table_html,
    warnings_html,
)

if TYPE_CHECKING:
    from ..core.report import RunReport
    from ..planning.estimate import Estimate


def _title_detail(report: RunReport, estimate: Estimate | None) -> tuple[str, str]:
    return "llmbatch_pd", f"{report.model} · {mode_of(report, estimate_of(report, estimate))}"


def summary_body_html(report: RunReport, estimate: Estimate | None = None, *,
                      budget: float | None = None, errors: int = 5) -> str:
    """The summary without its card and header: bar, table of figures, top errors, warnings."""
    rows = max(report.rows, 1)
    bar = bar_html([(report.answered_rows / rows, GREEN), (failed(report) / rows, RED)])
    return (bar + table_html(summary_lines(report, estimate, budget=budget))
            + errors_html(top_errors(report.stats, errors)) + warnings_html(warnings_of(report)))


def report_html(report: RunReport, estimate: Estimate | None = None, *,
                budget: float | None = None, cancelled: bool = False) -> str:
    """The static summary as one self-contained HTML block (inline styles, escaped text)."""
    title, detail = _title_detail(report, estimate)
    label, tone = status(report, cancelled=cancelled)
    return card_html(header_html(title, detail, label, tone) + summary_body_html(report, estimate, budget=budget))


def _lines_text(lines: list[Line]) -> list[str]:
    """Figure lines as aligned plain text, two spaces in."""
    width = max((len(ln.label) for ln in lines), default=0)
    return [f"  {ln.label:<{width}}  {one_line(ln.value)}" + (f"  ({one_line(ln.note)})" if ln.note else "")
            for ln in lines]


def _notes_markdown(errors: list[tuple[str, int]], warnings: list[str]) -> list[str]:
    """Top errors and warnings as Markdown lists (nothing when there are none)."""
    out: list[str] = []
    if errors:
        out += ["", "Top errors:", ""] + [f"- ×{fmt.count(n)} {md(msg)}" for msg, n in errors]
    if warnings:
        out += ["", "Warnings:", ""] + [f"- {md(msg)}" for msg in warnings]
    return out


def _notes_text(errors: list[tuple[str, int]], warnings: list[str]) -> list[str]:
    """Top errors and warnings as indented plain text (nothing when there are none)."""
    out: list[str] = []
    if errors:
        out.append("  Top errors:")
        out += [f"    ×{fmt.count(n):<6} {one_line(msg)}" for msg, n in errors]
    if warnings:
        out.append("  Warnings:")
        out += [f"    {one_line(msg)}" for msg in warnings]
    return out


def report_markdown(report: RunReport, estimate: Estimate | None = None, *,
                    budget: float | None = None, cancelled: bool = False) -> str:
    """The static summary as a Markdown table (for ``RunReport.to_markdown``)."""
    title, detail = _title_detail(report, estimate)
    label, _ = status(report, cancelled=cancelled)
    out = [f"**{md(title)}** · {md(detail)} · **{md(label)}**", "", "| | |", "|---|---|"]
    for ln in summary_lines(report, estimate, budget=budget):
        value = md(ln.value) + (f" ({md(ln.note)})" if ln.note else "")
        out.append(f"| {md(ln.label)} | {value} |")
    out += _notes_markdown(top_errors(report.stats), warnings_of(report))
    return "\n".join(out) + "\n"


def report_text(report: RunReport, estimate: Estimate | None = None, *,
                budget: float | None = None, cancelled: bool = False) -> str:
    """The static summary as aligned plain text (``text/plain`` and terminals)."""
    title, detail = _title_detail(report, estimate)
    label, _ = status(report, cancelled=cancelled)
    out = [f"{title} · {detail} · {label}", *_lines_text(summary_lines(report, estimate, budget=budget))]
    return "\n".join(out + _notes_text(top_errors(report.stats), warnings_of(report)))


def estimate_html(estimate: Estimate, *, budget: float | None = None, mode: str | None = None) -> str:
    """The plan before a run, as a table (no card)."""
    mode = mode or mode_of(None, estimate)
    return table_html(plan_lines(estimate, budget=budget_of(None, estimate, budget), mode=mode))


def estimate_text(estimate: Estimate, *, budget: float | None = None, mode: str | None = None) -> str:
    mode = mode or mode_of(None, estimate)
    lines = plan_lines(estimate, budget=budget_of(None, estimate, budget), mode=mode)
    width = max(len(ln.label) for ln in lines)
    return "\n".join(f"  {ln.label:<{width}}  {ln.value}" + (f"  ({ln.note})" if ln.note else "") for ln in lines)


def group_title(reports: list[Any], estimates: list[Any]) -> tuple[str, str]:
    modes = {mode_of(r, e) for r, e in zip(reports, estimates, strict=True)}
    mode = modes.pop() if len(modes) == 1 else "real time and batch"
    return "llmbatch_pd", f"{fmt.plural(len(reports), 'model')} · {mode}"


def _group_head(reports: list[Any], estimates: Any, cancelled: bool) -> tuple[list[Any], str, str, str, str]:
    """What a summary of several runs opens with: the plans (each report's own by default),
    then title, detail, status label and tone."""
    ests = estimates_for(reports, estimates)
    title, detail = group_title(reports, ests)
    label, tone = group_status(reports, cancelled=cancelled)
    return ests, title, detail, label, tone


def estimates_html(reports: list[Any], estimates: Any = None, *, budget: float | None = None) -> str:
    """The plan of several models before their runs: one row each, a total row, the budget."""
    rows, total = estimate_rows(reports, estimates)
    line = estimate_budget_line(reports, estimates, budget)
    return grid_html(ESTIMATE_HEAD, rows, total) + (table_html([line]) if line else "")


def estimates_text(reports: list[Any], estimates: Any = None, *, budget: float | None = None) -> str:
    rows, total = estimate_rows(reports, estimates)
    line = estimate_budget_line(reports, estimates, budget)
    text = grid_text(ESTIMATE_HEAD, rows, total)
    if line is not None:
        text += f"\n  {line.label}  {line.value}" + (f"  ({line.note})" if line.note else "")
    return text


def reports_body_html(reports: list[Any], estimates: Any = None, *, budget: float | None = None,
                      cancelled: bool = False, errors: int = 5) -> str:
    """The combined summary without its card and header: the table, the lines under it, top
    errors (prefixed with the model) and warnings."""
    rows, total = report_rows(reports, estimates, cancelled=cancelled)
    lines = group_lines(reports, estimates, budget=budget)
    return (grid_html(REPORT_HEAD, rows, total) + (table_html(lines) if lines else "")
            + errors_html(group_errors(reports, errors)) + warnings_html(group_warnings(reports)))


def reports_html(reports: list[RunReport], estimates: Any = None, *, budget: float | None = None,
                 cancelled: bool = False) -> str:
    """The static summary of several runs (one per model) as one self-contained HTML block: a
    row per model (rows answered / failed, requests, cached, tokens, cost against the estimate,
    time, status) and a total row. ``estimates`` (same order, or None) defaults to each
    report's own; ``budget`` to the shared one the reports carry."""
    reports = list(reports)
    ests, title, detail, label, tone = _group_head(reports, estimates, cancelled)
    return card_html(header_html(title, detail, label, tone)
                     + reports_body_html(reports, ests, budget=budget, cancelled=cancelled))


def reports_markdown(reports: list[RunReport], estimates: Any = None, *, budget: float | None = None,
                     cancelled: bool = False) -> str:
    """The static summary of several runs as a Markdown table and a list of notes."""
    reports = list(reports)
    ests, title, detail, label, _ = _group_head(reports, estimates, cancelled)
    rows, total = report_rows(reports, ests, cancelled=cancelled)
    out = [f"**{md(title)}** · {md(detail)} · **{md(label)}**", "", grid_markdown(REPORT_HEAD, rows, total)]
    lines = group_lines(reports, ests, budget=budget)
    if lines:
        out.append("")
        out += [f"- {md(ln.label)}: {md(ln.value)}" + (f" ({md(ln.note)})" if ln.note else "") for ln in lines]
    out += _notes_markdown(group_errors(reports), group_warnings(reports))
    return "\n".join(out) + "\n"


def reports_text(reports: list[RunReport], estimates: Any = None, *, budget: float | None = None,
                 cancelled: bool = False) -> str:
    """The static summary of several runs as aligned plain text (``text/plain``, terminals)."""
    reports = list(reports)
    ests, title, detail, label, _ = _group_head(reports, estimates, cancelled)
    rows, total = report_rows(reports, ests, cancelled=cancelled)
    out = [f"{title} · {detail} · {label}", grid_text(REPORT_HEAD, rows, total),
           *_lines_text(group_lines(reports, ests, budget=budget))]
    return "\n".join(out + _notes_text(group_errors(reports), group_warnings(reports)))


__all__ = [
    "estimate_html",
    "estimate_text",
    "estimates_html",
    "estimates_text",
    "report_html",
    "report_markdown",
    "report_text",
    "reports_body_html",
    "reports_html",
    "reports_markdown",
    "reports_text",
    "summary_body_html",
]
