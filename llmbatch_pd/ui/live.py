"""The live figures a card shows while a run goes on, read from the report by the names of
the notebook contract (CONTRACTS C5): ``report.projection()``, ``report.accounting()`` and
``report.stats.rate_series()``, and the words for them.

Why a module of its own: the one-model card, the several-model card and the static summary
all say the same projection in the same words, and a report from an older run (or one a test
builds by hand) that lacks a method gets "no figure" here instead of an AttributeError in
every caller.
"""

from __future__ import annotations

from typing import Any

from ..core import numbers as fmt

OVER_ESTIMATE = 1.5  # cost per row above this multiple of the estimate's gets a warning


def projection_of(report: Any, estimate: Any = None, budget: float | None = None) -> Any | None:
    """``report.projection(estimate, budget)`` (None before the first answered row, or
    without the method)."""
    fn = getattr(report, "projection", None)
    return fn(estimate, budget) if callable(fn) else None


def accounting_of(report: Any) -> Any | None:
    fn = getattr(report, "accounting", None)
    return fn() if callable(fn) else None


def rate_series_of(report: Any, window_s: int = 60) -> list[tuple[float, float, bool]]:
    """The last ``window_s`` seconds of rows/s in 1 s buckets, with 429 marks; empty without."""
    fn = getattr(getattr(report, "stats", None), "rate_series", None)
    series = list(fn(window_s=window_s)) if callable(fn) else []
    if not series:
        return []
    last = series[-1][0]  # seconds since the run started -> seconds before the latest bucket
    return [(t - last, rate, had) for t, rate, had in series]


def projection_sentence(proj: Any, budget: float | None) -> str:
    """"projected $0.152 at the current cost per row ($0.000507 a row); at this rate the budget
    stops the run at about 34 %"."""
    text = f"projected {fmt.money(proj.projected_total)} at the current cost per row"
    if getattr(proj, "cost_per_row", None) is not None:
        text += f" ({fmt.money(proj.cost_per_row)} a row)"
    stops = getattr(proj, "stops_at_fraction", None)
    if budget is not None and stops is not None and stops < 1:
        text += f"; at this rate the budget stops the run at about {fmt.percent(stops)}"
    return text


def over_estimate_warning(proj: Any) -> str | None:
    """The warning when the cost per row runs above 1.5x the estimate's (None otherwise)."""
    if not getattr(proj, "over_estimate", False):
        return None
    expected = getattr(proj, "expected_total", None)
    if expected:
        ratio = proj.projected_total / expected
        return (f"cost per row runs {ratio:.2f}× the estimate: {fmt.money(proj.projected_total)} projected "
                f"against {fmt.money(expected)} expected (longer answers or prompts than the estimate assumed)")
    return f"cost per row runs above {OVER_ESTIMATE:g}× the estimate"


__all__ = ["accounting_of", "over_estimate_warning", "projection_of", "projection_sentence", "rate_series_of"]
