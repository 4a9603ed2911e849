"""Money a run spent, said honestly: "price unknown" for a model the price list lacks, never
"$0.00", unless the provider reported what it billed (a gateway such as LiteLLM's proxy).

Every display (summary, panel, group table, tqdm bar) asks here, so they all say the same.
"""

from __future__ import annotations

from typing import Any

from . import format as fmt

PRICE_UNKNOWN = "price unknown"
UNKNOWN_NOTE = "no price for this model: pass prices= for a figure"
REPORTED_NOTE = "reported by the provider (no list price for this model)"


def priced(report: Any = None, estimate: Any = None) -> bool:
    """Whether the model has a price: not when the run says so (``RunReport.priced``), nor
    when its estimate (passed, or the report's own) was made without one (``cost`` None)."""
    if getattr(report, "priced", True) is False:
        return False
    estimate = estimate if estimate is not None else getattr(report, "estimate", None)
    return not (estimate is not None and getattr(estimate, "cost", 0.0) is None)


def cost_known(report: Any, estimate: Any = None) -> bool:
    """Whether ``report.stats.cost`` is a real figure: priced, or costs the provider reported."""
    return priced(report, estimate) or bool(report.stats.cost)


def spent(report: Any, estimate: Any = None) -> tuple[str, str]:
    """(value, note) of what a run spent: dollars, or "price unknown" with why."""
    cost = report.stats.cost
    if priced(report, estimate):
        return fmt.money(cost), ""
    if cost:
        return fmt.money(cost), REPORTED_NOTE
    return PRICE_UNKNOWN, UNKNOWN_NOTE


def total_spent(reports: list[Any], estimates: list[Any] | None = None) -> tuple[str, str]:
    """(value, note) of what several runs spent together; says how many models it leaves out."""
    ests = estimates or [None] * len(reports)
    known = [r for r, e in zip(reports, ests, strict=True) if cost_known(r, e)]
    left_out = len(reports) - len(known)
    if not known:
        return PRICE_UNKNOWN, ""
    return fmt.money(sum(r.stats.cost for r in known)), excludes(left_out)


def excludes(n: int) -> str:
    """The note on a total that leaves ``n`` unpriced models out (empty for none)."""
    return f"excludes {fmt.plural(n, 'model')}: {PRICE_UNKNOWN}" if n else ""


__all__ = ["PRICE_UNKNOWN", "cost_known", "excludes", "priced", "spent", "total_spent"]
