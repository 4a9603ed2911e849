"""What one ``apply`` call sends, without pandas: a model's run with its pilot first
(``pilot=N``), and several models' runs side by side (``model=[...]``) under one budget and
one batch gate. The accessor adds the frame (rows in, columns out) and the display."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import replace
from typing import Any

from ..core import errors
from ..core.budget import Ledger
from ..core.numbers import money
from ..core.report import RunReport
from ..planning import estimate as plan
from ..planning.batch_gate import BatchGate, Party
from ..planning.pilot import Agreement, agreement
from ..transport.loop_thread import on_loop, run_sync
from .chat import Run
from .pack import PackedRun, make_run
from .pilot import Pilot
from .spec import RunSpec

BudgetCheck = Callable[[RunSpec, plan.Estimate], None]


class ModelRun:
    """One model's run of an ``apply``: the estimate (checked by ``check`` before anything is
    sent, on the pilot's figures once it has run), the pilot, then the rest of the rows."""

    def __init__(self, spec: RunSpec, read_rows: Any, n: int, *, pilot: int | None, usage: bool,
                 check: BudgetCheck | None, plan_now: bool) -> None:
        self.spec, self.read_rows, self.n, self.check = spec, read_rows, n, check
        self.pilot_size = pilot
        self.pilot = Pilot(spec, read_rows, n, pilot) if pilot else None
        self.cancelled: str | None = None  # why cancel() was called
        self.agreement: Agreement | None = None  # estimate(pilot=N, pack=k): packed vs one by one
        self.comparison: RunReport | None = None  # that comparison's run of the pilot's rows one by one
        self.run = make_run(spec, read_rows, n, find_repeats=True)
        self.run.keep_usage = usage
        # with a pilot, judge the budget on the pilot's figures (the ledger bounds the pilot).
        # The plan walks every row (render, key, token count, cache lookup) before anything is
        # sent: do it only when something needs it before the run (the budget, a display).
        self._estimate = self._plan(check=not pilot) if plan_now else None

    @property
    def estimate(self) -> plan.Estimate:
        if self._estimate is None:  # asked for after all (df.llm.estimate, submit's panel)
            self._estimate = self._plan(check=False)
        return self._estimate

    @estimate.setter
    def estimate(self, value: plan.Estimate) -> None:
        self._estimate = value

    def _plan(self, pilot: plan.Pilot | None = None, check: bool = True) -> plan.Estimate:
        estimate = make_run(self.spec, self.read_rows, self.n, find_repeats=True).plan(pilot)
        if check and self.check is not None:
            self.check(self.spec, estimate)
        return estimate

    def estimate_with_pilot(self, name: str) -> plan.Estimate:
        """``estimate(pilot=N)``: run the pilot now (blocking) and estimate from its figures;
        a pilot a fatal error stopped raises it."""
        assert self.pilot is not None
        ledger = Ledger(self.spec.budget, self.spec.cost)  # the pilot and the comparison share budget=
        run_sync(self.pilot.execute(ledger, self.run))
        stop = self.pilot.stop_error
        if stop is not None and stop.fatal:
            raise stop.after_run(f"{name}: the pilot stopped, so nothing was estimated.",
                                 None, self.pilot.run.report)
        self.estimate = self._plan(self.pilot.measured)
        if isinstance(self.pilot.run, PackedRun):
            self.agreement = self._compare_packing(self.pilot.run, ledger)
            self.estimate.pack_agreement = self.agreement.rate
            assert self.comparison is not None
            self.estimate.output_basis += (f"; {self.agreement.summary()}; the pilot spent "
                                           f"{money(self.pilot.run.report.cost)} packed and "
                                           f"{money(self.comparison.cost)} one by one")
        return self.estimate

    def _compare_packing(self, packed: PackedRun, ledger: Ledger) -> Agreement:
        """``estimate(pilot=N, pack=k)``: the pilot's rows asked again one by one (not from the
        cache; their answers replace the packed ones there), and the two ways compared; under
        the pilot's ``ledger`` (one budget for both). Its report is ``self.comparison``."""
        assert self.pilot is not None
        chosen = self.pilot.positions
        spec = replace(self.spec, pack=None, refresh=True, prefill={}, repeats=None)
        single = Run(spec, lambda: self.read_rows(chosen), len(chosen))
        run_sync(single.execute(ledger))
        self.comparison = single.report
        schema = self.spec.schema

        def values(answers: list[str | None]) -> list:
            if schema is None:
                return answers
            return [None if a is None else _parsed(schema, a) for a in answers]

        # a budget may stop the comparison part-way: the packed cost of as many rows as it answered
        answered = [sum(a is not None for a in run.answers) for run in (packed, single)]
        packed_cost = packed.stats.cost * min(1.0, answered[1] / answered[0]) if answered[0] else 0.0
        return agreement(values(packed.answers), values(single.answers), packed_cost,
                         single.stats.cost, schema.fields if schema is not None else ())

    async def _execute(self, ledger: Ledger | None = None) -> None:
        """The pilot (if asked), a fresh estimate from it, then the rest of the rows."""
        if ledger is None:  # also without a price: a provider may report each answer's cost
            ledger = Ledger(self.spec.budget, self.spec.cost)
        await self._prepare(ledger)
        await self._main(ledger)

    async def _prepare(self, ledger: Ledger | None) -> None:
        """The pilot, and the estimate it refines (checked against the budget)."""
        if self.pilot is not None and self.n and not self.cancelled:
            await self.pilot.execute(ledger, self.run)
            self.estimate = self._plan(self.pilot.measured)
        self.run.report.estimate = self._estimate

    async def _main(self, ledger: Ledger | None) -> None:
        if self.cancelled and not self.run.stats.stop_reason:
            self.run.stats.stop_reason = self.cancelled
        if self.run.stats.stop_reason:
            self.run.close_unsent(self.run.stats.stop_reason)
            if self.pilot is not None:
                self.pilot.keep_failures(self.run)
            return
        await self.run.execute(ledger)

    def cancel(self, reason: str = "cancelled from the panel") -> None:
        """Stop sending, the pilot too if it is going; from any thread, returning once the
        loop has applied it (nothing is sent after this returns). A pilot or run not yet
        started never starts (``_prepare``, ``_main``)."""
        self.cancelled = reason
        on_loop(self._cancel_runs, reason)

    def _cancel_runs(self, reason: str) -> None:
        if self.pilot is not None:
            self.pilot.cancel(reason)
        self.run.cancel(reason)

    @property
    def stop_error(self) -> errors.ProviderError | None:
        """Why the run (or its pilot) stopped early, or None."""
        pilot = self.pilot.stop_error if self.pilot is not None else None
        return self.run.stop_error or pilot

    @property
    def report(self) -> RunReport:
        return self.run.report

    def close_unstarted(self, reason: str) -> None:
        """A job cancelled before it started: every row says so, nothing was sent."""
        stats = self.run.stats
        stats.stop_reason = stats.stop_reason or f"{reason} before the run started"
        self.run.close_unsent(f"{reason} before the run started")


