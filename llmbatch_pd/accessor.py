"""``df.llm`` and ``s.llm``: validate, delegate to a Run, rewrap on the original index.

Accessors keep no state (pandas 3 builds a new one on every access).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pandas as pd

from . import errors, plan, pricing, store
from .budget import Ledger
from .loop_thread import Call, engine_loop, run_sync
from .models import make_provider, parse_model
from .prompts import MISSING_POLICIES, Template
from .run import Run, RunReport, RunSpec
from .ui import choose_display

CHUNK = 2048
MODES = ("realtime", "batch")
REPORT_ATTR = "llm_report"
_last: dict[str, Any] = {}


def last_result() -> pd.DataFrame | None:
    """The DataFrame of the last run in this process, also when it was interrupted."""
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


def _check_options(output: str, concurrency: int, max_retries: int, timeout: float, missing: str,
                   budget: float | None, temperature: Any, max_tokens: Any, pilot: Any) -> None:
    if not isinstance(output, str) or not output:
        raise errors.InputError("output= must be a non-empty column name")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise errors.InputError(f"concurrency= must be a positive integer, not {concurrency!r}")
    if not isinstance(max_retries, int) or max_retries < 0:
        raise errors.InputError(f"max_retries= must be 0 or more, not {max_retries!r}")
    if not timeout or timeout <= 0:
        raise errors.InputError(f"timeout= must be a positive number of seconds, not {timeout!r}")
    if missing not in MISSING_POLICIES:
        raise errors.InputError(f"missing= must be one of {MISSING_POLICIES}, not {missing!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < 0):
        raise errors.InputError(f"budget= must be a number of dollars, not {budget!r}")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))):
        raise errors.InputError(f"temperature= must be a number, not {temperature!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise errors.InputError(f"max_tokens= must be a positive integer, not {max_tokens!r}")
    if pilot is not None and (isinstance(pilot, bool) or not isinstance(pilot, int) or pilot < 1):
        raise errors.InputError(f"pilot= must be a positive number of rows, not {pilot!r}")


def _spec(df: pd.DataFrame, template: str, *, model: str, system: str | None = None,
          temperature: float | None = None, max_tokens: int | None = None,
          base_url: str | None = None, api_key: str | None = None, concurrency: int = 64,
          rpm: float | None = None, tpm: float | None = None, max_retries: int = 6,
          timeout: float = 120.0, missing: str = "skip", budget: float | None = None,
          cache: bool | str | None = True, prices: dict | None = None,
          value_field: str | None = None, mode: str = "realtime",
          poll_interval: float = 30.0) -> tuple[RunSpec, Any]:
    """Validate everything and build the run's spec and row source; nothing is sent."""
    if mode not in MODES:
        raise errors.InputError(f"mode= must be one of {MODES}, not {mode!r}")
    if (isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float))
            or not poll_interval > 0):
        raise errors.InputError(f"poll_interval= must be a positive number of seconds, not {poll_interval!r}")
    parsed = Template.parse(template, value_field=value_field)
    parsed.check_columns(list(df.columns))
    colmap = _column_map(df, parsed.fields)
    ref = parse_model(model, base_url=base_url)
    provider = make_provider(ref, base_url=base_url, api_key=api_key)
    if mode == "batch" and not provider.supports_batch:
        raise errors.InputError(
            f"mode='batch': {ref.full} has no batch API here (batch jobs work with openai/ and "
            "anthropic/ models); use mode='realtime'")
    try:
        price = pricing.price_for(ref.provider, ref.model, prices)
    except ValueError as exc:
        raise errors.InputError(str(exc)) from None
    if budget is not None and price is None:
        raise errors.InputError(
            f"no price is known for {ref.full}, so it cannot run under budget=: pass "
            f"prices={{{ref.full!r}: (input_per_million, output_per_million)}}"
        )
    if budget is not None and max_tokens is None:
        max_tokens = plan.DEFAULT_MAX_OUTPUT  # a real bound for the worst case the budget reserves
    spec = RunSpec(template=parsed, model=ref, provider=provider, system=system,
                   temperature=temperature, max_tokens=max_tokens, concurrency=concurrency,
                   rpm=rpm, tpm=tpm, max_retries=max_retries, timeout=timeout, missing=missing,
                   budget=budget, price=price,
                   context_window=pricing.context_window(ref.provider, ref.model),
                   cache_path=store.resolve(cache), mode=mode, poll_interval=float(poll_interval))

    def rows(positions: list[int] | None = None):
        frame = df if positions is None else df.iloc[positions]
        return _iter_rows(frame, parsed.fields, colmap)

    return spec, rows


