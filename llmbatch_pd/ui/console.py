"""A tqdm bar for terminals, scripts and CI, with the key figures in its postfix.

``ok=… failed=… retrying=… 429=… 5xx=… $=spent/budget``: zero figures other than ok and failed
are left out so the line stays short. Redraws are throttled (``update()`` may be called ten
times a second; the bar redraws at most every ``min_interval`` seconds).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

from tqdm import tqdm

from ..core import numbers as fmt
from ..core.figures import batch_progress, budget_of, estimates_for, group_budget, mode_of
from .costs import PRICE_UNKNOWN, cost_known
from .lines import short_models
from .report import estimate_text, estimates_text

if TYPE_CHECKING:
    from ..core.report import RunReport
    from ..planning.estimate import Estimate

POSTFIX_KINDS = ("429", "5xx", "529", "timeout", "connection")


class _Bar:
    """What the two bars share: the lazily made tqdm bar, throttled redraws, ``finish()``.
    A subclass says what the bar counts (``_desc``, ``_total``, ``_finished``) and ``postfix()``."""

    budget: float | None

    def __init__(self, *, file: Any, min_interval: float) -> None:
        self.file = file
        self.min_interval = min_interval
        self._last = 0.0
        self._closed = False
        self._bar: tqdm | None = None

    @property
    def bar(self) -> tqdm:
        """Made on first use, so a plan written by ``show_estimate()`` comes above it."""
        if self._bar is None:
            self._bar = tqdm(total=self._total(), desc=self._desc(), unit="row", file=self.file,
                             dynamic_ncols=True, mininterval=self.min_interval, smoothing=0.1)
        return self._bar

    def show(self) -> Self:
        return self

    def postfix(self) -> dict[str, Any]:
        raise NotImplementedError

    def update(self, *, force: bool = False) -> None:
        if self._closed:
            return
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        self.bar.n = min(self._finished(), self._total())
        self.bar.set_postfix(self.postfix(), refresh=False)
        self.bar.refresh()

    def finish(self) -> None:
        if self._closed:
            return
        self.update(force=True)
        self._closed = True
        self.bar.close()

    close = finish

    def _desc(self) -> str:
        raise NotImplementedError

    def _total(self) -> int:
        raise NotImplementedError

    def _finished(self) -> int:
        raise NotImplementedError

    def _write(self, text: str) -> None:
        """Write above the bar (tqdm keeps the bar below it)."""
        tqdm.write(text, file=self.file or sys.stderr)

    def _dollars(self, post: dict[str, Any], spent: float, unknown: int = 0, of: int = 1) -> None:
        """``$=spent/budget`` (or just what was spent, if anything, without a budget);
        ``unknown`` of ``of`` models have no price: "$=price unknown", or the known part with
        how many models it leaves out."""
        if unknown and unknown == of:
            post["$"] = PRICE_UNKNOWN
            return
        left_out = f" (excludes {unknown})" if unknown else ""
        if self.budget is not None:
            post["$"] = f"{fmt.money(spent)[1:]}/{fmt.money(self.budget)[1:]}{left_out}"
        elif spent or unknown:
            post["$"] = fmt.money(spent)[1:] + left_out


class ConsoleProgress(_Bar):
    """Same interface as ``Panel``: ``update()``, ``close()``, ``show_estimate()``, ``finish()``."""

    def __init__(self, report: RunReport, estimate: Estimate | None = None, budget: float | None = None,
                 *, file: Any = None, min_interval: float = 0.25) -> None:
        super().__init__(file=file, min_interval=min_interval)
        self.report = report
        self.estimate = estimate
        self.budget = budget_of(report, estimate, budget)

    def show_estimate(self, estimate: Estimate | None = None) -> None:
        """Write the plan above the bar (one figure a line)."""
        if estimate is not None:
            self.estimate = estimate
            self.budget = budget_of(self.report, estimate, self.budget)
        if self.estimate is not None:
            mode = mode_of(self.report, self.estimate)
            self._write(f"plan for {self.estimate.model} ({mode}):\n"
                        + estimate_text(self.estimate, budget=self.budget, mode=mode))

    def postfix(self) -> dict[str, Any]:
        r, s = self.report, self.report.stats
        post: dict[str, Any] = {"ok": r.answered_rows, "failed": r.failed_rows}
        if s.batch_status:  # mode="batch": the provider's job status and counts while it polls
            counts = s.batch_counts
            done = counts.get("succeeded", 0) + counts.get("errored", 0)
            post["batch"] = f"{s.batch_status} {done}/{counts.get('total', '?')}"
        if s.retrying:
            post["retrying"] = s.retrying
        for kind in POSTFIX_KINDS:
            if s.by_kind.get(kind):
                post[kind] = s.by_kind[kind]
        self._dollars(post, s.cost, 0 if cost_known(r, self.estimate) else 1)
        if s.stop_reason:
            post["stopping"] = s.stop_reason[:40]
        return post

    def _desc(self) -> str:
        return self.report.model

    def _total(self) -> int:
        return self.report.rows

    def _finished(self) -> int:
        return self.report.finished_rows


class GroupProgress(_Bar):
    """The tqdm fallback for several models: one bar over rows × models, a postfix per model
    (``gpt-4.1-mini=990/10``) and the summed dollars. Same interface as ``ConsoleProgress``."""

    def __init__(self, reports: Sequence[RunReport], estimates: Sequence[Estimate | None] | None = None,
                 budget: float | None = None, *, file: Any = None, min_interval: float = 0.25) -> None:
        super().__init__(file=file, min_interval=min_interval)
        self.reports = list(reports)
        self._estimates = estimates_for(self.reports, estimates)
        self.budget = group_budget(self.reports, self._estimates, budget)
        self.names = short_models([r.model for r in self.reports])

    @property
    def estimates(self) -> list[Estimate | None]:
        return estimates_for(self.reports, self._estimates)

    def show_estimate(self, estimates: Sequence[Estimate | None] | None = None) -> None:
        """Write the plans (a row per model and the total) above the bar."""
        if estimates is not None:
            self._estimates = estimates_for(self.reports, estimates)
            self.budget = group_budget(self.reports, self._estimates, self.budget)
        if any(e is not None for e in self.estimates):
            self._write("plan:\n" + estimates_text(self.reports, self.estimates, budget=self.budget))

    def postfix(self) -> dict[str, Any]:
        post: dict[str, Any] = {}
        for name, r in zip(self.names, self.reports, strict=True):
            text = f"{r.answered_rows}/{r.failed_rows}"
            s = r.stats
            if s.batch_status:
                done, total = batch_progress(s)
                text += f" {s.batch_status} {done}/{total or '?'}"
            post[name] = text
        known = [cost_known(r, e) for r, e in zip(self.reports, self.estimates, strict=True)]
        self._dollars(post, sum(r.stats.cost for r, k in zip(self.reports, known, strict=True) if k),
                      known.count(False), len(known))
        reasons = [r.stats.stop_reason for r in self.reports if r.stats.stop_reason]
        if reasons:
            post["stopping"] = reasons[0][:40]
        return post

    def _desc(self) -> str:
        return f"{len(self.reports)} models"

    def _total(self) -> int:
        return sum(r.rows for r in self.reports)

    def _finished(self) -> int:
        return sum(r.finished_rows for r in self.reports)


__all__ = ["ConsoleProgress", "GroupProgress"]
