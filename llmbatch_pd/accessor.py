"""``df.llm`` and ``s.llm``: validate, delegate to a Run, rewrap on the original index.

Accessors keep no state (pandas 3 builds a new one on every access).
"""

from __future__ import annotations

import asyncio
import functools
import warnings
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from . import options as opts
from .core import errors
from .core.budget import Ledger
from .core.numbers import money
from .core.outcome import raised_stop, row_warning, stop_note
from .core.params import check_params
from .core.prompts import Template
from .jobs import Job, tick
from .planning import estimate as plan
from .planning import pricing
from .planning.batch_gate import BatchGate, Party
from .providers.registry import batch_refusal, make_provider, parse_model
from .runs.chat import Run
from .runs.interrupt import CancelOnSigint
from .runs.run import RunReport, RunReports
from .runs.spec import RunSpec, check_mode
from .store import db as store
from .transport.loop_thread import on_loop, run_sync
from .ui import choose_display

CHUNK = 2048
DEFAULT_OUTPUT = "llm_output"
REPORT_ATTR = "llm_report"
_last: dict[str, Any] = {}


def last_result() -> pd.DataFrame | None:
    """The result of the last run in this process (a DataFrame; embed's vectors), also when
    it was interrupted."""
    return _last.get("result")


def last_report() -> RunReport | None:
    """The report of the last run in this process."""
    return _last.get("report")


def _column_map(df: pd.DataFrame, fields: tuple[str, ...]) -> dict[str, Any]:
    colmap: dict[str, Any] = {}
    for col in df.columns:
        colmap.setdefault(str(col), col)
    for name in fields:
        if list(map(str, df.columns)).count(name) > 1:
            raise errors.InputError(f"column {name!r} appears more than once; rename the duplicates first")
    return colmap


def _iter_rows(df: pd.DataFrame, fields: tuple[str, ...], colmap: dict[str, Any]) -> Iterator[dict]:
    """Row values in chunks, so no full copy of the columns is made."""
    columns = [df[colmap[f]] for f in fields]
    n = len(df)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        if not columns:
            for _ in range(start, stop):
                yield {}
            continue
        chunks = [c.iloc[start:stop].tolist() for c in columns]
        for values in zip(*chunks, strict=True):
            yield dict(zip(fields, values, strict=True))


def _spec(df: pd.DataFrame, template: str, *, model: str, system: str | None = None,
          temperature: float | None = None, max_tokens: int | None = None,
          base_url: str | None = None, api_key: str | None = None, concurrency: int = 64,
          rpm: float | None = None, tpm: float | None = None, max_retries: int = 6,
          timeout: float = 120.0, missing: str = "skip", budget: float | None = None,
          cache: bool | str | None = True, prices: dict | None = None,
          value_field: str | None = None, mode: str = "realtime",
          poll_interval: float = 30.0, schema: Any = None, schema_retries: int = 2,
          params: dict | None = None, need_key: bool = True) -> tuple[RunSpec, Any]:
    """Validate everything and build the run's spec and row source; nothing is sent.
    ``need_key=False`` (an estimate that sends nothing) accepts a missing API key."""
    check_mode(mode, poll_interval)
    parsed = Template.parse(template, value_field=value_field)
    parsed.check_columns(list(df.columns))
    colmap = _column_map(df, parsed.fields)
    ref = parse_model(model, base_url=base_url)
    provider = make_provider(ref, base_url=base_url, api_key=api_key, need_key=need_key)
    if mode == "batch" and not provider.supports_batch:
        raise errors.InputError(batch_refusal(ref))
    try:
        price = pricing.price_for(ref.provider, ref.model, prices)
    except ValueError as exc:
        raise errors.InputError(str(exc)) from None
    if budget is not None and price is None:
        raise errors.InputError(
            f"no price is known for {ref.full}, so it cannot run under budget=: pass "
            f"prices={{{ref.full!r}: (input_per_million, output_per_million)}}"
        )
    extra = check_params(params)
    bound = budget is not None and max_tokens is None
    if bound:
        max_tokens = plan.DEFAULT_MAX_OUTPUT  # a real bound for the worst case the budget reserves
    output_schema = None
    if schema is not None:
        from .core.schema import OutputSchema  # pydantic loads only when schema= is used

        output_schema = OutputSchema.from_user(schema)
        provider.structured(output_schema)  # a provider without structured output says so now
    if isinstance(schema_retries, bool) or not isinstance(schema_retries, int) or schema_retries < 0:
        raise errors.InputError(f"schema_retries= must be 0 or more, not {schema_retries!r}")
    spec = RunSpec(template=parsed, model=ref, provider=provider, system=system,
                   temperature=temperature, max_tokens=max_tokens, concurrency=concurrency,
                   rpm=rpm, tpm=tpm, max_retries=max_retries, timeout=timeout, missing=missing,
                   budget=budget, price=price,
                   context_window=pricing.context_window(ref.provider, ref.model),
                   cache_path=store.resolve(cache), mode=mode, poll_interval=float(poll_interval),
                   schema=output_schema, schema_retries=schema_retries, extra=extra,
                   refresh=isinstance(cache, str) and cache == store.REFRESH,
                   max_tokens_from_budget=bound)

    def rows(positions: list[int] | None = None):
        frame = df if positions is None else df.iloc[positions]
        return _iter_rows(frame, parsed.fields, colmap)

    return spec, rows


