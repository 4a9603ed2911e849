"""The static summary of a run: one list of figures, rendered as HTML, Markdown or text.

The HTML is self-contained (inline styles, no scripts, no external fonts) so it survives
``jupyter nbconvert --to html``, GitHub's notebook viewer and an offline reader. Every string
that comes from outside (model names, error messages, stop reasons) is escaped.

Nothing here reads the network or pandas: it reads a ``RunReport`` (with its ``EngineStats``)
and, optionally, the ``Estimate`` made before the run.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import format as fmt

if TYPE_CHECKING:
    from ..plan import Estimate
    from ..run import RunReport
    from ..stats import EngineStats

# -- look -----------------------------------------------------------------------------------
# Fixed accent colours read well on light and dark themes; text and surfaces follow
# JupyterLab's theme variables where they exist, with light fallbacks elsewhere.
BLUE = "#2f6feb"
GREEN = "#1a7f37"
RED = "#cf222e"
AMBER = "#d29922"
AMBER_TEXT = "#9a6700"
GREY = "#6e7781"
TONES = {"ok": GREEN, "bad": RED, "warn": AMBER_TEXT, "info": BLUE, "muted": GREY, "": ""}
BADGE = {"ok": GREEN, "bad": RED, "warn": AMBER, "info": BLUE, "muted": GREY, "": GREY}

FONT = ("system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif")
TEXT = "var(--jp-ui-font-color1, #1f2328)"
MUTED = "var(--jp-ui-font-color2, #57606a)"
SURFACE = "var(--jp-layout-color1, #ffffff)"
BORDER = "var(--jp-border-color2, #d0d7de)"
TRACK = "var(--jp-layout-color2, #eaeef2)"  # a light track: the filled part carries the figure

CARD = (f"font-family:{FONT};font-size:13px;line-height:1.45;color:{TEXT};background:{SURFACE};"
        f"border:1px solid {BORDER};border-radius:8px;padding:10px 14px;max-width:760px;"
        "box-sizing:border-box;text-align:left;")
# JupyterLab and nbconvert style every table in rendered HTML (centred, right-aligned cells,
# zebra rows, hover); inline styles override all of that.
TABLE = ("border-collapse:collapse;border:none;margin:4px 0 0 0;width:auto;table-layout:auto;"
         "font-size:13px;color:inherit;background:transparent;")
TR = "background:transparent;border:none;"
TH = (f"text-align:left;font-weight:400;color:{MUTED};padding:1px 18px 1px 0;border:none;"
      "white-space:nowrap;vertical-align:top;background:transparent;")
TD = ("text-align:left;padding:1px 0;border:none;vertical-align:top;background:transparent;"
      "font-variant-numeric:tabular-nums;")

MAX_ERROR_CHARS = 200


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def badge(label: str, tone: str) -> str:
    return (f'<span style="display:inline-block;padding:1px 9px;border-radius:999px;font-size:11px;'
            f'font-weight:600;letter-spacing:.03em;text-transform:uppercase;color:#fff;'
            f'background:{BADGE.get(tone, GREY)};white-space:nowrap">{esc(label)}</span>')


def colored(text_html: str, tone: str, *, bold: bool = False) -> str:
    color = TONES.get(tone, "")
    if not color and not bold:
        return text_html
    style = (f"color:{color};" if color else "") + ("font-weight:600;" if bold else "")
    return f'<span style="{style}">{text_html}</span>'


def muted(text_html: str) -> str:
    return f'<span style="color:{MUTED}">{text_html}</span>'


def bar_html(parts: list[tuple[float, str]], *, height: int = 6) -> str:
    """A thin stacked bar: ``parts`` are (fraction, colour) from the left."""
    segs = "".join(
        f'<div style="width:{max(0.0, min(1.0, f)) * 100:.2f}%;background:{c};height:100%"></div>'
        for f, c in parts if f > 0
    )
    return (f'<div style="display:flex;width:100%;height:{height}px;border-radius:{height}px;'
            f'overflow:hidden;background:{TRACK};margin:6px 0 4px 0">{segs}</div>')


def header_html(title: str, detail: str, status_label: str, tone: str) -> str:
    return (f'<div style="display:flex;align-items:center;gap:8px;flex-wrap:wrap">'
            f'<span style="font-weight:600">{esc(title)}</span>'
            f'<span style="color:{MUTED};overflow-wrap:anywhere">{esc(detail)}</span>'
            f'<span style="margin-left:auto">{badge(status_label, tone)}</span></div>')


def table_html(lines: list[Line]) -> str:
    rows = "".join(
        f'<tr style="{TR}"><th style="{TH}">{esc(ln.label)}</th><td style="{TD}">'
        f'{colored(esc(ln.value), ln.tone, bold=ln.tone in ("bad", "warn") and len(ln.value) < 40)}'
        f'{"&ensp;" + muted(esc(ln.note)) if ln.note else ""}</td></tr>'
        for ln in lines
    )
    return f'<table style="{TABLE}"><tbody>{rows}</tbody></table>'


def errors_html(errors: list[tuple[str, int]], *, title: str = "Top errors") -> str:
    if not errors:
        return ""
    items = "".join(
        f'<li style="margin:1px 0;padding:0;list-style:none;overflow-wrap:anywhere">'
        f'<span style="display:inline-block;min-width:3.2em;color:{RED};font-weight:600;'
        f'font-variant-numeric:tabular-nums">×{fmt.count(n)}</span>{esc(_one_line(msg))}</li>'
        for msg, n in errors
    )
    return (f'<div style="margin-top:6px"><div style="color:{MUTED}">{esc(title)}</div>'
            f'<ul style="margin:2px 0 0 0;padding:0;font-family:ui-monospace,SFMono-Regular,'
            f'Menlo,Consolas,monospace;font-size:12px">{items}</ul></div>')


# -- figures --------------------------------------------------------------------------------


@dataclass
class Line:
    """One figure of a summary: a label, its value, a quieter note and a tone for colour."""

    label: str
    value: str
    note: str = ""
    tone: str = ""


def mode_of(report: Any = None, estimate: Any = None) -> str:
    """"real time" or "batch" (read from an optional ``mode`` attribute, if any)."""
    for obj in (report, estimate):
        mode = getattr(obj, "mode", None)
        if mode:
            return "batch" if "batch" in str(mode).lower() else "real time"
    return "real time"


def estimate_of(report: Any = None, estimate: Estimate | None = None) -> Estimate | None:
    """The estimate passed in, else the one the run attached to its report (after a pilot)."""
    return estimate if estimate is not None else getattr(report, "estimate", None)


def budget_of(report: Any = None, estimate: Any = None, budget: float | None = None) -> float | None:
    if budget is not None:
        return budget
    for obj in (estimate, report):
        b = getattr(obj, "budget", None)
        if b is not None:
            return b
    return None


def expected_cost(estimate: Estimate | None, mode: str) -> tuple[float | None, float | None, float | None]:
    """(low, expected, high) dollars for the mode of the run."""
    if estimate is None:
        return None, None, None
    if mode == "batch" and estimate.batch_cost is not None:
        return estimate.batch_cost_low, estimate.batch_cost, estimate.batch_cost_high
    return estimate.cost_low, estimate.cost, estimate.cost_high


def top_errors(stats: EngineStats, n: int = 5) -> list[tuple[str, int]]:
    # list() copies in one step: the engine's thread may add an error while we read
    errors = list((getattr(stats, "errors", None) or {}).items())
    ranked = sorted(errors, key=lambda kv: -kv[1])  # stable: ties keep first-seen order
    return [(str(msg)[:MAX_ERROR_CHARS], cnt) for msg, cnt in ranked[:n]]


def kinds_text(stats: EngineStats) -> str:
    by_kind = list((getattr(stats, "by_kind", None) or {}).items())
    items = sorted(((k, v) for k, v in by_kind if v), key=lambda kv: -kv[1])
    return " · ".join(f"{k} ×{fmt.count(v)}" for k, v in items)


def status(report: RunReport, *, cancelled: bool = False, final: bool = True) -> tuple[str, str]:
    """(label, tone) of a run: done / failed / stopped / cancelled / interrupted / running."""
    s = report.stats
    if report.interrupted:
        return "interrupted", "bad"
    if cancelled:
        return ("cancelled" if final else "stopping"), ("bad" if final else "warn")
    if s.stop_reason:
        return ("stopped" if final else "stopping"), ("bad" if final else "warn")
    if not final:
        return ("running", "info") if s.started is not None else ("estimate", "muted")
    if report.rows and report.answered_rows == 0 and report.failed_rows:
        return "failed", "bad"
    return "done", "ok"


def throughput(report: RunReport) -> tuple[float | None, float | None]:
    """(rows per second, requests per second) over the run's wall time."""
    s = report.stats
    elapsed = s.elapsed
    if elapsed <= 0:
        return None, None
    return (report.finished_rows - not_sent(report)) / elapsed, s.finished_count / elapsed


