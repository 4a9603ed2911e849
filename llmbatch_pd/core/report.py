"""What a run did, as data: ``RunReport`` (one model) and ``RunReports`` (one per model).

A report is written by its run (``runs/``) as rows finish and read by every display (``ui/``).
It knows nothing of how it is shown: its figures live in ``core.figures`` and its renderings
(text, HTML, Markdown) in ``llmbatch_pd.ui``. So the data flows one way, runs -> core <- ui,
and no layer below the UI imports it.

A report still shows itself (``str(report)``, ``report.summary()``, ``_repr_html_`` in a
notebook, ``to_markdown()``): it asks the renderers registered here. ``llmbatch_pd.ui``
registers them when it is imported (``register_renderers``), and importing any part of the
package runs ``llmbatch_pd/__init__.py`` first, which imports the accessor and with it the UI, so
the renderers are always in place before a report exists. Registration is the one way the
core reaches the UI; nothing here imports it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .accounting import Accounting, Projection, accounting, combined, not_sent_kind, projection
from .numbers import money
from .stats import EngineStats

Renderer = Callable[..., str]
# what each renderer is given: a RunReport (report_*) or a list of them (reports_*)
RENDERINGS = ("report_text", "report_html", "report_markdown", "reports_text", "reports_html", "reports_markdown")
_renderers: dict[str, Renderer] = {}


def register_renderers(**renderers: Renderer) -> None:
    """Install the functions that render reports, by the names in ``RENDERINGS``; called by
    ``llmbatch_pd.ui`` when it is imported (a later call replaces earlier ones)."""
    unknown = sorted(set(renderers) - set(RENDERINGS))
    if unknown:
        raise TypeError(f"unknown renderings {unknown}; known: {list(RENDERINGS)}")
    _renderers.update(renderers)


def render(name: str, *args: Any) -> str:
    """``name``'s rendering of ``args`` (a report, or a list of reports)."""
    try:
        renderer = _renderers[name]
    except KeyError:
        raise RuntimeError(f"no {name!r} renderer registered: llmbatch_pd.ui registers them when "
                           "the package is imported") from None
    return renderer(*args)


@dataclass(repr=False)
class RunReport:
    """What happened, for people: counts, tokens, dollars, time."""

    model: str
    rows: int = 0
    requests: int = 0  # unique requests of the run (after de-duplication), cached and prefilled ones included
    duplicates: int = 0
    skipped: int = 0
    cached: int = 0
    prefilled: int = 0
    too_long: int = 0
    truncated: int = 0  # of answered_rows: cut at max_tokens (text kept, flagged in the error column)
    answered_rows: int = 0
    failed_rows: int = 0
    not_sent: int = 0  # of failed_rows: closed unsent because the run stopped first (cancel, budget)
    # the parts of failed_rows by reason (``accounting()`` reads them): sent and failed, by
    # error kind; not sent, by why (core.accounting.NOT_SENT_KINDS)
    failed_by: Counter = field(default_factory=Counter)
    not_sent_by: Counter = field(default_factory=Counter)
    stop_kind: str | None = None  # the error kind of the run's stop, once it stopped
    unsent_requests: int = 0  # requests closed without being sent (the stop came first)
    cut_requests: int = 0  # requests on their way when the run was interrupted (never heard back)
    packed: Any = None  # pack=: the run in rows (core.accounting.PackedRows), for the projection
    saved_by_cache: float = 0.0
    saved_by_dedup: float = 0.0
    saved_by_prompt_cache: float = 0.0  # dollars the provider's prompt cache took off the answers paid for
    budget: float | None = None
    estimate: Any = None  # the planning.estimate.Estimate made before the run (refined after a pilot)
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

    def count_unanswered(self, rows: int, kind: str | None, unsent: bool) -> None:
        """``rows`` rows end without an answer: ``kind`` is the error's kind (None: not
        known, ``accounting`` files it under "other" or the run's stop); ``unsent``: never sent."""
        self.failed_rows += rows
        if unsent:
            self.not_sent += rows
            if kind is not None:
                self.not_sent_by[not_sent_kind(kind)] += rows
        elif kind is not None:
            self.failed_by[kind] += rows

    def accounting(self) -> Accounting:
        """Where every row went: answered, failed by reason, skipped, not sent (and pending
        while the run goes); the requests to send, cached, duplicates and retries."""
        return accounting(self)

    def projection(self, estimate: Any = None, budget: float | None = None) -> Projection | None:
        """Projected total cost at the current cost per answered request, against the
        estimate and the budget; None before the first answered request."""
        return projection(self, estimate, budget)

    def summary(self) -> str:
        """Plain text for scripts and logs: the same figures the notebook summary shows."""
        return render("report_text", self)

    __str__ = summary

    def _repr_html_(self) -> str:
        return render("report_html", self)

    def to_markdown(self) -> str:
        return render("report_markdown", self)


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

    def accounting(self) -> Accounting:
        """Every model's accounting added up (each model's is ``reports[i].accounting()``)."""
        return combined([r.accounting() for r in self])

    def summary(self) -> str:
        return render("reports_text", list(self))

    __str__ = summary

    def _repr_html_(self) -> str:
        return render("reports_html", list(self))

    def to_markdown(self) -> str:
        return render("reports_markdown", list(self))

    def __repr__(self) -> str:
        return (f"<RunReports {len(self)} models: {self.answered_rows} answered, "
                f"{self.failed_rows} failed, {money(self.cost)}>")


__all__ = ["RENDERINGS", "RunReport", "RunReports", "register_renderers", "render"]