def _pilot_positions(n: int, size: int) -> list[int]:
    """Evenly spread rows, so a sorted frame still gives a representative pilot."""
    size = min(size, n)
    return sorted({int(i * n / size) for i in range(size)}) if size else []


class _Runnable:
    """Blocking and awaitable runs with a display and Ctrl+C handling, for one model or several.
    A run stopped by a fatal error (bad key, no quota, provider down) raises it, carrying the
    result; otherwise skipped and failed rows are told in one warning."""

    _warned = False

    def display(self, *, on_cancel=None, on_run=None, background: bool = False):
        raise NotImplementedError

    async def _execute(self) -> None:
        raise NotImplementedError

    def result(self) -> pd.DataFrame:
        raise NotImplementedError

    def progress_counts(self) -> tuple[int, int]:
        """(finished rows, rows), for the interrupted message."""
        raise NotImplementedError

    def stopped(self, result: Any) -> errors.ProviderError | None:
        """The fatal error that stopped the run, ready to raise (result attached), or None."""
        raise NotImplementedError

    def row_warning(self) -> str | None:
        raise NotImplementedError

    def finish(self, stacklevel: int = 3) -> Any:
        """The result, once the run is over: raised inside the fatal error that stopped it,
        else returned (after one warning about skipped and failed rows, if any)."""
        out = self.result()
        fatal = self.stopped(out)
        if fatal is not None:
            raise fatal
        message = None if self._warned else self.row_warning()
        if message:
            self._warned = True
            warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)
        return out

    def sync(self) -> pd.DataFrame:
        shown = self.display()
        try:
            run_sync(self._execute(), tick=shown.update if shown else None)
        except KeyboardInterrupt:
            raise self._interrupted(self.result()) from None
        finally:
            if shown:
                shown.close()
        return self.finish(stacklevel=3)

    async def run_async(self) -> pd.DataFrame:
        shown = self.display()
        ticker = asyncio.ensure_future(tick(shown)) if shown else None
        interrupted = CancelOnSigint(asyncio.current_task())
        try:
            await self._execute()
        except asyncio.CancelledError:
            if not interrupted.fired:
                raise
            raise self._interrupted(self.result()) from None
        finally:
            interrupted.restore()
            if ticker:
                ticker.cancel()
            if shown:
                shown.close()
        return self.finish(stacklevel=3)

    def _interrupted(self, partial: pd.DataFrame) -> errors.RunInterrupted:
        answered, rows = self.progress_counts()
        return errors.RunInterrupted(
            f"interrupted: {answered} of {rows} rows had finished and are "
            "kept (llmbatch_pd.last_result() gives them)",
            result=partial,
        )


