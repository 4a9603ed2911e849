"""The estimate where people read it before paying: the ways to run the rows (when the plan
has them) and figures people compare at a glance (money to 3 significant figures, times in
whole seconds).

Why apart from ``ui.report``: the plan's own table (``lines.plan_lines``) is one figure a
line; the ways are a grid of several options side by side.
"""

from __future__ import annotations

import math
from typing import Any

from ..core import numbers as fmt
from .style import (
    MUTED,
    TABLE,
    TD,
    TH,
    TR,
    esc,
    muted,
)


def money3(dollars: float | None) -> str:
    """Dollars to 3 significant figures: ``$0.0123``, ``$1.23``, ``$12.3``, ``$1,230``."""
    if dollars is None or (isinstance(dollars, float) and math.isnan(dollars)):
        return fmt.MISSING
    x = abs(float(dollars))
    if x < 1:
        return fmt.money(dollars)
    digits = math.floor(math.log10(x))
    rounded = round(x, 2 - digits)
    if math.floor(math.log10(rounded)) > digits:  # 9.996 -> 10.0
        digits += 1
    return f"{'-' if dollars < 0 else ''}${rounded:,.{max(0, 2 - digits)}f}"


def seconds(s: float | None) -> str:
    """A time in whole seconds (``7.5 -> "8s"``, ``188 -> "3m 08s"``); under half a second "<1s"."""
    if s is None or (isinstance(s, float) and (math.isnan(s) or math.isinf(s))):
        return fmt.MISSING
    if s < 0.5:
        return "<1s"
    return fmt.duration(round(s))


WAYS_HEAD = ("Way", "Cost", "Wall time", "Requests", "Within budget", "")


def ways_rows(estimate: Any) -> list[tuple[str, ...]]:
    """One row per way of running the rows (``Estimate.ways``), as text; empty without."""
    rows = []
    for way in list(getattr(estimate, "ways", None) or []):
        fits = getattr(way, "fits", None)
        note = getattr(way, "note", "") or ""
        if getattr(way, "cheapest", False):
            note = "cheapest" + (f"; {note}" if note else "")
        rows.append((str(way.name), money3(way.cost), seconds(getattr(way, "wall_s", None)),
                     fmt.count(getattr(way, "requests", None)),
                     fmt.MISSING if fits is None else ("yes" if fits else "no"), note))
    return rows


def ways_html(estimate: Any) -> str:
    """The ways as a small grid (nothing when the plan has none)."""
    rows = ways_rows(estimate)
    if not rows:
        return ""
    def place(i: int) -> str:  # every column apart from its neighbour; figures right-aligned
        return ("white-space:nowrap;" + ("padding-left:14px;" if i else "")
                + ("text-align:right;" if 0 < i < 4 else ""))

    head = "".join(f'<th style="{TH}{place(i)}">{esc(h)}</th>' for i, h in enumerate(WAYS_HEAD))
    body = []
    for row, way in zip(rows, estimate.ways, strict=True):
        bold = "font-weight:600;" if getattr(way, "cheapest", False) else ""
        dim = f"color:{MUTED};" if getattr(way, "fits", None) is False else ""
        cells = "".join(f'<td style="{TD}{bold}{dim}{place(i)}">{esc(v)}</td>'
                        for i, v in enumerate(row[:5]))
        body.append(f'<tr style="{TR}">{cells}<td style="{TD}padding-left:14px">{muted(esc(row[5]))}</td></tr>')
    return (f'<div style="margin-top:6px;color:{MUTED};font-size:12px">Ways to run it</div>'
            f'<table style="{TABLE}"><thead><tr style="{TR}">{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def ways_text(estimate: Any) -> str:
    rows = ways_rows(estimate)
    if not rows:
        return ""
    table = [WAYS_HEAD[:5], *[r[:5] for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    lines = ["  Ways to run it:"]
    for n, r in enumerate(table):
        lines.append("    " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                     + (f"  ({rows[n - 1][5]})" if n and rows[n - 1][5] else ""))
    return "\n".join(lines)


__all__ = ["money3", "seconds", "ways_html", "ways_rows", "ways_text"]
