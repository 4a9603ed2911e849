"""A run's report: what happened, as figures (counts, tokens, dollars, time), for people.

Its rendering (text, HTML, Markdown) lives in ``ui.report``; the six function-level imports of
it below are the only place the runs layer reaches the UI. This module is the report data's
interim home: it moves to ``core/report.py`` (presentation-free), and then this module goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.numbers import money
from ..core.stats import EngineStats
from ..planning import estimate as plan


@dataclass(repr=False)
class RunReport:
    """What happened, for people: counts, tokens, dollars, time."""

    model: str
    rows: int = 0
    requests: int = 0
    duplicates: int = 0
    skipped: int = 0
    cached: int = 0
    prefilled: int = 0
    too_long: int = 0
    truncated: int = 0  # of answered_rows: cut at max_tokens (text kept, flagged in the error column)
    answered_rows: int = 0
    failed_rows: int = 0
    not_sent: int = 0  # of failed_rows: closed unsent because the run stopped first (cancel, budget)
    saved_by_cache: float = 0.0
    saved_by_dedup: float = 0.0
    budget: float | None = None
    estimate: plan.Estimate | None = None
    stats: EngineStats = field(default_factory=EngineStats)
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)
    mode: str = "realtime"
    priced: bool = True  # the model has a price (else only provider-reported costs count)

    @property
    def finished_rows(self) -> int:
        return self.answered_rows + self.failed_rows

    @property
    def cost(self) -> float:
        return self.stats.cost

    def summary(self) -> str:
        """Plain text for scripts and logs: the same figures the notebook summary shows."""
        from ..ui.report import report_text

        return report_text(self)

    __str__ = summary

    @property
    def _estimated_cost(self) -> float | None:
        return None if self.estimate is None else self.estimate.cost_for(self.mode)

    def _repr_html_(self) -> str:
        from ..ui.report import report_html

        return report_html(self)

    def to_markdown(self) -> str:
        from ..ui.report import report_markdown

        return report_markdown(self)


class RunReports(list):
    """``model=[...]``: one RunReport per model, in the order given; ``reports["openai/x"]``
    picks one by model name. Totals add up over the models."""

    def __getitem__(self, key):
        if isinstance(key, str):
            for report in self:
                if report.model == key:
                    return report
            raise KeyError(f"no report for {key!r}; models: {[r.model for r in self]}")
        return super().__getitem__(key)

    @property
    def model(self) -> str:
        return ", ".join(r.model for r in self)

    @property
    def cost(self) -> float:
        return sum(r.cost for r in self)

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self)

    @property
    def answered_rows(self) -> int:
        return sum(r.answered_rows for r in self)

    @property
    def failed_rows(self) -> int:
        return sum(r.failed_rows for r in self)

    @property
    def finished_rows(self) -> int:
        return self.answered_rows + self.failed_rows

    def summary(self) -> str:
        from ..ui.report import reports_text

        return reports_text(list(self))

    __str__ = summary

    def _repr_html_(self) -> str:
        from ..ui.report import reports_html

        return reports_html(list(self))

    def to_markdown(self) -> str:
        from ..ui.report import reports_markdown

        return reports_markdown(list(self))

    def __repr__(self) -> str:
        return (f"<RunReports {len(self)} models: {self.answered_rows} answered, "
                f"{self.failed_rows} failed, {money(self.cost)}>")
