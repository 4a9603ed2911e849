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
from .costs import PRICE_UNKNOWN, UNKNOWN_NOTE, excludes, priced, spent, total_spent

if TYPE_CHECKING:
    from ..core.stats import EngineStats
    from ..planning.estimate import Estimate
    from ..runs.run import RunReport

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
    # e.requests is what will be sent: cached and too-long prompts are already out of it
    lines.append(Line("Requests", fmt.count(e.requests + e.cached + e.too_long),
                      "after de-duplication: " + ", ".join(unique)))
    lines.append(Line("Cache hits", fmt.count(e.cached),
                      f"saves {fmt.money(e.cache_saves)}" if e.cache_saves else ""))
    lines.append(Line("To send", fmt.count(e.requests)))
    lines.append(Line("Input tokens", fmt.tokens(e.input_tokens),
                      f"{fmt.tokens(e.input_tokens_low)}–{fmt.tokens(e.input_tokens_high)}"
                      + (f"; {e.token_counting}" if e.token_counting else "")))
    lines.append(Line("Output tokens", "~" + fmt.tokens(e.output_tokens),
                      f"{fmt.tokens(e.output_tokens_low)}–{fmt.tokens(e.output_tokens_high)}"
                      + (f"; {e.output_basis}" if e.output_basis else "")))
    low, mid, high = expected_cost(e, mode)
    if mid is None:
        lines.append(Line("Cost", PRICE_UNKNOWN, UNKNOWN_NOTE + "; a cost the provider reports "
                          "is counted as the run goes", "warn"))
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


# -- batch jobs (mode="batch") --------------------------------------------------------------

BATCH_ENDED = frozenset({"completed", "ended", "failed", "expired", "cancelled", "canceled"})
BATCH_NOTE = ("Batch jobs can take up to 24 h · half price applies · running the same call again "
              "re-attaches to its jobs instead of paying again")


def short_id(batch_id: str) -> str:
    """``"batch_6823abcdef0123456789" -> "batch_6823…6789"``: the provider's prefix, the first
    and last four characters (enough to find the job in the provider's console)."""
    text = str(batch_id)
    cut = text.find("_") + 1 if 0 <= text.find("_") < 12 else 0
    if len(text) <= cut + 12:
        return text
    return f"{text[:cut + 4]}…{text[-4:]}"


def batch_ids_text(ids: Any, limit: int = 3) -> str:
    ids = [str(i) for i in list(ids or ())]
    text = ", ".join(short_id(i) for i in ids[:limit])
    return text + (f", +{len(ids) - limit} more" if len(ids) > limit else "")


def batch_progress(stats: Any) -> tuple[int, int]:
    """(processed, total) requests of the run's batch jobs: succeeded + errored of total."""
    counts = dict(getattr(stats, "batch_counts", None) or {})
    return counts.get("succeeded", 0) + counts.get("errored", 0), counts.get("total", 0)


def batch_counts_text(stats: Any) -> str:
    """``"40 / 100 requests processed (38 succeeded, 2 errored)"``; empty before the counts."""
    counts = dict(getattr(stats, "batch_counts", None) or {})
    done, total = batch_progress(stats)
    if not total:
        return ""
    parts = [f"{fmt.count(counts.get(k, 0))} {k}" for k in ("succeeded", "errored", "expired", "canceled")
             if counts.get(k) or k == "succeeded"]
    return f"{fmt.count(done)} / {fmt.count(total)} requests processed ({', '.join(parts)})"


def batch_ended(status: str | None) -> bool:
    """True when every job named in a (summarised) status has ended."""
    words = [w for w in re.findall(r"[a-z_]+", str(status or "").lower()) if w not in ("jobs", "job")]
    return bool(words) and all(w in BATCH_ENDED for w in words)