class _Apply(_Runnable):
    """The shared body of apply/aapply for a DataFrame: validate, estimate, pilot, run.
    ``label`` (``model=[...]``) suffixes every column it makes with the model's name."""

    def __init__(self, df: pd.DataFrame, template: str, *, model: str, output: str = "llm_output",
                 progress: bool | str | None = None, usage: bool = False, pilot: int | None = None,
                 check_budget: bool = True, label: str | None = None, **options: Any) -> None:
        opts.check_chat(output, pilot, options)
        self.spec, self.rows = _spec(df, template, model=model, **options)
        self.df, self.output, self.progress, self.usage = df, output, progress, usage
        self.label = label
        self.column = f"{output}_{label}" if label else output
        if self.spec.schema is not None:
            taken = set(map(str, df.columns)) & {self._field_column(f) for f in self.spec.schema.fields}
            if taken:
                raise errors.InputError(
                    f"schema= fields {sorted(taken)} would overwrite columns of the same name; "
                    "pass output='...' to name them output_field instead")
        opts.check_new_columns(df.columns, self._new_columns(), output, self.spec.template.fields)
        self.pilot_size = pilot
        self.pilot_run: Run | None = None
        self.pilot_positions: list[int] = []  # the rows the pilot sends
        self.pilot_measured: plan.Pilot | None = None
        self.cancelled: str | None = None  # why cancel() was called
        self.check_budget = check_budget
        self.run = Run(self.spec, self.rows, len(df), find_repeats=True)
        self.run.keep_usage = usage
        # with a pilot, judge the budget on the pilot's figures (the ledger bounds the pilot).
        # The plan walks every row (render, key, token count, cache lookup) before anything is
        # sent: do it only when something needs it before the run (the budget, a display).
        needed = self.spec.budget is not None or progress is not False
        self._estimate = self._plan(check=not pilot) if needed else None

    @property
    def estimate(self) -> plan.Estimate:
        if self._estimate is None:  # asked for after all (df.llm.estimate, submit's panel)
            self._estimate = self._plan(check=False)
        return self._estimate

    @estimate.setter
    def estimate(self, value: plan.Estimate) -> None:
        self._estimate = value

    def _plan(self, pilot: plan.Pilot | None = None, check: bool = True) -> plan.Estimate:
        estimate = Run(self.spec, self.rows, len(self.df), find_repeats=True).plan(pilot)
        budget = self.spec.budget
        expected = estimate.cost_for(self.spec.mode)
        if not (check and self.check_budget):
            return estimate
        if budget is not None and expected is not None and expected > budget:
            raise errors.BudgetError(
                f"not started: the expected cost is above the budget of {money(budget)}.\n"
                f"{estimate.summary()}\nRaise budget=, lower max_tokens=, or use fewer rows."
            )
        opts.check_budget_fits_one(self.spec, estimate)
        return estimate

    async def _execute(self, ledger: Ledger | None = None) -> None:
        """The pilot (if asked), a fresh estimate from it, then the rest of the rows."""
        if ledger is None:  # also without a price: a provider may report each answer's cost
            ledger = Ledger(self.spec.budget, self.spec.cost)
        await self._prepare(ledger)
        await self._main(ledger)

    async def _prepare(self, ledger: Ledger | None) -> None:
        """The pilot, and the estimate it refines (checked against the budget)."""
        if self.pilot_size and len(self.df) and not self.cancelled:
            await self._pilot(ledger)
            self.estimate = self._plan(self.pilot_measured)
        self.run.report.estimate = self._estimate

    async def _main(self, ledger: Ledger | None) -> None:
        if self.cancelled and not self.run.stats.stop_reason:
            self.run.stats.stop_reason = self.cancelled
        if self.run.stats.stop_reason:
            self.run.close_unsent(self.run.stats.stop_reason)
            self._keep_pilot_failures()
            return
        await self.run.execute(ledger)

    def _keep_pilot_failures(self) -> None:
        """A run the pilot stopped: the rows the pilot sent and lost keep their own reason
        (the 404 that stopped it), not "not sent"."""
        pilot, run = self.pilot_run, self.run
        if pilot is None:
            return
        for j, i in enumerate(self.pilot_positions):
            own, now = pilot.errors[j], run.errors[i]
            if pilot.answers[j] is None and own and not pilot.unsent[j] \
                    and run.answers[i] is None and now and run.unsent[i]:
                run.errors[i], run.unsent[i] = own, False
                run.report.not_sent -= 1

    async def _pilot(self, ledger: Ledger | None) -> None:
        """Run a few evenly spread rows first; their answers are kept for the main run."""
        positions = self.pilot_positions = _pilot_positions(len(self.df), self.pilot_size)
        pilot_run = Run(self.spec, lambda: self.rows(positions), len(positions))
        pilot_run.keep_replies = True
        # known before it sends: cancel() stops it (its engine exists once execute() yields)
        self.pilot_run = pilot_run
        await pilot_run.execute(ledger)
        if pilot_run.engine is not None:  # its first answers' verdict stops what follows
            pilot_run.engine.conclude()
        self.spec.prefill = pilot_run.replies
        stats = self.run.stats
        if pilot_run.stats.stop_reason:  # a bad key or a dead provider: no point going on
            stats.stop_reason = pilot_run.stats.stop_reason
        for name in ("sent", "input_tokens", "output_tokens", "cost"):
            setattr(stats, name, getattr(pilot_run.stats, name))
        stats.by_kind.update(pilot_run.stats.by_kind)
        self.pilot_measured = pilot_run.as_pilot()

    def cancel(self, reason: str = "cancelled from the panel") -> None:
        """Stop sending, the pilot too if it is going; from any thread, returning once the
        loop has applied it (nothing is sent after this returns). A pilot or run not yet
        started never starts (``_prepare``, ``_main``)."""
        self.cancelled = reason
        on_loop(self._cancel_runs, reason)

    def _cancel_runs(self, reason: str) -> None:
        if self.pilot_run is not None and self.pilot_measured is None:  # the pilot is going
            self.pilot_run.cancel(reason)
        self.run.cancel(reason)

    def display(self, *, on_cancel=None, on_run=None, background: bool = False):
        """The panel in a notebook, a tqdm bar elsewhere, or nothing (``progress=False``).
        ``on_cancel`` replaces what Cancel does; ``on_run`` adds a Run button (``confirm=True``)."""
        shown = choose_display(self.run.report, self._estimate, self.spec.budget, self.progress,
                               on_cancel=on_cancel or self.cancel, on_run=on_run, background=background)
        self.run.warnings_shown_elsewhere = type(shown).__name__ == "Panel"
        return shown

    def _new_columns(self) -> list[str]:
        """The names ``columns()`` makes (the schema's fields are checked on their own)."""
        col = self.column
        names = [col] if self.spec.schema is None else []
        names.append(f"{col}_error")
        if self.usage:
            names += [f"{col}_input_tokens", f"{col}_output_tokens", f"{col}_cost"]
        return names

    def columns(self) -> dict[str, Any]:
        """The new columns, by name: the answer (or one per schema field), the error, usage."""
        run, col = self.run, self.column
        cols: dict[str, Any] = {}
        if self.spec.schema is None:
            cols[col] = pd.array(run.answers, dtype="string")
        else:
            from .frames import field_columns

            for name, column in field_columns(self.spec.schema, run.answers, run.invalidate).items():
                cols[self._field_column(name)] = column
        cols[f"{col}_error"] = pd.array(run.errors, dtype="string")
        if self.usage:
            paid = run.usages  # None where the row got no answer
            priced = self.spec.price is not None
            cols[f"{col}_input_tokens"] = pd.array(
                [u.input_tokens if u is not None else None for u in paid], dtype="Int64")
            cols[f"{col}_output_tokens"] = pd.array(
                [u.output_tokens if u is not None else None for u in paid], dtype="Int64")
            cols[f"{col}_cost"] = pd.array(
                [self.spec.cost(u) if u is not None and (priced or u.cost is not None) else None
                 for u in paid], dtype="Float64")
        run.report.estimate = run.report.estimate or self._estimate
        return cols

    def result(self) -> pd.DataFrame:
        return _assemble(self.df, self.columns(), self.run.report)

    def progress_counts(self) -> tuple[int, int]:
        return self.run.report.answered_rows, self.run.report.rows

    @property
    def stop_error(self) -> errors.ProviderError | None:
        """Why the run (or its pilot) stopped early, or None."""
        pilot = self.pilot_run.stop_error if self.pilot_run is not None else None
        return self.run.stop_error or pilot

    def stopped(self, result: Any) -> errors.ProviderError | None:
        err = self.stop_error
        if err is None or not err.fatal:
            return None
        return err.after_run(stop_note(self.report), result, self.report)

    def row_warning(self) -> str | None:
        return row_warning(self.run.errors, self.spec.template.fields, answers=self.run.answers,
                           where=f" (the reasons are in the column {self.column + '_error'!r})")

    @property
    def report(self) -> RunReport:
        return self.run.report

    def close_unstarted(self, reason: str) -> None:
        """A job cancelled before it started: every row says so, nothing was sent."""
        stats = self.run.stats
        stats.stop_reason = stats.stop_reason or f"{reason} before the run started"
        self.run.close_unsent(f"{reason} before the run started")

    def _field_column(self, name: str) -> str:
        """schema= fields land under their own names, or ``{output}_{field}`` with output=."""
        base = name if self.output == DEFAULT_OUTPUT else f"{self.output}_{name}"
        return f"{base}_{self.label}" if self.label else base


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


