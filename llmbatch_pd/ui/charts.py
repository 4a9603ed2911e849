"""Small pictures for the notebook card and the summary, as inline SVG strings.

Why SVG in the HTML: it needs no plotting library, no script and no external file, so the
picture is part of the output itself and survives ``jupyter nbconvert --to html``, GitHub's
viewer and a notebook reopened without its kernel. Each function takes plain numbers (no
report, no widget) and returns one ``<svg>``; its parts carry ``data-part`` names and their
figures in ``data-*`` attributes, so a test (or a reader of the HTML) can check a picture
against the numbers it was drawn from.

- ``budget_bar``: dollars spent against the budget, a projected segment (where the run is
  heading at its current cost per row), a tick at the expected cost and one at the budget.
- ``sparkline``: rows per second over the last 60 s, with a mark under each second that
  had a 429 (rate limited).
- ``cost_bars``: dollars per model, one bar each (``model=[...]``).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core import numbers as fmt
from .style import AMBER, BLUE, GREY, RED, TRACK
from .style import esc as _esc

WIDTH = 1000.0  # the viewBox width: x positions are thousandths of the bar
FONT_PX = 11
PROJECTED = "#8ab4f8"  # a lighter blue: where the run is heading, not money spent yet


def esc(text: object) -> str:
    """Escaped for SVG text, with "$" as an entity: ``style.card_html`` wraps each bare dollar
    sign of HTML text in a <span> (against MathJax), which is not allowed inside SVG text."""
    return _esc(text).replace("$", "&#36;")


def _x(value: float, scale: float) -> float:
    """``value`` dollars (or rows/s) as an x position in a viewBox ``WIDTH`` wide."""
    if scale <= 0:
        return 0.0
    return round(max(0.0, min(1.0, value / scale)) * WIDTH, 2)


def bar_scale(budget: float, expected: float | None = None, projected: float | None = None) -> float:
    """The dollars the full width stands for: the budget, or more when the expected or
    projected cost is above it (up to twice the budget, so the budget tick stays readable)."""
    top = max([budget] + [v for v in (expected, projected) if v is not None])
    return min(top, 2 * budget) if budget > 0 else top


def budget_bar(spent: float, budget: float, *, expected: float | None = None,
               projected: float | None = None, height: int = 14) -> str:
    """The budget as a bar: spent (solid; amber from 80 % of the budget, red at it), the
    projected total beyond it (light; red past the budget, where the run would stop), a dark
    tick at the expected cost and a line at the budget. Widths are fractions of
    ``bar_scale(budget, expected, projected)``."""
    scale = bar_scale(budget, expected, projected)
    used = spent / budget if budget > 0 else (1.0 if spent else 0.0)
    fill = RED if used >= 0.999 else AMBER if used >= 0.8 else BLUE
    x_spent = _x(spent, scale)
    parts = [f'<rect data-part="track" x="0" y="3" width="{WIDTH:g}" height="{height - 6}" rx="3" '
             f'style="fill:{TRACK}"/>']
    if projected is not None and projected > spent:
        x_end = _x(projected, scale)
        x_budget = _x(budget, scale)
        inside = min(x_end, x_budget)
        if inside > x_spent:
            parts.append(f'<rect data-part="projected" data-dollars="{projected:.6g}" x="{x_spent:g}" y="3" '
                         f'width="{inside - x_spent:.2f}" height="{height - 6}" style="fill:{PROJECTED}"/>')
        if x_end > x_budget:  # the part the budget will not let happen
            start = max(x_budget, x_spent)
            parts.append(f'<rect data-part="over" x="{start:g}" y="3" width="{x_end - start:.2f}" '
                         f'height="{height - 6}" style="fill:{RED};fill-opacity:.35"/>')
    parts.append(f'<rect data-part="spent" data-dollars="{spent:.6g}" x="0" y="3" width="{x_spent:g}" '
                 f'height="{height - 6}" style="fill:{fill}"/>')
    if expected is not None:
        xe = _x(expected, scale)
        parts.append(f'<rect data-part="expected" data-dollars="{expected:.6g}" x="{max(xe - 3, 0):g}" y="0" '
                     f'width="6" height="{height}" style="fill:var(--jp-ui-font-color1, #1f2328)">'
                     f'<title>expected {esc(fmt.money(expected))}</title></rect>')
    xb = _x(budget, scale)
    parts.append(f'<rect data-part="budget" data-dollars="{budget:.6g}" x="{max(xb - 3, 0):g}" y="0" width="6" '
                 f'height="{height}" style="fill:{RED}"><title>budget {esc(fmt.money(budget))}</title></rect>')
    label = f"{fmt.money(spent)} spent of a {fmt.money(budget)} budget"
    if expected is not None:
        label += f", {fmt.money(expected)} expected"
    if projected is not None:
        label += f", {fmt.money(projected)} projected"
    return (f'<svg class="llmbatch-chart" data-chart="budget" data-scale="{scale:.6g}" role="img" '
            f'aria-label="{esc(label)}" viewBox="0 0 {WIDTH:g} {height}" preserveAspectRatio="none" '
            f'width="100%" height="{height}" style="display:block;margin:4px 0 2px 0">'
            f'<title>{esc(label)}</title>{"".join(parts)}</svg>')


def budget_legend(spent: float, budget: float, expected: float | None, projected: float | None) -> str:
    """The words under the bar: what each mark is, with its figure (HTML, escaped)."""
    def key(color: str, text: str) -> str:
        return (f'<span style="white-space:nowrap;margin-right:12px"><span style="display:inline-block;'
                f'width:9px;height:9px;border-radius:2px;background:{color};margin-right:4px;'
                f'vertical-align:-1px"></span>{esc(text)}</span>')
    used = spent / budget if budget > 0 else 0.0
    items = [key(RED if used >= 0.999 else AMBER if used >= 0.8 else BLUE,
                 f"{fmt.money(spent)} spent ({fmt.percent(used)})")]
    if projected is not None:
        items.append(key(PROJECTED, f"{fmt.money(projected)} projected"))
    if expected is not None:
        items.append(key("var(--jp-ui-font-color1, #1f2328)", f"{fmt.money(expected)} expected"))
    items.append(key(RED, f"{fmt.money(budget)} budget"))
    return f'<div style="font-size:11.5px;font-variant-numeric:tabular-nums">{"".join(items)}</div>'


def sparkline(series: Sequence[tuple[float, float, bool]], *, window_s: float = 60.0,
              height: int = 28) -> str:
    """Rows per second in 1 s buckets (``(t_offset_s, rows_per_s, had_429)``, oldest first,
    ``t_offset_s`` from -window_s to 0) as a line, with a red mark at the foot of every second
    that saw a 429. Empty (no svg) before two buckets."""
    points = [(float(t), max(0.0, float(r)), bool(h)) for t, r, h in series]
    if len(points) < 2:  # one second is a dot, not a line
        return ""
    top = max(r for _, r, _ in points) or 1.0
    plot_h = height - 6

    def xy(t: float, r: float) -> tuple[float, float]:
        x = round((1 - min(max(-t, 0.0), window_s) / window_s) * WIDTH, 2)
        return x, round(plot_h - r / top * (plot_h - 2) + 1, 2)

    line = " ".join(f"{x:g},{y:g}" for x, y in (xy(t, r) for t, r, _ in points))
    marks = "".join(
        f'<rect data-part="429" data-t="{t:g}" x="{xy(t, 0)[0] - 4:g}" y="{height - 4}" width="8" height="4" '
        f'style="fill:{RED}"/>' for t, _, had in points if had)
    now = points[-1][1]
    label = (f"rows per second over the last {window_s:.0f} s: now {fmt.rate(now)}, peak {fmt.rate(top)}"
             + (f"; {sum(1 for p in points if p[2])} s with 429 answers" if marks else ""))
    return (f'<svg class="llmbatch-chart" data-chart="rate" data-peak="{top:.6g}" role="img" '
            f'aria-label="{esc(label)}" viewBox="0 0 {WIDTH:g} {height}" preserveAspectRatio="none" '
            f'width="100%" height="{height}" style="display:block;margin:4px 0 0 0">'
            f'<title>{esc(label)}</title>'
            f'<line x1="0" y1="{plot_h + 1}" x2="{WIDTH:g}" y2="{plot_h + 1}" style="stroke:{GREY};'
            f'stroke-opacity:.4;stroke-width:1" vector-effect="non-scaling-stroke"/>'
            f'<polyline data-part="rate" points="{line}" style="fill:none;stroke:{BLUE};stroke-width:1.5" '
            f'vector-effect="non-scaling-stroke"/>{marks}</svg>')


def cost_bars(items: Sequence[tuple[str, float | None]], *, row_px: int = 18, label_px: int = 150,
              width_px: int = 460) -> str:
    """Dollars per model as horizontal bars (the longest is the costliest); a model without a
    figure (no price) gets no bar and says so. Fixed pixel size: text in SVG must not stretch."""
    items = [(str(name), cost) for name, cost in items]
    if not items:
        return ""
    top = max((c for _, c in items if c), default=0.0) or 1.0
    bar_w = width_px - label_px - 80
    rows = []
    for i, (name, cost) in enumerate(items):
        y = i * row_px
        w = 0.0 if not cost else round(cost / top * bar_w, 2)
        text = fmt.money(cost) if cost is not None else "price unknown"
        rows.append(
            f'<text x="{label_px - 6}" y="{y + row_px - 5}" text-anchor="end" style="fill:currentColor">'
            f'{esc(name)}</text>'
            f'<rect data-part="cost" data-model="{esc(name)}" data-dollars="{(cost or 0):.6g}" x="{label_px}" '
            f'y="{y + 3}" width="{w:g}" height="{row_px - 6}" rx="2" style="fill:{BLUE}"/>'
            f'<text x="{label_px + w + 5:g}" y="{y + row_px - 5}" style="fill:currentColor">{esc(text)}</text>')
    height = row_px * len(items)
    label = "cost per model: " + ", ".join(
        f"{n} {fmt.money(c) if c is not None else 'price unknown'}" for n, c in items)
    return (f'<svg class="llmbatch-chart" data-chart="cost" role="img" aria-label="{esc(label)}" '
            f'viewBox="0 0 {width_px} {height}" width="{width_px}" height="{height}" '
            f'style="display:block;margin:6px 0 2px 0;max-width:100%;font-size:{FONT_PX}px;'
            f'font-variant-numeric:tabular-nums"><title>{esc(label)}</title>{"".join(rows)}</svg>')


__all__ = ["bar_scale", "budget_bar", "budget_legend", "cost_bars", "sparkline"]