def batch_lines(report: Any) -> list[Line]:
    """The batch jobs of a run, for the summary (none for a real-time run)."""
    s = report.stats
    ids = list(getattr(s, "batch_ids", None) or [])
    status_word = getattr(s, "batch_status", None)
    if mode_of(report) != "batch" and not ids and not status_word:
        return []
    notes = []
    if ids:
        notes.append(f"{fmt.plural(len(ids), 'job')}: {batch_ids_text(ids)}")
    if batch_counts_text(s):
        notes.append(batch_counts_text(s))
    tone = ""
    if ids and not batch_ended(status_word):
        tone = "warn"
        notes.append("still running at the provider: the same call run again re-attaches and "
                     "collects the answers (not paid twice)")
    lines = [Line("Batch jobs", status_word or ("none submitted" if not ids else fmt.MISSING),
                  "; ".join(notes), tone)]
    lines.append(Line("Batch", "half price", "jobs can take up to 24 h; re-running the same call "
                                             "re-attaches to open jobs instead of paying again"))
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
    truncated = getattr(report, "truncated", 0) or 0
    if truncated:  # answered, but cut short: the text is kept, the error column says so
        lines.append(Line("Truncated", fmt.count(truncated),
                          "of the answered: cut at max_tokens (raise max_tokens=)", "warn"))
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
    lines += batch_lines(report)
    tok_note = ""
    if estimate is not None:
        tok_note = f"expected {fmt.tokens(estimate.input_tokens)} / ~{fmt.tokens(estimate.output_tokens)}"
    lines.append(Line("Tokens", f"{fmt.tokens(s.input_tokens)} in / {fmt.tokens(s.output_tokens)} out", tok_note))
    low, mid, high = expected_cost(estimate, mode)
    cost_notes, tone = [], ""
    if mid is not None:
        cost_notes.append(f"expected {fmt.money(mid)}, range {fmt.money_range(low, high)}"
                          + (" at batch prices" if mode == "batch" else ""))
    if budget is not None:
        used = s.cost / budget if budget > 0 else (1.0 if s.cost else 0.0)
        cost_notes.append(f"budget {fmt.money(budget)} ({fmt.percent(used)} used)")
        tone = "warn" if used >= 0.8 else ""
    if not priced(report, estimate):
        value, note = spent(report, estimate)
        lines.append(Line("Cost", value, note, "warn" if value == PRICE_UNKNOWN else ""))
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


def _lines_text(lines: list[Line]) -> list[str]:
    """Figure lines as aligned plain text, two spaces in."""
    width = max((len(ln.label) for ln in lines), default=0)
    return [f"  {ln.label:<{width}}  {_one_line(ln.value)}" + (f"  ({_one_line(ln.note)})" if ln.note else "")
            for ln in lines]


def _notes_markdown(errors: list[tuple[str, int]], warnings: list[str]) -> list[str]:
    """Top errors and warnings as Markdown lists (nothing when there are none)."""
    out: list[str] = []
    if errors:
        out += ["", "Top errors:", ""] + [f"- ×{fmt.count(n)} {_md(msg)}" for msg, n in errors]
    if warnings:
        out += ["", "Warnings:", ""] + [f"- {_md(msg)}" for msg in warnings]
    return out


def _notes_text(errors: list[tuple[str, int]], warnings: list[str]) -> list[str]:
    """Top errors and warnings as indented plain text (nothing when there are none)."""
    out: list[str] = []
    if errors:
        out.append("  Top errors:")
        out += [f"    ×{fmt.count(n):<6} {_one_line(msg)}" for msg, n in errors]
    if warnings:
        out.append("  Warnings:")
        out += [f"    {_one_line(msg)}" for msg in warnings]
    return out


def report_markdown(report: RunReport, estimate: Estimate | None = None, *,
                    budget: float | None = None, cancelled: bool = False) -> str:
    """The static summary as a Markdown table (for ``RunReport.to_markdown``)."""
    title, detail = _title_detail(report, estimate)
    label, _ = status(report, cancelled=cancelled)
    out = [f"**{_md(title)}** · {_md(detail)} · **{_md(label)}**", "", "| | |", "|---|---|"]
    for ln in summary_lines(report, estimate, budget=budget):
        value = _md(ln.value) + (f" ({_md(ln.note)})" if ln.note else "")
        out.append(f"| {_md(ln.label)} | {value} |")
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



# -- several models side by side ------------------------------------------------------------
# ``df.llm.apply(..., model=[...])`` runs one Run per model, concurrently, under one budget.
# The functions below read a list of RunReports (and, optionally, their Estimates in the same
# order) and render one table: a row per model and a total row.


@dataclass
class Cell:
    """One cell of a table with a column per figure: a value, a quieter note, a tone."""

    value: str
    note: str = ""
    tone: str = ""
    full: str = ""  # text and Markdown show this instead of value; HTML shows it on hover