async def _gated(a: _Apply, ledger: Ledger, party: Party | None) -> None:
    """One model's run, holding its place at the batch gate until it passes it or ends."""
    a.run.batch_gate = party
    try:
        await a._main(ledger)
    except BaseException:
        if party is not None:
            party.leave(failed=True)
        raise
    finally:
        if party is not None:
            party.leave()


class _Group(_Runnable):
    """``model=[...]``: the same template on every model, side by side. The runs go at once
    (each provider has its own rate limits), under one budget, in one display; each model's
    columns carry its name as a suffix (``sentiment_gpt-4.1-mini``)."""

    def __init__(self, df: pd.DataFrame, template: str, *, model: list, output: str = DEFAULT_OUTPUT,
                 progress: bool | str | None = None, **options: Any) -> None:
        names = _model_list(model)
        self.df, self.progress, self.budget = df, progress, options.get("budget")
        self.applies = [_Apply(df, template, model=name, output=output, progress=progress,
                               check_budget=False, label=label, **options)
                        for name, label in zip(names, _labels(names), strict=True)]
        self.reports = RunReports(a.run.report for a in self.applies)
        if not options.get("pilot"):
            self._check_budget()

    def _check_budget(self) -> None:
        """One budget for all the models: refused before anything is sent when the expected
        costs add up to more."""
        if self.budget is None:
            return
        costs = [a.estimate.cost_for(a.spec.mode) for a in self.applies]
        if all(c is not None for c in costs) and sum(costs) > self.budget:
            lines = "\n".join(f"  {a.spec.model.full}: {money(c)}" for a, c in zip(self.applies, costs, strict=True))
            raise errors.BudgetError(
                f"not started: the expected cost of {money(sum(costs))} for {len(costs)} models is above "
                f"the budget of {money(self.budget)}:\n{lines}\nRaise budget=, drop a model, or use fewer rows.")
        for a in self.applies:
            opts.check_budget_fits_one(a.spec, a.estimate)

    @property
    def report(self) -> RunReports:
        return self.reports

    @property
    def estimate(self) -> list[plan.Estimate]:
        return [a.estimate for a in self.applies]

    async def _execute(self) -> None:
        """Every model at once; the first error cancels the others, so nothing is sent (or
        paid for) after the call raised. In batch mode no model submits a job before the
        worst cases of all of them are reserved together in the shared budget."""
        first = self.applies[0]
        root = Ledger(self.budget, first.spec.cost)
        ledgers = [root.share(a.spec.cost) for a in self.applies]
        await _together(a._prepare(ledger) for a, ledger in zip(self.applies, ledgers, strict=True))
        if any(a.pilot_size for a in self.applies):
            self._check_budget()  # on the pilots' figures
        gate = BatchGate() if sum(a.spec.mode == "batch" for a in self.applies) > 1 else None
        parties = [gate.party() if gate is not None and a.spec.mode == "batch" else None
                   for a in self.applies]  # every place taken before any model starts
        await _together(_gated(a, ledger, party)
                        for a, ledger, party in zip(self.applies, ledgers, parties, strict=True))

    def cancel(self, reason: str = "cancelled from the panel") -> None:
        for a in self.applies:
            a.cancel(reason)

    def close_unstarted(self, reason: str) -> None:
        for a in self.applies:
            a.close_unstarted(reason)

    def display(self, *, on_cancel=None, on_run=None, background: bool = False):
        estimates = [a._estimate for a in self.applies]
        shown = choose_display(list(self.reports), estimates, self.budget, self.progress,
                               on_cancel=on_cancel or self.cancel, on_run=on_run, background=background)
        for a in self.applies:
            a.run.warnings_shown_elsewhere = type(shown).__name__ == "GroupPanel"  # the tqdm bar shows none
        return shown

    def result(self) -> pd.DataFrame:
        """The models' columns interleaved, so each answer sits beside the other models'
        (sentiment_a, sentiment_b, ..., then the errors): every model makes the same columns."""
        per_model = [list(a.columns().items()) for a in self.applies]
        columns = dict(item for same_kind in zip(*per_model, strict=True) for item in same_kind)
        return _assemble(self.df, columns, self.reports)

    def progress_counts(self) -> tuple[int, int]:
        return self.reports.answered_rows, self.reports.rows

    def stopped(self, result: Any) -> errors.ProviderError | None:
        """The first model's fatal stop (raised once every model has finished), naming it."""
        for a in self.applies:
            err = a.stop_error
            if err is not None and err.fatal:
                others = [b.spec.model.full for b in self.applies if b is not a]
                note = (f"{a.spec.model.full}: {stop_note(a.report)} The other models "
                        f"({', '.join(others)}) ran to the end; .report has every model's figures.")
                return err.after_run(note, result, self.reports)
        return None

    def row_warning(self) -> str | None:
        lines = [f"{a.spec.model.full}: {m}" for a in self.applies if (m := a.row_warning())]
        return "\n".join(lines) or None


