"""A run's figures as labelled lines: what the summary, the panel and the group card list.

Each ``Line`` is a label, a value, a quieter note and a tone, all strings: the words and number
formats are chosen here once, and ``ui.report`` (HTML, Markdown, text), ``ui.panel`` and
``ui.group`` only lay them out. The figures themselves come from ``core.figures``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core import numbers as fmt
from ..core.accounting import OTHER
from ..core.figures import (
    batch_ended,
    batch_progress,
    budget_of,
    estimate_of,
    estimates_for,
    expected_cost,
    expected_wall,
    group_budget,
    mode_of,
    priced,
    throughput,
    top_errors,
    warnings_of,
)
from .costs import PRICE_UNKNOWN, UNKNOWN_NOTE, spent

if TYPE_CHECKING:
    from ..core.report import RunReport
    from ..core.stats import EngineStats
    from ..planning.estimate import Estimate


@dataclass
class Line:
    """One figure of a summary: a label, its value, a quieter note and a tone for colour."""

    label: str
    value: str
    note: str = ""
    tone: str = ""


def kinds_text(stats: EngineStats) -> str:
    by_kind = list((getattr(stats, "by_kind", None) or {}).items())
    items = sorted(((k, v) for k, v in by_kind if v), key=lambda kv: -kv[1])
    return " · ".join(f"{k} ×{fmt.count(v)}" for k, v in items)


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
    # cached and too-long prompts are not in e.to_send: the unique requests add them back
    parts = [f"{fmt.count(e.to_send)} to send"] + ([f"{fmt.count(e.cached)} cached"] if e.cached else []) \
        + ([f"{fmt.count(e.too_long)} too long"] if e.too_long else [])
    lines.append(Line("Requests", fmt.count(e.to_send + e.cached + e.too_long),
                      " + ".join(parts) + "; after de-duplication: " + ", ".join(unique)))
    lines.append(Line("Cache hits", fmt.count(e.cached),
                      f"saves {fmt.money(e.cache_saves)}" if e.cache_saves else ""))
    lines.append(Line("To send", fmt.count(e.to_send)))
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
    seconds, words = expected_wall(e, mode)
    lines.append(Line("Wall time", words, "the provider's completion window; jobs often end sooner"
                      if mode == "batch" else ""))
    return lines


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


def batch_counts_text(stats: Any) -> str:
    """``"40 / 100 requests processed (38 succeeded, 2 errored)"``; empty before the counts."""
    counts = dict(getattr(stats, "batch_counts", None) or {})
    done, total = batch_progress(stats)
    if not total:
        return ""
    parts = [f"{fmt.count(counts.get(k, 0))} {k}" for k in ("succeeded", "errored", "expired", "canceled")
             if counts.get(k) or k == "succeeded"]
    return f"{fmt.count(done)} / {fmt.count(total)} requests processed ({', '.join(parts)})"


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


NOT_SENT_WORDS = {"budget": "the budget was reached", "stopped": "the run stopped",
                  "interrupted": "interrupted", "cancelled": "cancelled"}


def _parts(counts: dict[str, int], words: dict[str, str] | None = None) -> str:
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{(words or {}).get(k, k)} {fmt.count(v)}" for k, v in ranked)


def count_lines(report: RunReport) -> list[Line]:
    """Where the rows went (``RunReport.accounting``): answered, failed by reason, skipped,
    not sent by why, pending; they add up to the rows."""
    acc = report.accounting()
    prefilled = getattr(report, "prefilled", 0) or 0
    lines = [Line("Rows", fmt.count(acc.rows)),
             Line("Answered", fmt.count(acc.answered),
                  f"{fmt.count(prefilled)} by the pilot" if prefilled else "", "ok" if acc.answered else "")]
    truncated = getattr(report, "truncated", 0) or 0
    if truncated:  # answered, but cut short: the text is kept, the error column says so
        lines.append(Line("Truncated", fmt.count(truncated),
                          "of the answered: cut at max_tokens (raise max_tokens=)", "warn"))
    reasons = "" if set(acc.failed) <= {OTHER} else _parts(acc.failed)  # none recorded: no list
    lines.append(Line("Failed", fmt.count(acc.failed_total), reasons,
                      "bad" if acc.failed_total else ""))
    if acc.skipped_total:
        lines.append(Line("Skipped", fmt.count(acc.skipped_total),
                          "not sent: " + _parts(acc.skipped, {"missing value": "missing values",
                                                              "too long": "too long for the model"}), "warn"))
    if acc.not_sent_total:
        lines.append(Line("Not sent", fmt.count(acc.not_sent_total),
                          "the run stopped before sending them: " + _parts(acc.not_sent, NOT_SENT_WORDS), "warn"))
    if acc.pending:
        lines.append(Line("Pending", fmt.count(acc.pending), "not finished yet"))
    return lines


def projection_line(report: RunReport, estimate: Estimate | None = None, *,
                    budget: float | None = None) -> Line | None:
    """Where the cost is heading while the run goes (``RunReport.projection``); None before
    the first answer or once nothing is left to send."""
    p = report.projection(estimate, budget)
    if p is None or p.projected_total <= p.spent:
        return None
    notes = [f"{fmt.money(p.cost_per_row)} a request so far"]
    if p.expected_total is not None:
        notes.append(f"expected {fmt.money(p.expected_total)}")
    tone = "warn" if p.over_estimate else ""
    if p.over_estimate and p.expected_per_row:
        notes.append(f"{p.cost_per_row / p.expected_per_row:.1f}x the estimate's cost a request")
    if p.stops_at_fraction is not None:
        tone = "bad"
        notes.append(f"at this rate the budget ({fmt.money(p.budget)}) stops the run at about "
                     f"{fmt.percent(p.stops_at_fraction)} of the rows")
    return Line("Projected", fmt.money(p.projected_total), "; ".join(notes), tone)


def summary_lines(report: RunReport, estimate: Estimate | None = None, *,
                  budget: float | None = None) -> list[Line]:
    """The figures of a finished (or unfinished) run, one a line."""
    s = report.stats
    estimate = estimate_of(report, estimate)
    mode = mode_of(report, estimate)
    budget = budget_of(report, estimate, budget)
    acc = report.accounting()
    lines = count_lines(report)
    sent_notes = []
    if report.requests != s.sent:
        sent_notes.append(f"for {fmt.plural(report.requests, 'unique request')}")
    if acc.retries:
        sent_notes.append(f"{fmt.plural(acc.retries, 'retry', 'retries')} included")
    lines.append(Line("Requests sent", fmt.count(s.sent), ", ".join(sent_notes)))
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
    if acc.pending and (projected := projection_line(report, estimate, budget=budget)) is not None:
        lines.append(projected)
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
    wall_note = ""
    if estimate is not None:
        wall_note = "expected " + (expected_wall(estimate, mode)[1] or fmt.MISSING)
    lines.append(Line("Wall time", fmt.duration(s.elapsed) if s.started is not None else fmt.MISSING, wall_note))
    rows_s, req_s = throughput(report)
    lines.append(Line("Throughput", fmt.rate(rows_s, "rows"),
                      "answered rows; " + fmt.rate(req_s, "requests") if req_s is not None else ""))
    kept = "finished rows were kept" if acc.answered else "no row was answered"
    if s.stop_reason:
        lines.append(Line("Stopped early", s.stop_reason, kept, "bad"))
    if report.interrupted:
        lines.append(Line("Interrupted", "yes", kept, "bad"))
    return lines


def short_models(models: list[str]) -> list[str]:
    """``["openai/gpt-4.1-mini", "anthropic/claude-haiku-4-5"] -> ["gpt-4.1-mini",
    "claude-haiku-4-5"]``; a short name two models share stays in full."""
    short = [str(m).rsplit("/", 1)[-1] for m in models]
    return [s if short.count(s) == 1 else str(m) for s, m in zip(short, models, strict=True)]


def _sum_or_none(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else float(sum(values))


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