def short_models(models: list[str]) -> list[str]:
    """``["openai/gpt-4.1-mini", "anthropic/claude-haiku-4-5"] -> ["gpt-4.1-mini",
    "claude-haiku-4-5"]``; a short name two models share stays in full."""
    short = [str(m).rsplit("/", 1)[-1] for m in models]
    return [s if short.count(s) == 1 else str(m) for s, m in zip(short, models, strict=True)]


def estimates_for(reports: list[Any], estimates: Any = None) -> list[Any]:
    """One estimate (or None) per report: the run's own (refined after a pilot) first, then
    the one passed in the same order."""
    given = list(estimates) if estimates is not None else [None] * len(reports)
    if len(given) != len(reports):
        raise ValueError(f"{len(given)} estimates for {len(reports)} reports: pass one per model (or None)")
    return [getattr(r, "estimate", None) or e for r, e in zip(reports, given, strict=True)]


def group_budget(reports: list[Any], estimates: list[Any] | None = None, budget: float | None = None) -> float | None:
    """The one budget shared by every model: ``budget``, else the first an estimate or a
    report carries (each run of the group is given the same shared budget)."""
    if budget is not None:
        return budget
    for obj in [*(estimates or []), *reports]:
        b = getattr(obj, "budget", None)
        if b is not None:
            return b
    return None


_RANK_FINAL = {"interrupted": 0, "cancelled": 1, "stopped": 2, "failed": 3, "done": 4}
_RANK_LIVE = {"interrupted": 0, "stopping": 1, "running": 2, "estimate": 3}


def group_status(reports: list[Any], *, cancelled: bool = False, final: bool = True) -> tuple[str, str]:
    """The (label, tone) of a group: the most telling of its runs' (interrupted before
    cancelled before stopped ... before done). Every run stopping early says "stopped"; only
    some of them, "partly stopped"."""
    each = [status(r, cancelled=cancelled, final=final) for r in reports]
    if not each:
        return ("done", "ok") if final else ("estimate", "muted")
    rank = _RANK_FINAL if final else _RANK_LIVE
    label, tone = min(each, key=lambda lt: rank.get(lt[0], len(rank)))
    if final and label == "stopped" and any(lbl == "done" for lbl, _ in each):
        return "partly stopped", "warn"
    return label, tone


def group_elapsed(reports: list[Any]) -> float | None:
    """Wall time of runs that went side by side: first start to last finish."""
    started = [r.stats.started for r in reports if r.stats.started is not None]
    if not started:
        return None
    from time import monotonic

    ends = [r.stats.finished if r.stats.finished is not None else monotonic()
            for r in reports if r.stats.started is not None]
    return max(ends) - min(started)