def _model_list(model: Any) -> list[str]:
    names = list(model)
    if not names:
        raise errors.InputError("model= needs at least one model name")
    if not all(isinstance(n, str) for n in names):
        raise errors.InputError(f"model= must be a name or a list of names, not {model!r}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise errors.InputError(f"model= names {repeated} more than once")
    return names


def _labels(names: list[str]) -> list[str]:
    """Column suffixes: the model's own name (gpt-4.1-mini), or provider_model where two
    providers serve the same name."""
    short = [n.strip().split("/", 1)[-1] for n in names]
    return [s if short.count(s) == 1 else n.strip().replace("/", "_") for s, n in zip(short, names, strict=True)]


def _runner(df: pd.DataFrame, template: str, model: Any, output: str, options: dict,
            call: str = "apply") -> _Runnable:
    """One model, or several side by side (the option names checked first)."""
    _check_names(options, call)
    if isinstance(model, (list, tuple)):
        return _Group(df, template, model=list(model), output=output, **options)
    return _Apply(df, template, model=model, output=output, **options)


@functools.cache
def _options() -> dict[str, tuple[str, ...]]:
    """What each call takes, read from the signatures that take it (embed's on first use)."""
    from .runs.embed_spec import build_spec

    chat = opts.keywords(_spec, _Apply.__init__, DataFrameLLM.estimate)
    return {"apply": chat, "aapply": chat, "estimate": chat,
            "submit": opts.keywords(_spec, _Apply.__init__, DataFrameLLM.submit),
            "embed": opts.keywords(build_spec, DataFrameLLM.embed)}


def _check_names(options: dict[str, Any], call: str) -> None:
    known = _options()
    opts.check_names(options, known[call], call,
                     {other: names for other, names in known.items() if other in ("submit", "embed")})


def _assemble(df: pd.DataFrame, columns: dict[str, Any], report: Any) -> pd.DataFrame:
    """A copy of the frame with the new columns, the report in its attrs, kept as the last."""
    out = df.copy()
    for name, column in columns.items():
        out[name] = column
    out.attrs[REPORT_ATTR] = report
    _last["result"], _last["report"] = out, report
    return out


def _estimate(df: pd.DataFrame, template: str, model: str | list[str], pilot: int | None,
              options: dict[str, Any]) -> pd.DataFrame:
    _check_names(options, "estimate")
    models = [model] if isinstance(model, str) else list(model)
    if not models:
        raise errors.InputError("model= needs at least one model name")
    options.pop("progress", None)
    rows = []
    for name in models:
        # without a pilot nothing is sent, so no API key is needed
        job = _Apply(df, template, model=name, progress=False, pilot=pilot, check_budget=False,
                     need_key=bool(pilot), **options)
        if pilot and len(df):
            if job.spec.cache_path is None:
                warnings.warn("pilot= with cache=False: the pilot's answers cannot be kept", stacklevel=3)
            run_sync(job._pilot(None))
            stop = job.pilot_run.stop_error
            if stop is not None and stop.fatal:
                raise stop.after_run(f"{name}: the pilot stopped, so nothing was estimated.",
                                     None, job.pilot_run.report)
            job.estimate = job._plan(job.pilot_measured)
        row = job.estimate.as_row()
        budget = job.spec.budget
        expected = job.estimate.cost_for(job.spec.mode)
        row["within_budget"] = None if budget is None or expected is None else expected <= budget
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


EMBED_ERRORS_ATTR = "llm_errors"


class _Embed(_Runnable):
    """``embed``: validate, render, read the cache, pack and check the budget at once (nothing
    is sent; at batch prices with ``mode="batch"``), then send the packs (or submit them as
    batch jobs); the vectors come back on the frame's index."""

    def __init__(self, df: pd.DataFrame, template: str, *, model: str, output: str,
                 as_array: bool, value_field: str | None, progress: Any, options: dict[str, Any]) -> None:
        from .runs.embed import EmbedRun
        from .runs.embed_spec import build_spec

        _check_names(options, "embed")
        if not isinstance(output, str) or not output:
            raise errors.InputError("output= must be a non-empty name")
        spec = build_spec(template, list(df.columns), model=model, value_field=value_field, **options)
        fields = spec.template.fields
        colmap = _column_map(df, fields)
        self.run = EmbedRun(spec, lambda: _iter_rows(df, fields, colmap), len(df))
        self.run.check_budget()
        self.index, self.output, self.as_array, self.progress = df.index, output, as_array, progress

    def display(self, *, on_cancel=None, on_run=None, background: bool = False):
        run = self.run
        shown = choose_display(run.report, run.estimate, run.spec.budget, self.progress,
                               on_cancel=on_cancel or self.cancel, on_run=on_run, background=background)
        run.warnings_shown_elsewhere = type(shown).__name__ == "Panel"
        return shown

    def cancel(self, reason: str = "cancelled from the panel") -> None:
        on_loop(self.run.cancel, reason)

    async def _execute(self) -> None:
        await self.run.execute()

    def progress_counts(self) -> tuple[int, int]:
        return self.run.report.answered_rows, self.run.report.rows

    def stopped(self, result: Any) -> errors.ProviderError | None:
        return raised_stop((self.run.engine, self.run.batcher), result, self.run.report)

    def row_warning(self) -> str | None:
        from .runs.embed import failure_warning

        where = "their rows are NaN" if self.as_array else f"see .attrs[{EMBED_ERRORS_ATTR!r}]"
        return failure_warning(self.run.row_errors(), self.run.spec.template.fields, f" ({where})")

    def result(self):
        """A Series of float32 vectors on the index (None where a row failed, the reasons in
        ``attrs["llm_errors"]``), or with ``as_array`` an (n, dim) float32 array, NaN rows failed."""
        run, index = self.run, self.index
        errs = run.row_errors()
        matrix = run.matrix()
        run.report.estimate = run.report.estimate or run.estimate
        _last["report"] = run.report
        if self.as_array:
            _last["result"] = matrix
            return matrix
        cells = np.empty(len(index), dtype=object)  # each cell one row of the matrix (a view)
        for i, ok in enumerate(run.has_vector()):
            if ok:
                cells[i] = matrix[i]
        out = pd.Series(cells, index=index, name=self.output, dtype=object)
        # a plain dict, not a Series: pandas compares attrs on concat, and Series refuse that
        keys = index if index.is_unique else range(len(index))
        out.attrs[EMBED_ERRORS_ATTR] = {k: e for k, e in zip(keys, errs, strict=True) if e is not None}
        out.attrs[REPORT_ATTR] = run.report
        _last["result"] = out
        return out


_COPY_ON_WRITE = int(pd.__version__.split(".")[0]) >= 3 or pd.get_option("mode.copy_on_write") is True


def _snapshot(df: pd.DataFrame) -> pd.DataFrame:
    """The frame as it is now, for a run that reads it later on the loop thread. Under
    copy-on-write (pandas 3) a shallow copy is free and later edits of the caller's frame
    do not reach it; pandas 2 without it needs a real copy."""
    return df.copy(deep=not _COPY_ON_WRITE)


def _series_frame(s: pd.Series) -> pd.DataFrame:
    """The cells as the one column ``{}`` names, whatever the Series is called."""
    return s.to_frame(name="text")


@pd.api.extensions.register_dataframe_accessor("llm")
class DataFrameLLM:
    """``df.llm.apply(template, model=...)``: one LLM answer per row."""

    def __init__(self, df: pd.DataFrame) -> None:
        if not isinstance(df, pd.DataFrame):
            raise AttributeError("df.llm works on DataFrames")
        self._df = df

    @property
    def report(self) -> RunReport | None:
        """The report of the run that made this frame (kept in ``df.attrs``)."""
        return self._df.attrs.get(REPORT_ATTR)

    def apply(self, template: str, *, model: str | list[str], output: str = "llm_output",
              **options: Any) -> pd.DataFrame:
        """Render ``template`` per row, ask ``model``, and return a new DataFrame on the same
        index with the answers in ``output`` and each failed row's reason in
        ``f"{output}_error"``. ``schema=`` gives one typed column per field instead;
        ``model=[...]`` runs every model side by side (columns suffixed with the model's
        name). See the README for every option."""
        return _runner(self._df, template, model, output, options).sync()

    async def aapply(self, template: str, *, model: str | list[str], output: str = "llm_output",
                     **options: Any) -> pd.DataFrame:
        """``apply`` for code that already runs an event loop."""
        return await _runner(self._df, template, model, output, options, "aapply").run_async()

    def submit(self, template: str, *, model: str | list[str], output: str = "llm_output",
               confirm: bool = False, **options: Any) -> Job:
        """Start ``apply`` in the background and return a :class:`Job` at once.

        With ``confirm=True`` nothing is sent until ``job.start()`` (or the panel's Run button).
        """
        frame = _snapshot(self._df)  # other cells may change the frame while the job runs
        return Job(_runner(frame, template, model, output, options, "submit"), start=not confirm)

    def estimate(self, template: str, *, model: str | list[str], pilot: int | None = None,
                 **options: Any) -> pd.DataFrame:
        """What ``apply`` would send and cost, one row per model, before anything is sent.

        ``pilot=N`` first runs N evenly spread rows for real and extrapolates from their
        usage; their answers go to the cache, so the ``apply`` that follows does not pay twice.
        """
        return _estimate(self._df, template, model, pilot, options)

    def embed(self, template: str, *, model: str, output: str = "embedding", as_array: bool = False,
              progress: Any = None, **options: Any) -> pd.Series | np.ndarray:
        """One embedding per row of the rendered ``template``: a Series of float32 vectors on
        the same index (None where a row failed; the reasons in ``.attrs["llm_errors"]``), or
        with ``as_array=True`` an (n_rows, dim) float32 array whose failed rows are NaN.

        Many rows go in each request (up to the API's limits); each text is cached on its
        own, so a re-run sends only new texts. ``mode="batch"`` sends them as OpenAI batch
        jobs instead: half price, answered within 24 hours, collected by the same call run
        again if this one is interrupted. Options: ``dimensions=``, ``budget=``, ``cache=``,
        ``missing=``, ``concurrency=``, ``rpm=``/``tpm=``, ``timeout=``, ``max_retries=``,
        ``base_url=``, ``api_key=``, ``prices=``, ``mode=``, ``poll_interval=``."""
        return _Embed(self._df, template, model=model, output=output, as_array=as_array,
                      value_field=None, progress=progress, options=options).sync()

    async def aembed(self, template: str, *, model: str, output: str = "embedding",
                     as_array: bool = False, progress: Any = None, **options: Any) -> pd.Series | np.ndarray:
        """``embed`` for code that already runs an event loop."""
        return await _Embed(self._df, template, model=model, output=output, as_array=as_array,
                            value_field=None, progress=progress, options=options).run_async()


@pd.api.extensions.register_series_accessor("llm")
class SeriesLLM:
    """``s.llm.apply("Translate: {}", model=...)``: ``{}`` or ``{value}`` is the cell."""

    def __init__(self, series: pd.Series) -> None:
        if not isinstance(series, pd.Series):
            raise AttributeError("s.llm works on Series")
        self._s = series

    def _frame(self) -> pd.DataFrame:
        name = self._s.name if self._s.name is not None else "value"
        return self._s.to_frame(name=name)

    def _options(self, options: dict) -> dict:
        return {**options, "value_field": str(self._frame().columns[0])}

    def apply(self, template: str, *, model: str | list[str], output: str = "llm_output",
              **options: Any) -> pd.DataFrame:
        return _runner(self._frame(), template, model, output, self._options(options)).sync()

    async def aapply(self, template: str, *, model: str | list[str], output: str = "llm_output",
                     **options: Any) -> pd.DataFrame:
        return await _runner(self._frame(), template, model, output, self._options(options),
                             "aapply").run_async()

    def estimate(self, template: str, *, model: str | list[str], pilot: int | None = None,
                 **options: Any) -> pd.DataFrame:
        return _estimate(self._frame(), template, model, pilot, self._options(options))

    def embed(self, *, model: str, output: str = "embedding", as_array: bool = False,
              progress: Any = None, **options: Any) -> pd.Series | np.ndarray:
        """One embedding per cell (the cells are the texts); see ``DataFrame.llm.embed``."""
        return _Embed(_series_frame(self._s), "{}", model=model, output=output, as_array=as_array,
                      value_field="text", progress=progress, options=options).sync()

    async def aembed(self, *, model: str, output: str = "embedding", as_array: bool = False,
                     progress: Any = None, **options: Any) -> pd.Series | np.ndarray:
        """``embed`` for code that already runs an event loop."""
        return await _Embed(_series_frame(self._s), "{}", model=model, output=output, as_array=as_array,
                            value_field="text", progress=progress, options=options).run_async()


__all__ = ["DataFrameLLM", "Job", "SeriesLLM", "RunReport", "last_report", "last_result"]
