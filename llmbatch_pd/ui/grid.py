"""Several models side by side: a table with a row per model, a total row and a column per
figure, rendered as HTML, aligned text or Markdown.

``df.llm.apply(..., model=[...])`` runs one Run per model, concurrently, under one budget. The
rows here read a list of RunReports (and, optionally, their Estimates in the same order): the
plan before the runs (``estimate_rows``) and what every model did (``report_rows``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core import numbers as fmt
from ..core.figures import (
    estimates_for,
    expected_cost,
    expected_wall,
    group_elapsed,
    group_status,
    mode_of,
    not_sent,
    status,
)
from ..core.figures import (
    failed as failed_of,
)
from .costs import PRICE_UNKNOWN, excludes, spent, total_spent
from .lines import short_models
from .style import BORDER, MUTED, TABLE, TR, colored, esc, md, one_line


@dataclass
class Cell:
    """One cell of a table with a column per figure: a value, a quieter note, a tone."""

    value: str
    note: str = ""
    tone: str = ""
    full: str = ""  # text and Markdown show this instead of value; HTML shows it on hover


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
            Cell(fmt.count(e.to_send), f"+{fmt.count(e.cached)} cached" if e.cached else ""),
            Cell(fmt.tokens(e.input_tokens)),
            Cell("~" + fmt.tokens(e.output_tokens)),
            Cell(fmt.money(mid), "", "") if mid is not None else Cell(PRICE_UNKNOWN, "", "warn"),
            Cell(fmt.money_range(low, high) if mid is not None else fmt.MISSING,
                 "batch prices" if mode == "batch" and mid is not None else ""),
            Cell(expected_wall(e, mode)[1]),
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
        Cell(fmt.count(sum(e.to_send for e in known)) if known else fmt.MISSING),
        Cell(fmt.tokens(sum(e.input_tokens for e in known)) if known else fmt.MISSING),
        Cell("~" + fmt.tokens(sum(e.output_tokens for e in known)) if known else fmt.MISSING),
        Cell(fmt.money(partial(mids)) if priced_mids or not known else PRICE_UNKNOWN,
             excludes(unpriced) if priced_mids else "", "warn" if unpriced else ""),
        Cell(fmt.money_range(partial(lows), partial(highs))),
        Cell(_longest_wall(reports, ests) if known else fmt.MISSING),
    ]
    return rows, total


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
        unsent, failed = not_sent(r), failed_of(r)
        _, mid, _ = expected_cost(e, mode)
        mids.append(mid)
        label, tone = status(r, cancelled=cancelled)
        reason = s.stop_reason or ("interrupted" if r.interrupted else "")
        rows.append([
            Cell(name, "batch" if mode == "batch" else "", full=r.model),
            Cell(fmt.count(r.answered_rows), "", "ok" if r.answered_rows else ""),
            Cell(fmt.count(failed), _others(r.failed_rows - unsent - failed, unsent), "bad" if failed else ""),
            Cell(fmt.count(s.sent)),
            Cell(fmt.count(r.cached)),
            Cell(f"{fmt.tokens(s.input_tokens)} / {fmt.tokens(s.output_tokens)}"),
            _spent_cell(r, e, mid),
            Cell(fmt.duration(s.elapsed) if s.started is not None else fmt.MISSING),
            Cell(label, one_line(reason)[:60] if reason and reason != label else "", tone),
        ])
    known_mids = [m for m in mids if m is not None]  # the total's estimate: the priced models'
    total_mid = float(sum(known_mids)) if known_mids else None
    answered = sum(r.answered_rows for r in reports)
    failed = sum(failed_of(r) for r in reports)
    unsent = sum(not_sent(r) for r in reports)
    skipped = sum(r.failed_rows for r in reports) - failed - unsent
    label, tone = group_status(reports, cancelled=cancelled)
    total = [
        Cell("Total", fmt.plural(len(reports), "model")),
        Cell(fmt.count(answered), "", "ok" if answered else ""),
        Cell(fmt.count(failed), _others(skipped, unsent), "bad" if failed else ""),
        Cell(fmt.count(sum(r.stats.sent for r in reports))),
        Cell(fmt.count(sum(r.cached for r in reports))),
        Cell(f"{fmt.tokens(sum(r.stats.input_tokens for r in reports))} / "
             f"{fmt.tokens(sum(r.stats.output_tokens for r in reports))}"),
        _total_cell(reports, ests, total_mid),
        Cell(fmt.duration(group_elapsed(reports))),
        Cell(label, "", tone),
    ]
    return rows, total


def _longest_wall(reports: list[Any], ests: list[Any]) -> str:
    """The group's wall time: its slowest model's ("up to 24 h" if one runs in batch)."""
    walls = [expected_wall(e, mode_of(r, e)) for r, e in zip(reports, ests, strict=True) if e is not None]
    if any(seconds is None for seconds, _ in walls):
        return next(words for seconds, words in walls if seconds is None)
    return max(walls)[1]


def _others(skipped: int, unsent: int) -> str:
    """The note under "Failed": the rows without an answer that did not fail."""
    parts = ([f"+{fmt.count(skipped)} skipped"] if skipped else []) + ([f"+{fmt.count(unsent)} unsent"] if unsent else [])
    return ", ".join(parts)


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
    return one_line(c.full or c.value) + (f" ({one_line(c.note)})" if c.note else "")


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
    def cell(c: Cell, bold: bool = False) -> str:
        value = md(c.full or c.value)
        value = f"**{value}**" if bold and value else value
        return value + (f" ({md(c.note)})" if c.note else "")

    out = ["| " + " | ".join(md(h) for h in head) + " |",
           "|" + "|".join("---" if i == 0 else "--:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    if total is not None:
        out.append("| " + " | ".join(cell(c, bold=True) for c in total) + " |")
    return "\n".join(out)