def _sum_or_none(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else float(sum(values))


ESTIMATE_HEAD = ["Model", "Rows", "Requests", "Tokens in", "Tokens out", "Cost", "Range", "Wall time"]


def estimate_rows(reports: list[Any], estimates: Any = None) -> tuple[list[list[Cell]], list[Cell]]:
    """The plan of every model (a row each) and the total row (wall time: the longest, as the
    runs go side by side)."""
    ests = estimates_for(reports, estimates)
    names = short_models([r.model for r in reports])
    rows, mids, lows, highs = [], [], [], []
    for name, r, e in zip(names, reports, ests, strict=True):
        mode = mode_of(r, e)
        model = Cell(name, "batch" if mode == "batch" else "", full=r.model)
        if e is None:
            rows.append([model, Cell(fmt.count(r.rows)), *[Cell(fmt.MISSING)] * 5, Cell(fmt.MISSING, "no estimate")])
        low, mid, high = expected_cost(e, mode)
        lows.append(low)
        mids.append(mid)
        highs.append(high)
        if e is None:
            continue
        rows.append([
            model,
            Cell(fmt.count(e.rows)),
            Cell(fmt.count(e.requests), f"+{fmt.count(e.cached)} cached" if e.cached else ""),
            Cell(fmt.tokens(e.input_tokens)),
            Cell("~" + fmt.tokens(e.output_tokens)),
            Cell(fmt.money(mid), "", "") if mid is not None else Cell(PRICE_UNKNOWN, "", "warn"),
            Cell(fmt.money_range(low, high) if mid is not None else fmt.MISSING,
                 "batch prices" if mode == "batch" and mid is not None else ""),
            Cell("~" + fmt.duration(e.wall_time_s)),
        ])
    known = [e for e in ests if e is not None]
    unpriced = sum(1 for e, m in zip(ests, mids, strict=True) if e is not None and m is None)
    priced_mids = [m for m in mids if m is not None]

    def partial(values: list[float | None]) -> float | None:
        got = [v for v in values if v is not None]
        return float(sum(got)) if got else None

    total = [
        Cell("Total", fmt.plural(len(reports), "model")),
        Cell(fmt.count(sum(e.rows for e in known) if known else sum(r.rows for r in reports))),
        Cell(fmt.count(sum(e.requests for e in known)) if known else fmt.MISSING),
        Cell(fmt.tokens(sum(e.input_tokens for e in known)) if known else fmt.MISSING),
        Cell("~" + fmt.tokens(sum(e.output_tokens for e in known)) if known else fmt.MISSING),
        Cell(fmt.money(partial(mids)) if priced_mids or not known else PRICE_UNKNOWN,
             excludes(unpriced) if priced_mids else "", "warn" if unpriced else ""),
        Cell(fmt.money_range(partial(lows), partial(highs))),
        Cell("~" + fmt.duration(max(e.wall_time_s for e in known)) if known else fmt.MISSING),
    ]
    return rows, total


def estimate_budget_line(reports: list[Any], estimates: Any = None, budget: float | None = None) -> Line | None:
    """The shared budget against the expected total (None without a budget)."""
    ests = estimates_for(reports, estimates)
    budget = group_budget(reports, ests, budget)
    if budget is None:
        return None
    costs = [expected_cost(e, mode_of(r, e)) for r, e in zip(reports, ests, strict=True)]
    mid, high = _sum_or_none([c[1] for c in costs]), _sum_or_none([c[2] for c in costs])
    note, tone = "shared by all models, never exceeded: every run stops first", ""
    if mid is not None and mid > budget:
        tone, note = "bad", note + "; the expected total is above it"
    elif mid is not None and mid >= 0.8 * budget:
        tone, note = "warn", note + "; the expected total is close to it"
    elif high is not None and high > budget:
        note += "; the high end of the total is above it"
    return Line("Budget", fmt.money(budget), note, tone)


REPORT_HEAD = ["Model", "Answered", "Failed", "Sent", "Cached", "Tokens in / out", "Cost", "Time", "Status"]


def report_rows(reports: list[Any], estimates: Any = None, *,
                cancelled: bool = False) -> tuple[list[list[Cell]], list[Cell]]:
    """What every model did (a row each) and the total row."""
    ests = estimates_for(reports, estimates)
    rows, mids = [], []
    names = short_models([r.model for r in reports])
    for name, r, e in zip(names, reports, ests, strict=True):
        s = r.stats
        mode = mode_of(r, e)
        unsent = not_sent(r)
        failed = r.failed_rows - unsent
        _, mid, _ = expected_cost(e, mode)
        mids.append(mid)
        label, tone = status(r, cancelled=cancelled)
        reason = s.stop_reason or ("interrupted" if r.interrupted else "")
        rows.append([
            Cell(name, "batch" if mode == "batch" else "", full=r.model),
            Cell(fmt.count(r.answered_rows), "", "ok" if r.answered_rows else ""),
            Cell(fmt.count(failed), f"+{fmt.count(unsent)} unsent" if unsent else "", "bad" if failed else ""),
            Cell(fmt.count(s.sent)),
            Cell(fmt.count(r.cached)),
            Cell(f"{fmt.tokens(s.input_tokens)} / {fmt.tokens(s.output_tokens)}"),
            _spent_cell(r, e, mid),
            Cell(fmt.duration(s.elapsed) if s.started is not None else fmt.MISSING),
            Cell(label, _one_line(reason)[:60] if reason and reason != label else "", tone),
        ])
    known_mids = [m for m in mids if m is not None]  # the total's estimate: the priced models'
    total_mid = float(sum(known_mids)) if known_mids else None
    answered = sum(r.answered_rows for r in reports)
    failed = sum(r.failed_rows - not_sent(r) for r in reports)
    unsent = sum(not_sent(r) for r in reports)
    label, tone = group_status(reports, cancelled=cancelled)
    total = [
        Cell("Total", fmt.plural(len(reports), "model")),
        Cell(fmt.count(answered), "", "ok" if answered else ""),
        Cell(fmt.count(failed), f"+{fmt.count(unsent)} unsent" if unsent else "", "bad" if failed else ""),
        Cell(fmt.count(sum(r.stats.sent for r in reports))),
        Cell(fmt.count(sum(r.cached for r in reports))),
        Cell(f"{fmt.tokens(sum(r.stats.input_tokens for r in reports))} / "
             f"{fmt.tokens(sum(r.stats.output_tokens for r in reports))}"),
        _total_cell(reports, ests, total_mid),
        Cell(fmt.duration(group_elapsed(reports))),
        Cell(label, "", tone),
    ]
    return rows, total


def _spent_cell(report: Any, estimate: Any, mid: float | None) -> Cell:
    """What one model spent, against its estimate; "price unknown" when nobody knows."""
    value, note = spent(report, estimate)
    if mid is not None:
        note = f"est. {fmt.money(mid)}"
    if value == PRICE_UNKNOWN:
        return Cell(value, "", "warn")  # the total's note says why; a row stays short
    return Cell(value, "reported by the provider" if note.startswith("reported") else note)


def _total_cell(reports: list[Any], estimates: list[Any], total_mid: float | None) -> Cell:
    """What every model spent together; names the models the total leaves out."""
    value, note = total_spent(reports, estimates)
    notes = [n for n in (note, f"est. {fmt.money(total_mid)}" if total_mid is not None else "") if n]
    return Cell(value, "; ".join(notes), "warn" if note or value == PRICE_UNKNOWN else "")


def group_lines(reports: list[Any], estimates: Any = None, *, budget: float | None = None) -> list[Line]:
    """The figures under the table: the shared budget, each model's batch jobs and stop reason."""
    ests = estimates_for(reports, estimates)
    budget = group_budget(reports, ests, budget)
    names = short_models([r.model for r in reports])
    lines = []
    if budget is not None:
        spent = sum(r.stats.cost for r in reports)
        used = spent / budget if budget > 0 else (1.0 if spent else 0.0)
        lines.append(Line("Budget", f"{fmt.money(spent)} of {fmt.money(budget)}",
                          f"{fmt.percent(used)} used, shared by all models", "warn" if used >= 0.8 else ""))
    for name, r in zip(names, reports, strict=True):
        for ln in batch_lines(r):
            if ln.label == "Batch jobs":
                lines.append(Line(f"Batch jobs {name}", ln.value, ln.note, ln.tone))
        if r.stats.stop_reason:
            lines.append(Line(f"Stopped early {name}", r.stats.stop_reason, "finished rows were kept", "bad"))
    if any(mode_of(r, e) == "batch" for r, e in zip(reports, ests, strict=True)):
        lines.append(Line("Batch", "half price", "jobs can take up to 24 h; re-running the same call "
                                                 "re-attaches to open jobs instead of paying again"))
    return lines


def group_errors(reports: list[Any], n: int = 5) -> list[tuple[str, int]]:
    """The most common errors of every model, each prefixed with its model's short name."""
    names = short_models([r.model for r in reports])
    every = [(f"{name}: {msg}", cnt) for name, r in zip(names, reports, strict=True)
             for msg, cnt in top_errors(r.stats, n)]
    return sorted(every, key=lambda kv: -kv[1])[:n]


def group_warnings(reports: list[Any]) -> list[str]:
    names = short_models([r.model for r in reports])
    return [f"{name}: {msg}" for name, r in zip(names, reports, strict=True) for msg in warnings_of(r)]


NUM = "text-align:right;"
GRID_TH = (f"font-weight:400;color:{MUTED};padding:2px 0 2px 12px;border:none;border-bottom:1px solid {BORDER};"
           "white-space:nowrap;vertical-align:bottom;background:transparent;")
GRID_TD = ("padding:2px 0 2px 12px;border:none;vertical-align:top;background:transparent;"
           "font-variant-numeric:tabular-nums;white-space:nowrap;")
GRID_TOTAL = f"border-top:1px solid {BORDER};font-weight:600;"


def grid_html(head: list[str], rows: list[list[Cell]], total: list[Cell] | None = None) -> str:
    """A table with a column per figure; the first column (the model) is left-aligned, the
    rest right-aligned; notes go on a second, quieter line of their cell."""

    def cell(c: Cell, i: int, extra: str = "") -> str:
        align = "text-align:left;padding-left:0;" if i == 0 else NUM
        if i == last:  # the status and its reason may wrap
            align += "white-space:normal;min-width:5em;"
        note = (f'<div style="font-size:11.5px;font-weight:400;color:{MUTED}">{esc(c.note)}</div>'
                if c.note else "")
        title = f' title="{esc(c.full)}"' if c.full else ""
        return f'<td style="{GRID_TD}{align}{extra}"{title}>{colored(esc(c.value), c.tone)}{note}</td>'

    last = len(head) - 1
    th = "".join(f'<th style="{GRID_TH}{"text-align:left;padding-left:0;" if i == 0 else NUM}">{esc(h)}</th>'
                 for i, h in enumerate(head))
    body = "".join(f'<tr style="{TR}">' + "".join(cell(c, i) for i, c in enumerate(row)) + "</tr>"
                   for row in rows)
    if total is not None:
        body += f'<tr style="{TR}">' + "".join(cell(c, i, GRID_TOTAL) for i, c in enumerate(total)) + "</tr>"
    # a narrow output scrolls the table sideways rather than breaking model names mid-word
    return (f'<div style="overflow-x:auto;max-width:100%"><table style="{TABLE}font-size:12.5px;"><thead><tr style="{TR}">'
            f"{th}</tr></thead><tbody>{body}</tbody></table></div>")


def _cell_text(c: Cell) -> str:
    return _one_line(c.full or c.value) + (f" ({_one_line(c.note)})" if c.note else "")


def grid_text(head: list[str], rows: list[list[Cell]], total: list[Cell] | None = None, *,
              indent: str = "  ") -> str:
    """Aligned columns: text left, figures right."""
    body = [[_cell_text(c) for c in row] for row in rows]
    if total is not None:
        body.append([_cell_text(c) for c in total])
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]

    def line(cells: list[str]) -> str:
        return indent + "  ".join(c.ljust(wd) if i == 0 else c.rjust(wd)
                                  for i, (c, wd) in enumerate(zip(cells, widths, strict=True))).rstrip()

    out = [line(head)]
    out += [line(cells) for cells in body[:len(rows)]]
    if total is not None:
        out.append(indent + "-" * (sum(widths) + 2 * (len(widths) - 1)))
        out.append(line(body[-1]))
    return "\n".join(out)