def _pilot_positions(n: int, size: int) -> list[int]:
    """Evenly spread rows, so a sorted frame still gives a representative pilot."""
    size = min(size, n)
    return sorted({int(i * n / size) for i in range(size)}) if size else []


def _may_repeat(df: pd.DataFrame, fields: tuple[str, ...]):
    """Per row, whether its template values occur more than once (pandas hashes them in C):
    only those rows need a place in the run's de-duplication map. None (track every row)
    when a value is unhashable. Rows whose different values render the same prompt are then
    sent twice, which costs a request, never a wrong answer."""
    if not fields:
        return None
    try:
        cols = [c for c in df.columns if str(c) in fields]
        return df[cols].duplicated(keep=False).to_numpy()
    except TypeError:
        return None


class _Apply:
    """The shared body of apply/aapply for a DataFrame: validate, estimate, pilot, run."""

    def __init__(self, df: pd.DataFrame, template: str, *, model: str, output: str = "llm_output",
                 progress: bool | str | None = None, usage: bool = False, pilot: int | None = None,
                 check_budget: bool = True, **options: Any) -> None:
        _check_options(output, options.get("concurrency", 64), options.get("max_retries", 6),
                       options.get("timeout", 120.0), options.get("missing", "skip"),
                       options.get("budget"), options.get("temperature"),
                       options.get("max_tokens"), pilot)
        self.spec, self.rows = _spec(df, template, model=model, **options)
        self.df, self.output, self.progress, self.usage = df, output, progress, usage
        self.pilot_size = pilot
        self.pilot_measured: plan.Pilot | None = None
        self.cancelled = False
        self.check_budget = check_budget
        self.may_repeat = _may_repeat(df, self.spec.template.fields)
        self.run = Run(self.spec, self.rows, len(df), self.may_repeat)
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
        estimate = Run(self.spec, self.rows, len(self.df), self.may_repeat).plan(pilot)
        budget = self.spec.budget
        expected = estimate.batch_cost if self.spec.mode == "batch" else estimate.cost
        if (check and self.check_budget and budget is not None and expected is not None
                and expected > budget):
            raise errors.BudgetError(
                f"not started: the expected cost is above the budget of ${budget:.2f}.\n"
                f"{estimate.summary()}\nRaise budget=, lower max_tokens=, or use fewer rows."
            )
        return estimate

    async def _execute(self) -> None:
        """The pilot (if asked), a fresh estimate from it, then the rest of the rows."""
        ledger = Ledger(self.spec.budget, self.spec.cost) if self.spec.price is not None else None
        if self.pilot_size and len(self.df):
            await self._pilot(ledger)
            self.estimate = self._plan(self.pilot_measured)
        self.run.report.estimate = self._estimate
        if self.cancelled and not self.run.stats.stop_reason:
            self.run.stats.stop_reason = "cancelled from the panel"
        if self.run.stats.stop_reason:
            self.run._close_unfinished(f"not sent: {self.run.stats.stop_reason}")
            return
        await self.run.execute(ledger)

    async def _pilot(self, ledger: Ledger | None) -> None:
        """Run a few evenly spread rows first; their answers are kept for the main run."""
        positions = _pilot_positions(len(self.df), self.pilot_size)
        pilot_run = Run(self.spec, lambda: self.rows(positions), len(positions))
        pilot_run.keep_replies = True
        await pilot_run.execute(ledger)
        self.spec.prefill = pilot_run.replies
        stats = self.run.stats
        if pilot_run.stats.stop_reason:  # a bad key or a dead provider: no point going on
            stats.stop_reason = pilot_run.stats.stop_reason
        for name in ("sent", "input_tokens", "output_tokens", "cost"):
            setattr(stats, name, getattr(pilot_run.stats, name))
        stats.by_kind.update(pilot_run.stats.by_kind)
        self.pilot_measured = pilot_run.as_pilot()

    def cancel(self, reason: str = "cancelled from the panel") -> None:
        """Stop sending (from any thread: the loop does it); also stops after a pilot."""
        self.cancelled = True
        engine_loop().call_soon_threadsafe(self.run.cancel, reason)

    def display(self, *, on_cancel=None, on_run=None, background: bool = False):
        """The panel in a notebook, a tqdm bar elsewhere, or nothing (``progress=False``).
        ``on_cancel`` replaces what Cancel does; ``on_run`` adds a Run button (``confirm=True``)."""
        shown = choose_display(self.run.report, self._estimate, self.spec.budget, self.progress,
                               on_cancel=on_cancel or self.cancel, on_run=on_run, background=background)
        self.run.warnings_shown_elsewhere = type(shown).__name__ == "Panel"
        return shown

    def result(self) -> pd.DataFrame:
        out = self.df.copy()
        run = self.run
        out[self.output] = pd.array(run.answers, dtype="string")
        out[f"{self.output}_error"] = pd.array(run.errors, dtype="string")
        if self.usage:
            paid = run.usages  # None where the row got no answer
            priced = self.spec.price is not None
            out[f"{self.output}_input_tokens"] = pd.array(
                [u.input_tokens if u is not None else None for u in paid], dtype="Int64")
            out[f"{self.output}_output_tokens"] = pd.array(
                [u.output_tokens if u is not None else None for u in paid], dtype="Int64")
            out[f"{self.output}_cost"] = pd.array(
                [self.spec.cost(u) if u is not None and priced else None for u in paid], dtype="Float64")
        run.report.estimate = run.report.estimate or self._estimate
        out.attrs[REPORT_ATTR] = run.report
        _last["result"], _last["report"] = out, run.report
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
        return self.result()

    async def run_async(self) -> pd.DataFrame:
        shown = self.display()
        ticker = asyncio.ensure_future(_tick(shown)) if shown else None
        interrupted = _CancelOnSigint(asyncio.current_task())
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
        return self.result()

    def _interrupted(self, partial: pd.DataFrame) -> errors.RunInterrupted:
        report = self.run.report
        return errors.RunInterrupted(
            f"interrupted: {report.answered_rows} of {report.rows} rows had finished and are "
            "kept (llmbatch_pd.last_result() gives them)",
            result=partial,
        )


