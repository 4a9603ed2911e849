"""One row accounting and one cost projection for a run, computed from its ``RunReport``.

Every display (the summary, the widget panel, tqdm, ``%llm_runs``) reads the same figures
from here, so no two places can disagree on a count. Every row is in exactly one part:

    rows = answered + failed (by reason) + skipped (missing value, too long)
           + not sent (budget, stopped, interrupted, cancelled) + pending (0 once the run ends)

and every unique request is either to be sent, answered from the cache, or shared by a
duplicate row. Throughput counts answered rows only: rows closed unsent by a stop or an
interrupt took no time and are not work done.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .figures import budget_of, estimate_of, expected_cost, mode_of

NOT_SENT_KINDS = ("budget", "stopped", "interrupted", "cancelled")
"""Why rows were never sent: the budget was reached, a run-wide fault (or a pilot) stopped
the run, a kernel interrupt, a Cancel button."""
SKIPPED_KINDS = ("missing value", "too long")
OTHER = "other"  # a failure whose reason was not recorded by kind (a cell that cannot be rendered ...)
OVER_ESTIMATE = 1.5  # cost per row above this multiple of the estimate's: over_estimate


RECENT_PACKS = 20  # the last requests of a packed run whose cost per row the projection uses


@dataclass
class PackedRows:
    """A packed run (``pack=``) in rows: its requests carry several rows each, so its
    projection and ETA count rows, and a pack's cost is spread over the rows it answered
    (``RunReport.packed``; None for a run of one row a request)."""

    answered: int = 0  # rows answered by the requests the run sent
    closed: int = 0  # rows whose sent request came back with their outcome (answered or failed)
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_PACKS), repr=False)  # (cost, rows)

    def note(self, cost: float, rows: int) -> None:
        """A request came back answered: it cost ``cost`` and answered ``rows`` rows (0: its
        answer was unusable and its rows are asked again; the cost still counts)."""
        self.recent.append((cost, rows))

    @property
    def recent_per_row(self) -> float | None:
        rows = sum(r for _, r in self.recent)
        return sum(c for c, _ in self.recent) / rows if rows else None


def not_sent_kind(kind: str | None) -> str:
    """The not-sent part for an error kind (``errors.NotSent.kind``): the budget, a cancel, an
    interrupt; any other stop (a bad key, a provider down, a pilot) is "stopped"."""
    return kind if kind in ("budget", "cancelled", "interrupted") else "stopped"


@dataclass(frozen=True)
class Accounting:
    """Where every row of a run went, and what its requests were.

    ``rows == answered + sum(failed) + sum(skipped) + sum(not_sent) + pending`` always;
    ``pending`` (rows not finished yet) is 0 once the run has ended. Requests:
    ``requests_to_send`` (unique requests for the provider, cached ones and too long ones
    excluded) + ``cached`` (answered from the cache or by a pilot) + ``duplicates`` (rows that
    share another row's request); ``sent`` counts attempts on the wire, ``retries`` of them
    repeated an earlier attempt."""

    rows: int
    answered: int
    failed: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    not_sent: dict[str, int] = field(default_factory=dict)
    requests_to_send: int = 0
    cached: int = 0
    duplicates: int = 0
    retries: int = 0
    pending: int = 0
    sent: int = 0
    elapsed_s: float = 0.0

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def not_sent_total(self) -> int:
        return sum(self.not_sent.values())

    @property
    def finished(self) -> int:
        return self.rows - self.pending

    @property
    def rows_per_s(self) -> float | None:
        """Answered rows per second of wall time (None before the run started)."""
        return self.answered / self.elapsed_s if self.elapsed_s > 0 else None


@dataclass(frozen=True)
class Projection:
    """Where the money is heading, from the cost of the rows answered so far.

    ``cost_per_row``: dollars per answered request (a packed run: per row, each pack's cost
    spread over the rows it answered) over the last ones (``stats.recent_cost``,
    up to 20: answers can grow mid-run; a row that cost money, cached rows and duplicates cost
    nothing), ``average_per_row`` over the whole run so far; ``projected_total``: spent + that rate for every request still
    to send; ``expected_total``: the estimate's cost for the run's mode (None without one);
    ``stops_at_fraction``: the share of rows finished when the budget would stop the run at
    this rate (None if it would not); ``over_estimate``: cost per row above 1.5x the
    estimate's; ``eta_s``: seconds left at the observed rate of answered requests."""

    cost_per_row: float
    projected_total: float
    expected_total: float | None
    budget: float | None
    stops_at_fraction: float | None
    over_estimate: bool
    spent: float = 0.0
    expected_per_row: float | None = None
    eta_s: float | None = None
    average_per_row: float | None = None


def _merge(counts: dict[str, int], total: int, filler: str) -> dict[str, int]:
    """``counts`` made to add up to ``total``: a shortfall goes to ``filler``, an excess is
    taken from ``filler`` then from the largest parts (a row moved between parts after it
    was counted, e.g. a pilot's row that keeps its own failure)."""
    out = {k: v for k, v in counts.items() if v > 0}
    gap = total - sum(out.values())
    if gap > 0:
        out[filler] = out.get(filler, 0) + gap
    while gap < 0 and out:
        key = filler if filler in out else max(out, key=out.__getitem__)
        take = min(out[key], -gap)
        out[key] -= take
        gap += take
        if not out[key]:
            del out[key]
    return out


def accounting(report: Any) -> Accounting:
    """The ``Accounting`` of a run's report (see the module docstring)."""
    s = report.stats
    unsent = getattr(report, "not_sent", 0) or 0
    skipped = {"missing value": report.skipped or 0, "too long": getattr(report, "too_long", 0) or 0}
    skipped = {k: v for k, v in skipped.items() if v}
    failed_total = max(0, report.failed_rows - unsent - sum(skipped.values()))
    stop_kind = not_sent_kind(getattr(report, "stop_kind", None))
    if getattr(report, "interrupted", False) and not getattr(report, "stop_kind", None):
        stop_kind = "interrupted"
    not_sent = _merge(dict(getattr(report, "not_sent_by", None) or {}), unsent, stop_kind)
    failed = _merge(dict(getattr(report, "failed_by", None) or {}), failed_total, OTHER)
    cached = (report.cached or 0) + (getattr(report, "prefilled", 0) or 0)
    too_long = getattr(report, "too_long", 0) or 0
    to_send = max(0, report.requests - cached - too_long)
    closed_unsent = getattr(report, "unsent_requests", 0) or 0
    # attempts on the wire minus the requests that went out at least once (finished, on the
    # wire now, or waiting to try again)
    went_out = (max(0, s.done + s.failed - closed_unsent) + s.in_flight + s.retrying
                + (getattr(report, "cut_requests", 0) or 0))
    retries = max(0, s.sent - went_out)
    counted = report.answered_rows + sum(failed.values()) + sum(skipped.values()) + sum(not_sent.values())
    return Accounting(
        rows=report.rows, answered=report.answered_rows, failed=failed, skipped=skipped,
        not_sent=not_sent, requests_to_send=to_send, cached=cached, duplicates=report.duplicates,
        retries=retries, pending=max(0, report.rows - counted), sent=s.sent,
        elapsed_s=s.elapsed if s.started is not None else 0.0,
    )


def _units(report: Any) -> tuple[int, float | None]:
    """(units answered by what the run sent, recent cost per unit or None): a unit is a
    request, or a row in a packed run (``PackedRows``)."""
    packed = getattr(report, "packed", None)
    if packed is not None:
        return packed.answered, packed.recent_per_row
    s = report.stats
    return s.done, getattr(s, "recent_cost", None)


def _requests_left(report: Any, estimate: Any, acc: Accounting) -> tuple[int, int]:
    """(requests still to send, requests finished): none left once the run stopped or ended.
    The request stream is walked as requests go out, so while the run goes the report has found
    only part of them: the estimate's count (made by the same walk) stands for all. A packed
    run counts rows: the rows to send (the estimate's rows less the cached, duplicated and
    skipped ones) less the rows whose request came back; without an estimate, the rows with
    no outcome yet."""
    s = report.stats
    packed = getattr(report, "packed", None)
    if packed is not None:
        done = packed.closed
    else:
        done = max(0, s.done + s.failed - (getattr(report, "unsent_requests", 0) or 0))
    if s.stop_reason or acc.pending == 0:
        return 0, done
    if packed is not None:
        if estimate is None:  # no plan: every row without an outcome yet is still to pay
            return acc.pending, done
        planned = (estimate.rows - estimate.duplicates - estimate.cached - estimate.skipped
                   - estimate.too_long)
        total = max(acc.requests_to_send, planned)
    else:
        total = max(acc.requests_to_send, getattr(estimate, "to_send", 0) or 0)
    return max(0, total - done), done


def eta_s(report: Any, estimate: Any = None) -> float | None:
    """Seconds left at the observed rate of answered requests (a packed run: rows; rows
    closed unsent and failures that came back at once are no measure of speed); None before
    an answer."""
    s = report.stats
    answered, _ = _units(report)
    if answered <= 0 or s.started is None or s.elapsed <= 0:
        return None
    left, _ = _requests_left(report, estimate_of(report, estimate), accounting(report))
    return left / (answered / s.elapsed)


def projection(report: Any, estimate: Any = None, budget: float | None = None) -> Projection | None:
    """The run's ``Projection``, or None before its first answered request (or without a
    cost: a model with no price whose provider reports none)."""
    s = report.stats
    answered, recent = _units(report)
    if answered <= 0 or not s.cost:
        return None
    estimate = estimate_of(report, estimate)
    budget = budget_of(report, estimate, budget)
    acc = accounting(report)
    average = s.cost / answered
    per_row = recent if recent else average  # the last answers' cost: answers may have grown
    left, _ = _requests_left(report, estimate, acc)
    projected = s.cost + per_row * left
    expected = expected_cost(estimate, mode_of(report, estimate))[1]
    to_send = getattr(estimate, "to_send", 0) or 0
    if getattr(report, "packed", None) is not None and estimate is not None:  # rows, not packs
        to_send = estimate.rows - estimate.duplicates - estimate.cached - estimate.skipped - estimate.too_long
    expected_per_row = expected / to_send if expected is not None and to_send > 0 else None
    stops_at = None
    eta = eta_s(report, estimate)
    if budget is not None and left and projected > budget:
        affordable = max(0.0, budget - s.cost) / per_row  # requests the rest of the budget pays for
        stops_at = (acc.finished + acc.pending * min(1.0, affordable / left)) / report.rows if report.rows else None
        if eta is not None:
            eta *= min(1.0, affordable / left)  # the budget ends the run first
    return Projection(
        cost_per_row=per_row, projected_total=projected, expected_total=expected, budget=budget,
        stops_at_fraction=stops_at,
        over_estimate=expected_per_row is not None and per_row > OVER_ESTIMATE * expected_per_row,
        spent=s.cost, expected_per_row=expected_per_row, eta_s=eta, average_per_row=average,
    )


def combined(parts: list[Accounting]) -> Accounting:
    """Several runs' accountings added up (``model=[...]``): counts and reasons summed, the
    wall time the longest."""
    def add(name: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in parts:
            for k, v in getattr(a, name).items():
                out[k] = out.get(k, 0) + v
        return out

    total = {f: sum(getattr(a, f) for a in parts)
             for f in ("rows", "answered", "requests_to_send", "cached", "duplicates", "retries", "pending", "sent")}
    return Accounting(**total, failed=add("failed"), skipped=add("skipped"), not_sent=add("not_sent"),
                      elapsed_s=max((a.elapsed_s for a in parts), default=0.0))