def grid_markdown(head: list[str], rows: list[list[Cell]], total: list[Cell] | None = None) -> str:
    def md(c: Cell, bold: bool = False) -> str:
        value = _md(c.full or c.value)
        value = f"**{value}**" if bold and value else value
        return value + (f" ({_md(c.note)})" if c.note else "")

    out = ["| " + " | ".join(_md(h) for h in head) + " |",
           "|" + "|".join("---" if i == 0 else "--:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    if total is not None:
        out.append("| " + " | ".join(md(c, bold=True) for c in total) + " |")
    return "\n".join(out)


def _group_title(reports: list[Any], estimates: list[Any]) -> tuple[str, str]:
    modes = {mode_of(r, e) for r, e in zip(reports, estimates, strict=True)}
    mode = modes.pop() if len(modes) == 1 else "real time and batch"
    return "llmbatch_pd", f"{fmt.plural(len(reports), 'model')} · {mode}"


def _group_head(reports: list[Any], estimates: Any, cancelled: bool) -> tuple[list[Any], str, str, str, str]:
    """What a summary of several runs opens with: the plans (each report's own by default),
    then title, detail, status label and tone."""
    ests = estimates_for(reports, estimates)
    title, detail = _group_title(reports, ests)
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
    out = [f"**{_md(title)}** · {_md(detail)} · **{_md(label)}**", "", grid_markdown(REPORT_HEAD, rows, total)]
    lines = group_lines(reports, ests, budget=budget)
    if lines:
        out.append("")
        out += [f"- {_md(ln.label)}: {_md(ln.value)}" + (f" ({_md(ln.note)})" if ln.note else "") for ln in lines]
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
    "Line",
    "estimate_html",
    "estimate_of",
    "estimate_text",
    "plan_lines",
    "report_html",
    "report_markdown",
    "report_text",
    "reports_html",
    "reports_markdown",
    "reports_text",
    "status",
    "summary_lines",
    "top_errors",
]