class _CancelOnSigint:
    """While awaited runs are going, Ctrl+C cancels them (keeping finished rows) instead of
    escaping the event loop and leaving them suspended, as IPython's autoawait would.

    One hook serves every awaited run on the loop: the first run installs it (saving the
    handler it replaces), Ctrl+C cancels them all, and the last run to end puts the saved
    handler back. A loop that already has its own SIGINT handler is left alone.
    """

    _runs: set[_CancelOnSigint] = set()
    _hook: tuple[asyncio.AbstractEventLoop, Any] | None = None  # (loop, handler it replaced)

    def __init__(self, task: asyncio.Task | None) -> None:
        self.fired = False
        self._task = task
        if task is None or threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        cls = type(self)
        if cls._hook is None:
            if signal.SIGINT in getattr(loop, "_signal_handlers", {}):
                return  # the application handles Ctrl+C on this loop itself
            previous = signal.getsignal(signal.SIGINT)
            try:
                loop.add_signal_handler(signal.SIGINT, cls._fire_all)
            except (NotImplementedError, RuntimeError, ValueError):
                return
            cls._hook = (loop, previous)
        elif cls._hook[0] is not loop:
            return
        cls._runs.add(self)

    @classmethod
    def _fire_all(cls) -> None:
        for run in list(cls._runs):
            run.fired = True
            run._task.cancel()

    def restore(self) -> None:
        cls = type(self)
        if self not in cls._runs:
            return
        cls._runs.discard(self)
        if not cls._runs and cls._hook is not None:
            loop, previous = cls._hook
            cls._hook = None
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _estimate(df: pd.DataFrame, template: str, model: str | list[str], pilot: int | None,
              options: dict[str, Any]) -> pd.DataFrame:
    models = [model] if isinstance(model, str) else list(model)
    if not models:
        raise errors.InputError("model= needs at least one model name")
    options.pop("progress", None)
    rows = []
    for name in models:
        job = _Apply(df, template, model=name, progress=False, pilot=pilot, check_budget=False, **options)
        if pilot and len(df):
            if job.spec.cache_path is None:
                warnings.warn("pilot= with cache=False: the pilot's answers cannot be kept", stacklevel=3)
            run_sync(job._pilot(None))
            job.estimate = job._plan(job.pilot_measured)
        row = job.estimate.as_row()
        budget = job.spec.budget
        row["within_budget"] = None if budget is None or row["cost"] is None else row["cost"] <= budget
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