def not_sent(report: Any) -> int:
    """Rows closed unsent because the run stopped first (cancelled, budget reached): counted in
    ``failed_rows`` but shown apart, as they neither failed nor cost anything."""
    return getattr(report, "not_sent", 0) or 0


def plan_lines(estimate: Estimate, *, budget: float | None = None, mode: str = "real time") -> list[Line]:
    """The estimate before a run, one figure a line."""
    e = estimate
    lines = [Line("Model", e.model, mode)]
    unique = [f"{fmt.count(e.duplicates)} duplicates"]
    if e.skipped:
        unique.append(f"{fmt.count(e.skipped)} skipped (missing values)")
    if e.too_long:
        unique.append(f"{fmt.count(e.too_long)} too long")
    lines.append(Line("Rows", fmt.count(e.rows)))
    lines.append(Line("Requests", fmt.count(e.requests), "after de-duplication: " + ", ".join(unique)))
    lines.append(Line("Cache hits", fmt.count(e.cached),
                      f"saves {fmt.money(e.cache_saves)}" if e.cache_saves else ""))
    to_send = max(0, e.requests - e.cached)
    lines.append(Line("To send", fmt.count(to_send)))
    lines.append(Line("Input tokens", fmt.tokens(e.input_tokens),
                      f"{fmt.tokens(e.input_tokens_low)}–{fmt.tokens(e.input_tokens_high)}"
                      + (f"; {e.token_counting}" if e.token_counting else "")))
    lines.append(Line("Output tokens", "~" + fmt.tokens(e.output_tokens),
                      f"{fmt.tokens(e.output_tokens_low)}–{fmt.tokens(e.output_tokens_high)}"
                      + (f"; {e.output_basis}" if e.output_basis else "")))
    low, mid, high = expected_cost(e, mode)
    if mid is None:
        lines.append(Line("Cost", fmt.MISSING, "no price known for this model", "warn"))
    else:
        tone, note = "", f"range {fmt.money_range(low, high)}" + (" at batch prices" if mode == "batch" else "")
        if budget is not None:
            if mid > budget:
                tone, note = "bad", note + "; the expected cost is above the budget"
            elif mid >= 0.8 * budget:
                tone, note = "warn", note + "; the expected cost is close to the budget"
            elif high is not None and high > budget:
                note += "; the high end is above the budget (the run would stop there)"
        lines.append(Line("Cost", fmt.money(mid), note, tone))
    if budget is not None:
        lines.append(Line("Budget", fmt.money(budget), "never exceeded: the run stops first"))
    lines.append(Line("Wall time", "~" + fmt.duration(e.wall_time_s)))
    return lines