async def side_by_side(models: Sequence[ModelRun], budget: float | None,
                       recheck: Callable[[], None]) -> None:
    """Every model at once; the first error cancels the others, so nothing is sent (or
    paid for) after the call raised. ``recheck`` judges the shared budget again on the
    pilots' figures. In batch mode no model submits a job before the worst cases of all of
    them are reserved together in the shared budget."""
    root = Ledger(budget, models[0].spec.cost)
    ledgers = [root.share(m.spec.cost) for m in models]
    await _together(m._prepare(ledger) for m, ledger in zip(models, ledgers, strict=True))
    if any(m.pilot_size for m in models):
        recheck()  # on the pilots' figures
    gate = BatchGate() if sum(m.spec.mode == "batch" for m in models) > 1 else None
    parties = [gate.party() if gate is not None and m.spec.mode == "batch" else None
               for m in models]  # every place taken before any model starts
    await _together(_gated(m, ledger, party)
                    for m, ledger, party in zip(models, ledgers, parties, strict=True))


async def _together(coros: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run ``coros`` at once; the first error cancels the rest and is raised (as itself)."""
    try:
        async with asyncio.TaskGroup() as group:
            for coro in coros:
                group.create_task(coro)
    except BaseExceptionGroup as raised:
        first = raised.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


async def _gated(m: ModelRun, ledger: Ledger, party: Party | None) -> None:
    """One model's run, holding its place at the batch gate until it passes it or ends."""
    m.run.batch_gate = party
    try:
        await m._main(ledger)
    except BaseException:
        if party is not None:
            party.leave(failed=True)
        raise
    finally:
        if party is not None:
            party.leave()


def _parsed(schema, text: str) -> dict | None:
    try:
        return schema.check(text)
    except errors.InvalidOutput:
        return None
