"""The figures of a run, computed from its report: no formatting, no HTML, no display library.

Every display (the static summary, the widget panel, the group table, the tqdm bar) and the
runs themselves ask here, so a figure such as "the cost expected for this run's mode" or "rows
not sent" is computed in one place. The functions read a ``RunReport`` (``core.report``) and the
``Estimate`` made before the run (``planning.estimate``) by their attributes only: core imports
nothing above it, so neither type is imported here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .numbers import duration

if TYPE_CHECKING:
    from .stats import EngineStats

MAX_ERROR_CHARS = 200  # an error message or warning is cut here before any display shows it


def mode_of(report: Any = None, estimate: Any = None) -> str:
    """"real time" or "batch" (read from an optional ``mode`` attribute, if any)."""
    for obj in (report, estimate):
        mode = getattr(obj, "mode", None)
        if mode:
            return "batch" if "batch" in str(mode).lower() else "real time"
    return "real time"


def estimate_of(report: Any = None, estimate: Any = None) -> Any:
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


def expected_cost(estimate: Any, mode: str) -> tuple[float | None, float | None, float | None]:
    """(low, expected, high) dollars for the mode of the run ("batch" prices half, when the
    estimate has them): the one place "the cost for this mode" is read from an estimate."""
    if estimate is None:
        return None, None, None
    if mode == "batch" and estimate.batch_cost is not None:
        return estimate.batch_cost_low, estimate.batch_cost, estimate.batch_cost_high
    return estimate.cost_low, estimate.cost, estimate.cost_high


BATCH_WINDOW_S = 24 * 3600  # a batch job's completion window: OpenAI's "24h", Anthropic's 24 h expiry


def expected_wall(estimate: Any, mode: str) -> tuple[float | None, str]:
    """(seconds, words) for how long a run should take: in real time the estimate's wall time
    ("~35 s"); in batch mode nobody can say, the provider only promises its window, so
    (None, "up to 24 h"): a real-time figure next to it would mislead."""
    if mode == "batch":
        return None, "up to 24 h"
    seconds = getattr(estimate, "wall_time_s", None)
    if seconds is None:
        return None, ""
    return seconds, "~" + duration(seconds)


def top_errors(stats: EngineStats, n: int = 5) -> list[tuple[str, int]]:
    # list() copies in one step: the engine's thread may add an error while we read
    errors = list((getattr(stats, "errors", None) or {}).items())
    ranked = sorted(errors, key=lambda kv: -kv[1])  # stable: ties keep first-seen order
    return [(str(msg)[:MAX_ERROR_CHARS], cnt) for msg, cnt in ranked[:n]]


def status(report: Any, *, cancelled: bool = False, final: bool = True) -> tuple[str, str]:
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


def throughput(report: Any) -> tuple[float | None, float | None]:
    """(answered rows per second, answered requests per second) over the run's wall time.
    Only answers count: rows closed unsent by a stop or an interrupt, and requests that
    failed at once (a bad key), are not work done."""
    s = report.stats
    if s.started is None or s.elapsed <= 0:
        return None, None
    return report.answered_rows / s.elapsed, s.done / s.elapsed


def not_sent(report: Any) -> int:
    """Rows closed unsent because the run stopped first (cancelled, budget reached,
    interrupted): counted in ``failed_rows`` but shown apart, as they neither failed nor cost
    anything."""
    return getattr(report, "not_sent", 0) or 0


def failed(report: Any) -> int:
    """Rows that failed: sent and not answered, or refused for a bad cell. Not the skipped
    (missing value, too long) nor the not sent, which ``failed_rows`` also holds."""
    return max(0, report.failed_rows - not_sent(report) - (getattr(report, "skipped", 0) or 0)
               - (getattr(report, "too_long", 0) or 0))


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


def warnings_of(report: Any) -> list[str]:
    return [str(x)[:MAX_ERROR_CHARS] for x in list(getattr(report, "warnings", None) or [])]


# -- batch jobs (mode="batch") --------------------------------------------------------------

BATCH_ENDED = frozenset({"completed", "ended", "failed", "expired", "cancelled", "canceled"})


def batch_progress(stats: Any) -> tuple[int, int]:
    """(processed, total) requests of the run's batch jobs: succeeded + errored of total."""
    counts = dict(getattr(stats, "batch_counts", None) or {})
    return counts.get("succeeded", 0) + counts.get("errored", 0), counts.get("total", 0)


def batch_ended(status: str | None) -> bool:
    """True when every job named in a (summarised) status has ended."""
    words = [w for w in re.findall(r"[a-z_]+", str(status or "").lower()) if w not in ("jobs", "job")]
    return bool(words) and all(w in BATCH_ENDED for w in words)


# -- several models side by side ------------------------------------------------------------
# ``df.llm.apply(..., model=[...])`` runs one Run per model, concurrently, under one budget.


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