def summary_lines(report: RunReport, estimate: Estimate | None = None, *,
                  budget: float | None = None) -> list[Line]:
    """The figures of a finished (or unfinished) run, one a line."""
    s = report.stats
    estimate = estimate_of(report, estimate)
    mode = mode_of(report, estimate)
    budget = budget_of(report, estimate, budget)
    lines = [Line("Rows", fmt.count(report.rows))]
    prefilled = getattr(report, "prefilled", 0) or 0
    lines.append(Line("Answered", fmt.count(report.answered_rows),
                      f"{fmt.count(prefilled)} by the pilot" if prefilled else "",
                      "ok" if report.answered_rows else ""))
    failed_notes = []
    if report.skipped:
        failed_notes.append(f"{fmt.count(report.skipped)} skipped (missing values)")
    too_long = getattr(report, "too_long", 0) or 0
    if too_long:
        failed_notes.append(f"{fmt.count(too_long)} too long for the model")
    failed_note = ", ".join(failed_notes)
    unsent = not_sent(report)
    failed = report.failed_rows - unsent
    lines.append(Line("Failed", fmt.count(failed), failed_note, "bad" if failed else ""))
    if unsent:
        lines.append(Line("Not sent", fmt.count(unsent), "the run stopped before sending them", "warn"))
    lines.append(Line("Requests sent", fmt.count(s.sent),
                      f"for {fmt.plural(report.requests, 'unique request')}" if report.requests != s.sent else ""))
    lines.append(Line("Duplicates", fmt.count(report.duplicates),
                      "sent once, answer shared" if report.duplicates else ""))
    lines.append(Line("Cached", fmt.count(report.cached), "answered from the cache" if report.cached else ""))
    kinds = kinds_text(s)
    lines.append(Line("Errors by kind", kinds or "none", "retried where retryable" if kinds else ""))
    tok_note = ""
    if estimate is not None:
        tok_note = f"expected {fmt.tokens(estimate.input_tokens)} / ~{fmt.tokens(estimate.output_tokens)}"
    lines.append(Line("Tokens", f"{fmt.tokens(s.input_tokens)} in / {fmt.tokens(s.output_tokens)} out", tok_note))
    low, mid, high = expected_cost(estimate, mode)
    cost_notes, tone = [], ""
    if mid is not None:
        cost_notes.append(f"expected {fmt.money(mid)}, range {fmt.money_range(low, high)}")
    if budget is not None:
        used = s.cost / budget if budget > 0 else (1.0 if s.cost else 0.0)
        cost_notes.append(f"budget {fmt.money(budget)} ({fmt.percent(used)} used)")
        tone = "warn" if used >= 0.8 else ""
    if estimate is not None and mid is None and not s.cost:
        lines.append(Line("Cost", fmt.MISSING, "no price known for this model", "warn"))
    else:
        lines.append(Line("Cost", fmt.money(s.cost), "; ".join(cost_notes), tone))
    by_cache = getattr(report, "saved_by_cache", None)
    if by_cache is None and estimate is not None:
        by_cache = estimate.cache_saves
    by_dedup = getattr(report, "saved_by_dedup", None)
    saved = []
    if by_cache:
        saved.append(f"{fmt.money(by_cache)} by the cache")
    if by_dedup:
        saved.append(f"{fmt.money(by_dedup)} by de-duplication")
    if saved:
        lines.append(Line("Saved", " · ".join(saved), "", "ok"))
    wall_note = f"expected ~{fmt.duration(estimate.wall_time_s)}" if estimate is not None else ""
    lines.append(Line("Wall time", fmt.duration(s.elapsed) if s.started is not None else fmt.MISSING, wall_note))
    rows_s, req_s = throughput(report)
    lines.append(Line("Throughput", fmt.rate(rows_s, "rows"),
                      fmt.rate(req_s, "requests") if req_s is not None else ""))
    if s.stop_reason:
        lines.append(Line("Stopped early", s.stop_reason, "finished rows were kept", "bad"))
    if report.interrupted:
        lines.append(Line("Interrupted", "yes", "finished rows were kept", "bad"))
    return lines


