"""Money a run spent, said honestly: "price unknown" for a model the price list lacks, never
"$0.00", unless the provider reported what it billed (a gateway such as LiteLLM's proxy).

Every display (summary, panel, group table, tqdm bar) asks here, so they all say the same.
Whether a cost is known at all (``priced``, ``cost_known``) is a figure: ``core.figures``.
"""

from __future__ import annotations

from typing import Any

from ..core import numbers as fmt
from ..core.figures import cost_known, priced

PRICE_UNKNOWN = "price unknown"
UNKNOWN_NOTE = "no price for this model: pass prices= for a figure"
REPORTED_NOTE = "reported by the provider (no list price for this model)"


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


__all__ = ["PRICE_UNKNOWN", "REPORTED_NOTE", "UNKNOWN_NOTE", "excludes", "spent", "total_spent"]
