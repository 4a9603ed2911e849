"""``df.llm`` and ``s.llm``: validate, delegate to a Run, rewrap on the original index.

Accessors keep no state (pandas 3 builds a new one on every access).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd

from . import errors, store
from .loop_thread import run_sync
from .models import make_provider, parse_model
from .prompts import MISSING_POLICIES, Template
from .run import Run, RunReport, RunSpec

CHUNK = 2048
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
                   budget: float | None) -> None:
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
    if budget is not None and (not isinstance(budget, (int, float)) or budget < 0):
        raise errors.InputError(f"budget= must be a number of dollars, not {budget!r}")


class _Apply:
    """The shared body of apply/aapply for a DataFrame."""

    def __init__(self, df: pd.DataFrame, template: str, *, model: str, output: str = "llm_output",
                 system: str | None = None, temperature: float | None = None,
                 max_tokens: int | None = None, base_url: str | None = None, api_key: str | None = None,
                 concurrency: int = 64, rpm: float | None = None, tpm: float | None = None,
                 max_retries: int = 6, timeout: float = 120.0, progress: bool | None = None,
                 missing: str = "skip", budget: float | None = None, cache: bool | str | None = True,
                 value_field: str | None = None):
        _check_options(output, concurrency, max_retries, timeout, missing, budget)
        parsed = Template.parse(template, value_field=value_field)
        parsed.check_columns(list(df.columns))
        colmap = _column_map(df, parsed.fields)
        ref = parse_model(model, base_url=base_url)
        provider = make_provider(ref, base_url=base_url, api_key=api_key)
        if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))):
            raise errors.InputError(f"temperature= must be a number, not {temperature!r}")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise errors.InputError(f"max_tokens= must be a positive integer, not {max_tokens!r}")
        spec = RunSpec(template=parsed, model=ref, provider=provider, system=system,
                       temperature=temperature, max_tokens=max_tokens, concurrency=concurrency,
                       rpm=rpm, tpm=tpm, max_retries=max_retries, timeout=timeout, missing=missing,
                       budget=budget, cache_path=store.resolve(cache))
        self.df, self.output, self.progress = df, output, progress
        self.run = Run(spec, _iter_rows(df, parsed.fields, colmap), len(df))

    def display(self):
        if self.progress is False:
            return None
        from .ui.console import ConsoleProgress
        return ConsoleProgress(self.run.report)

    def result(self) -> pd.DataFrame:
        out = self.df.copy()
        out[self.output] = pd.array(self.run.answers, dtype="string")
        out[f"{self.output}_error"] = pd.array(self.run.errors, dtype="string")
        out.attrs[REPORT_ATTR] = self.run.report
        _last["result"], _last["report"] = out, self.run.report
        return out

    def sync(self) -> pd.DataFrame:
        shown = self.display()
        try:
            run_sync(self.run.execute(), tick=shown.update if shown else None)
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
            await self.run.execute()
        except asyncio.CancelledError:
            if not interrupted.fired:
                raise
            partial = self.result()
            raise self._interrupted(partial) from None
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
    """While an awaited run is going, Ctrl+C cancels it (keeping finished rows) instead of
    escaping the event loop and leaving the run suspended, as IPython's autoawait would."""

    def __init__(self, task: asyncio.Task | None) -> None:
        self.fired = False
        self._installed = False
        self._loop = asyncio.get_running_loop()
        if task is None or threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(signal.SIGINT)
        try:
            self._loop.add_signal_handler(signal.SIGINT, self._fire, task)
            self._installed = True
        except (NotImplementedError, RuntimeError, ValueError):
            pass

    def _fire(self, task: asyncio.Task) -> None:
        self.fired = True
        task.cancel()

    def restore(self) -> None:
        if self._installed:
            self._installed = False
            self._loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)


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


__all__ = ["DataFrameLLM", "SeriesLLM", "RunReport", "last_report", "last_result"]