def warnings_of(report: Any) -> list[str]:
    return [str(x)[:MAX_ERROR_CHARS] for x in list(getattr(report, "warnings", None) or [])]


def warnings_html(warnings: list[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f'<li style="margin:1px 0;padding:0;list-style:none;overflow-wrap:anywhere">'
                    f'⚠ {esc(_one_line(msg))}</li>' for msg in warnings)
    return f'<ul style="margin:6px 0 0 0;padding:0;color:{AMBER_TEXT}">{items}</ul>'


def _title_detail(report: RunReport, estimate: Estimate | None) -> tuple[str, str]:
    return "llmbatch_pd", f"{report.model} · {mode_of(report, estimate_of(report, estimate))}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# -- renderings -----------------------------------------------------------------------------


def summary_body_html(report: RunReport, estimate: Estimate | None = None, *,
                      budget: float | None = None, errors: int = 5) -> str:
    """The summary without its card and header: bar, table of figures, top errors, warnings."""
    rows = max(report.rows, 1)
    bar = bar_html([(report.answered_rows / rows, GREEN), ((report.failed_rows - not_sent(report)) / rows, RED)])
    return (bar + table_html(summary_lines(report, estimate, budget=budget))
            + errors_html(top_errors(report.stats, errors)) + warnings_html(warnings_of(report)))


def card_html(inner: str) -> str:
    """The card around a static block. Notebook frontends typeset ``$...$`` in HTML outputs as
    LaTeX (JupyterLab, nbconvert's MathJax), which would turn "$0.10 expected $0.25" into
    math: the ignore classes switch MathJax 2 and 3 off for the card, and each dollar sign sits
    in its own element so no two of them share a text run even where the classes are unknown."""
    return (f'<div class="llmbatch-report tex2jax_ignore mathjax_ignore" style="{CARD}">'
            + _TEXT_RUN.sub(lambda m: m.group(0).replace("$", "<span>$</span>"), inner) + "</div>")


_TEXT_RUN = re.compile(r"(?<=>)[^<>]*\$[^<>]*(?=<)")


def report_html(report: RunReport, estimate: Estimate | None = None, *,
                budget: float | None = None, cancelled: bool = False) -> str:
    """The static summary as one self-contained HTML block (inline styles, escaped text)."""
    title, detail = _title_detail(report, estimate)
    label, tone = status(report, cancelled=cancelled)
    return card_html(header_html(title, detail, label, tone) + summary_body_html(report, estimate, budget=budget))


def _md(text: Any) -> str:
    """Escape for a Markdown table cell: HTML, pipes, emphasis, dollars (MathJax), line breaks."""
    return esc(_one_line(text)).replace("\\", "\\\\").replace("$", "\\$").replace("|", "\\|").replace("`", "\\`").replace("*", "\\*").replace("_", "\\_")


def report_markdown(report: RunReport, estimate: Estimate | None = None, *,
                    budget: float | None = None, cancelled: bool = False) -> str:
    """The static summary as a Markdown table (for ``RunReport.to_markdown``)."""
    title, detail = _title_detail(report, estimate)
    label, _ = status(report, cancelled=cancelled)
    out = [f"**{_md(title)}** · {_md(detail)} · **{_md(label)}**", "", "| | |", "|---|---|"]
    for ln in summary_lines(report, estimate, budget=budget):
        value = _md(ln.value) + (f" ({_md(ln.note)})" if ln.note else "")
        out.append(f"| {_md(ln.label)} | {value} |")
    errors = top_errors(report.stats)
    if errors:
        out += ["", "Top errors:", ""]
        out += [f"- ×{fmt.count(n)} {_md(msg)}" for msg, n in errors]
    warnings = warnings_of(report)
    if warnings:
        out += ["", "Warnings:", ""] + [f"- {_md(msg)}" for msg in warnings]
    return "\n".join(out) + "\n"


def report_text(report: RunReport, estimate: Estimate | None = None, *,
                budget: float | None = None, cancelled: bool = False) -> str:
    """The static summary as aligned plain text (``text/plain`` and terminals)."""
    title, detail = _title_detail(report, estimate)
    label, _ = status(report, cancelled=cancelled)
    lines = summary_lines(report, estimate, budget=budget)
    width = max(len(ln.label) for ln in lines)
    out = [f"{title} · {detail} · {label}"]
    for ln in lines:
        out.append(f"  {ln.label:<{width}}  {_one_line(ln.value)}" + (f"  ({_one_line(ln.note)})" if ln.note else ""))
    errors = top_errors(report.stats)
    if errors:
        out.append("  Top errors:")
        out += [f"    ×{fmt.count(n):<6} {_one_line(msg)}" for msg, n in errors]
    warnings = warnings_of(report)
    if warnings:
        out.append("  Warnings:")
        out += [f"    {_one_line(msg)}" for msg in warnings]
    return "\n".join(out)


def estimate_html(estimate: Estimate, *, budget: float | None = None, mode: str | None = None) -> str:
    """The plan before a run, as a table (no card)."""
    mode = mode or mode_of(None, estimate)
    return table_html(plan_lines(estimate, budget=budget_of(None, estimate, budget), mode=mode))


def estimate_text(estimate: Estimate, *, budget: float | None = None, mode: str | None = None) -> str:
    mode = mode or mode_of(None, estimate)
    lines = plan_lines(estimate, budget=budget_of(None, estimate, budget), mode=mode)
    width = max(len(ln.label) for ln in lines)
    return "\n".join(f"  {ln.label:<{width}}  {ln.value}" + (f"  ({ln.note})" if ln.note else "") for ln in lines)


__all__ = [
    "Line",
    "estimate_html",
    "estimate_of",
    "estimate_text",
    "plan_lines",
    "report_html",
    "report_markdown",
    "report_text",
    "status",
    "summary_lines",
    "top_errors",
]