class Job:
    """A run going on in the background (``df.llm.submit``): the notebook stays usable.

    It runs on the engine's own loop thread, so it keeps going while other cells run.
    ``result()`` blocks until it is done, ``await job`` waits without blocking a loop,
    ``cancel()`` stops sending and keeps every finished row.
    """

    def __init__(self, apply: _Apply, *, start: bool = True) -> None:
        self._apply = apply
        self._call: Call | None = None
        self._lock = threading.Lock()  # start() and cancel() may come from a click and a cell at once
        # Created here; updated from the engine's loop thread. With confirm=True the panel shows
        # Run: a click reaches the kernel once the cell that called submit() has returned.
        self._shown = apply.display(on_cancel=lambda: self._cancel("cancelled from the panel"),
                                    on_run=None if start else self.start, background=True)
        if start:
            self.start()

    @property
    def report(self) -> RunReport:
        return self._apply.run.report

    @property
    def estimate(self) -> plan.Estimate:
        return self._apply.estimate

    def start(self) -> None:
        """Begin sending (with ``confirm=True`` this is what the Run button does)."""
        with self._lock:
            if self._call is None:  # once; and never after cancel()
                self._call = Call(self._main())

    async def _main(self) -> None:
        shown = self._shown
        ticker = asyncio.ensure_future(_tick(shown)) if shown else None
        try:
            await self._apply._execute()
        finally:
            if ticker:
                ticker.cancel()
            if shown:
                shown.close()

    def done(self) -> bool:
        return self._call is not None and self._call.done()

    def cancel(self) -> None:
        """Stop sending; requests in flight finish and every finished row is kept. Before
        ``start()`` (``confirm=True``) nothing is ever sent."""
        self._cancel("cancelled by the user")

    def _cancel(self, reason: str) -> None:
        with self._lock:
            if self._call is None:  # never started: on the loop (it owns the panel from now on)
                self._call = Call(self._never_started(reason))
                return
        self._apply.cancel(reason)

    async def _never_started(self, reason: str) -> None:
        run = self._apply.run
        run.stats.stop_reason = run.stats.stop_reason or f"{reason} before the run started"
        run._close_unfinished(f"not sent: {reason} before the run started")
        if self._shown:
            self._shown.close()

    def wait(self, timeout: float | None = None) -> bool:
        if self._call is None:
            raise RuntimeError("the job has not started: call job.start() (or click Run)")
        return self._call.wait(timeout)

    def result(self, timeout: float | None = None) -> pd.DataFrame:
        """The DataFrame, once the run is done (blocks until then)."""
        if not self.wait(timeout):
            raise TimeoutError(f"the job is still running ({self.report.finished_rows} of {self.report.rows} rows)")
        self._call.result()  # re-raise what the run raised, if anything
        return self._apply.result()

    def __await__(self):
        async def wait_here() -> pd.DataFrame:
            await asyncio.get_running_loop().run_in_executor(None, self.wait)
            return self.result()

        return wait_here().__await__()

    def __repr__(self) -> str:
        r = self.report
        state = "done" if self.done() else ("waiting to start" if self._call is None else "running")
        return f"<llmbatch_pd.Job {r.model}: {state}, {r.finished_rows}/{r.rows} rows>"


async def _tick(shown, interval: float = 0.1) -> None:
    while True:
        shown.update()
        await asyncio.sleep(interval)


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

    def apply(self, template: str, *, model: str, output: str = "llm_output", **options: Any) -> pd.DataFrame:
        """Render ``template`` per row, ask ``model``, and return a new DataFrame on the same
        index with the answers in ``output`` and each failed row's reason in
        ``f"{output}_error"``. See the README for every option."""
        return _Apply(self._df, template, model=model, output=output, **options).sync()

    async def aapply(self, template: str, *, model: str, output: str = "llm_output", **options: Any) -> pd.DataFrame:
        """``apply`` for code that already runs an event loop."""
        return await _Apply(self._df, template, model=model, output=output, **options).run_async()

    def submit(self, template: str, *, model: str, output: str = "llm_output",
               confirm: bool = False, **options: Any) -> Job:
        """Start ``apply`` in the background and return a :class:`Job` at once.

        With ``confirm=True`` nothing is sent until ``job.start()`` (or the panel's Run button).
        """
        return Job(_Apply(self._df, template, model=model, output=output, **options), start=not confirm)

    def estimate(self, template: str, *, model: str | list[str], pilot: int | None = None,
                 **options: Any) -> pd.DataFrame:
        """What ``apply`` would send and cost, one row per model, before anything is sent.

        ``pilot=N`` first runs N evenly spread rows for real and extrapolates from their
        usage; their answers go to the cache, so the ``apply`` that follows does not pay twice.
        """
        return _estimate(self._df, template, model, pilot, options)


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

    def apply(self, template: str, *, model: str, output: str = "llm_output", **options: Any) -> pd.DataFrame:
        return _Apply(self._frame(), template, model=model, output=output, **self._options(options)).sync()

    async def aapply(self, template: str, *, model: str, output: str = "llm_output", **options: Any) -> pd.DataFrame:
        return await _Apply(self._frame(), template, model=model, output=output, **self._options(options)).run_async()

    def estimate(self, template: str, *, model: str | list[str], pilot: int | None = None,
                 **options: Any) -> pd.DataFrame:
        return _estimate(self._frame(), template, model, pilot, self._options(options))


__all__ = ["DataFrameLLM", "Job", "SeriesLLM", "RunReport", "last_report", "last_result"]
