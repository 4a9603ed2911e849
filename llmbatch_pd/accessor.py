"""``df.llm`` and ``s.llm``: validate (``options``), delegate to a run (``runs``), rewrap the
results on the original index (``frames``). How a call runs (blocking, awaited, in the
background) is ``jobs``'.

Accessors keep no state (pandas 3 builds a new one on every access).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import pandas as pd

from . import frames
from . import options as opts
from .core import defaults, errors
from .core.outcome import raised_stop, row_warning, stop_note
from .core.report import RunReport, RunReports
from .jobs import Job, Runnable
from .planning import estimate as plan
from .runs.apply import ModelRun, side_by_side
from .runs.chat_spec import chat_spec, check_unique
from .runs.spec import RunSpec
from .transport.loop_thread import on_loop
from .ui import choose_display

OUTPUT, EMBED_OUTPUT = defaults.OUTPUT, defaults.EMBED_OUTPUT


def last_result() -> pd.DataFrame | None:
    """The result of the last run in this process (a DataFrame; embed's vectors), also when
    it was interrupted."""
    return frames.LAST.get("result")


def last_report() -> RunReport | None:
    """The report of the last run in this process."""
    return frames.LAST.get("report")


def _spec(df: pd.DataFrame, template: str, **options: Any) -> tuple[RunSpec, Any]:
    """The run's spec (every option checked, nothing sent) and its rows, read from ``df``."""
    spec = chat_spec(df.columns, template, **options)
    return spec, frames.row_source(df, spec.template.fields)


class _Apply(ModelRun, Runnable):
    """apply/aapply for one model: validate, then the run (``ModelRun``: estimate, pilot,
    rows), its display, and its columns on the frame. ``label`` (``model=[...]``) suffixes
    every column it makes with the model's name."""

    def __init__(self, df: pd.DataFrame, template: str, *, model: str, output: str = OUTPUT,
                 progress: bool | str | None = None, usage: bool = False, pilot: int | None = None,
                 check_budget: bool = True, label: str | None = None, **options: Any) -> None:
        opts.check_chat(output, pilot, options)
        spec, rows = _spec(df, template, model=model, **options)
        self.df, self.progress = df, progress
        self.naming = frames.Naming(output, label, usage)
        if spec.schema is not None:
            taken = set(map(str, df.columns)) & {self.naming.field(f) for f in spec.schema.fields}
            if taken:
                raise errors.InputError(
                    f"schema= fields {sorted(taken)} would overwrite columns of the same name; "
                    "pass output='...' to name them output_field instead")
        opts.check_new_columns(df.columns, self.naming.new(spec.schema), output, spec.template.fields)
        super().__init__(spec, rows, len(df), pilot=pilot, usage=usage,
                         check=opts.check_budget if check_budget else None,
                         plan_now=(spec.budget is not None and not pilot) or progress is not False)

    def display(self, *, on_cancel=None, on_run=None, background: bool = False):
        """The panel in a notebook, a tqdm bar elsewhere, or nothing (``progress=False``).
        ``on_cancel`` replaces what Cancel does; ``on_run`` adds a Run button (``confirm=True``)."""
        shown = choose_display(self.run.report, self._estimate, self.spec.budget, self.progress,
                               on_cancel=on_cancel or self.cancel, on_run=on_run, background=background)
        self.run.warnings_shown_elsewhere = type(shown).__name__ == "Panel"
        return shown

    def columns(self) -> dict[str, Any]:
        """The new columns, by name: the answer (or one per schema field), the error, usage."""
        cols = frames.chat_columns(self.run, self.naming)
        self.run.report.estimate = self.run.report.estimate or self._estimate
        return cols

    only_new = False  # df.llm.answers / s.llm.apply: the new columns alone

    def result(self) -> pd.DataFrame | pd.Series:
        return frames.assemble(self.df, self.columns(), self.run.report, self.only_new)

    def stopped(self, result: Any) -> errors.ProviderError | None:
        return raised_stop(self.stop_error, result, self.report)

    def row_warning(self) -> str | None:
        where = (f"the reasons are in .attrs[{frames.ERRORS_ATTR!r}]" if self.only_new
                 else f"the reasons are in the column {self.naming.column + '_error'!r}")
        return row_warning(self.run.errors, self.spec.template.fields, answers=self.run.answers,
                           where=f" ({where})")


class _Group(Runnable):
    """``model=[...]``: the same template on every model, side by side. The runs go at once
    (each provider has its own rate limits), under one budget, in one display; each model's
    columns carry its name as a suffix (``sentiment_gpt-4.1-mini``)."""

    only_new = False

    def __init__(self, df: pd.DataFrame, template: str, *, model: list, output: str = OUTPUT,
                 progress: bool | str | None = None, **options: Any) -> None:
        names = opts.model_list(model)
        self.df, self.progress, self.budget = df, progress, options.get("budget")
        self.applies = [_Apply(df, template, model=name, output=output, progress=progress,
                               check_budget=False, label=label, **options)
                        for name, label in zip(names, opts.labels(names), strict=True)]
        self.reports = RunReports(a.run.report for a in self.applies)
        if not options.get("pilot"):
            self._check_budget()

    def _check_budget(self) -> None:
        if self.budget is None:  # no estimate is made for nothing (it reads every row)
            return
        opts.check_group_budget(self.budget, [(a.spec, a.estimate) for a in self.applies])

    @property
    def report(self) -> RunReports:
        return self.reports

    @property
    def estimate(self) -> list[plan.Estimate]:
        return [a.estimate for a in self.applies]

    async def _execute(self) -> None:
        await side_by_side(self.applies, self.budget, self._check_budget)

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
        return frames.assemble(self.df, columns, self.reports, self.only_new)

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


def _runner(df: pd.DataFrame, template: str, model: Any, output: str, options: dict,
            call: str = "apply", only_new: bool = False) -> _Apply | _Group:
    """One model, or several side by side (the option names checked first); ``only_new``:
    the result is the new columns alone (a Series for one answer column)."""
    _check_names(options, call)
    if isinstance(model, (list, tuple)):
        runner: _Apply | _Group = _Group(df, template, model=list(model), output=output, **options)
    else:
        runner = _Apply(df, template, model=model, output=output, **options)
    runner.only_new = only_new
    return runner


@functools.cache
def _options() -> dict[str, tuple[str, ...]]:
    """What each call takes, read from the signatures that take it (embed's on first use)."""
    from .runs.embed_spec import build_spec

    chat = opts.keywords(chat_spec, _Apply.__init__, DataFrameLLM.estimate)
    return {"apply": chat, "aapply": chat, "estimate": chat, "answers": chat, "preview": chat,
            "submit": opts.keywords(chat_spec, _Apply.__init__, DataFrameLLM.submit),
            "embed": opts.keywords(build_spec, DataFrameLLM.embed)}


def _check_names(options: dict[str, Any], call: str) -> None:
    known = _options()
    opts.check_names(options, known[call], call,
                     {other: names for other, names in known.items() if other in ("submit", "embed")})


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
            job.estimate_with_pilot(name)
        row = job.estimate.as_row()
        budget, expected = job.spec.budget, job.estimate.cost_for(job.spec.mode)
        row["within_budget"] = None if budget is None or expected is None else expected <= budget
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


class _Embed(Runnable):
    """``embed``: validate, render, read the cache, pack and check the budget at once (nothing
    is sent; at batch prices with ``mode="batch"``), then send the packs (or submit them as
    batch jobs); the vectors come back on the frame's index."""

    def __init__(self, df: pd.DataFrame, template: str, *, model: str, output: str,
                 as_array: bool, value_field: str | None, progress: Any, options: dict[str, Any]) -> None:
        from .runs.embed import EmbedRun
        from .runs.embed_spec import build_spec

        _check_names(options, "embed")
        opts.check_embed_output(output)
        spec = build_spec(template, list(df.columns), model=model, value_field=value_field, **options)
        check_unique(df.columns, spec.template.fields)
        self.run = EmbedRun(spec, frames.row_source(df, spec.template.fields), len(df))
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

    @property
    def report(self) -> RunReport:
        return self.run.report

    def stopped(self, result: Any) -> errors.ProviderError | None:
        return raised_stop(self.run.stop_error, result, self.run.report)

    def row_warning(self) -> str | None:
        from .runs.embed import failure_warning

        where = "their rows are NaN" if self.as_array else f"see .attrs[{frames.ERRORS_ATTR!r}]"
        return failure_warning(self.run.row_errors(), self.run.spec.template.fields, f" ({where})")

    def result(self):
        return frames.vectors(self.run, self.index, self.output, self.as_array)


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
        return self._df.attrs.get(frames.REPORT_ATTR)

    def apply(self, template: str, *, model: str | list[str], output: str = OUTPUT,
              **options: Any) -> pd.DataFrame:
        """Render ``template`` per row, ask ``model``, and return a new DataFrame on the same
        index with the answers in ``output`` and each failed row's reason in
        ``f"{output}_error"``. ``schema=`` gives one typed column per field instead;
        ``model=[...]`` runs every model side by side (columns suffixed with the model's
        name)."""
        return _runner(self._df, template, model, output, options).sync()

    def answers(self, template: str, *, model: str | list[str], output: str = OUTPUT,
                **options: Any) -> pd.Series | pd.DataFrame:
        """``apply``, returning only what it adds, for a one-line assign:
        ``df["label"] = df.llm.answers(template, model=...)``. One answer column comes as a
        Series on the frame's index (NA where a row failed; the reasons, by index label, in
        ``.attrs["llm_errors"]``; the report in ``.llm.report``); ``schema=``, ``usage=True`` or
        ``model=[...]`` make several columns, a DataFrame (``df[cols.columns] = cols``)."""
        return _runner(self._df, template, model, output, options, "answers", only_new=True).sync()

    def preview(self, template: str, *, model: str, n: int = 3, **options: Any) -> pd.DataFrame:
        """The first ``n`` requests ``apply`` would send, before anything is paid for: one row
        per request, on the index of the row it answers, with the messages (``system``,
        ``prompt``), our count of its ``input_tokens`` and the whole request ``body`` the
        provider would receive (never the headers: they hold the key). Nothing is sent and no
        API key is needed; rows that would not be sent (missing values, duplicates) are passed
        over as the run would pass them."""
        from .runs.preview import first_requests

        _check_names(options, "preview")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise errors.InputError(f"n= must be a whole number of requests, 1 or more, not {n!r}")
        for name in ("progress", "usage", "pilot", "output"):
            options.pop(name, None)
        spec, rows = _spec(self._df, template, model=model, need_key=False, **options)
        return frames.preview_frame(self._df.index, first_requests(spec, rows, len(self._df), n))

    async def aapply(self, template: str, *, model: str | list[str], output: str = OUTPUT,
                     **options: Any) -> pd.DataFrame:
        """``apply`` for code that already runs an event loop."""
        return await _runner(self._df, template, model, output, options, "aapply").run_async()

    def submit(self, template: str, *, model: str | list[str], output: str = OUTPUT,
               confirm: bool = False, **options: Any) -> Job:
        """Start ``apply`` in the background and return a :class:`Job` at once.

        With ``confirm=True`` nothing is sent until ``job.start()`` (or the panel's Run button).
        """
        frame = frames.snapshot(self._df)  # other cells may change the frame while the job runs
        return Job(_runner(frame, template, model, output, options, "submit"), start=not confirm)

    def estimate(self, template: str, *, model: str | list[str], pilot: int | None = None,
                 **options: Any) -> pd.DataFrame:
        """What ``apply`` would send and cost, one row per model, before anything is sent.

        ``pilot=N`` first runs N evenly spread rows for real and extrapolates from their
        usage; their answers go to the cache, so the ``apply`` that follows does not pay twice.
        """
        return _estimate(self._df, template, model, pilot, options)

    def embed(self, template: str, *, model: str, output: str = EMBED_OUTPUT, as_array: bool = False,
              progress: Any = None, **options: Any) -> pd.Series | np.ndarray:
        """One embedding per row of the rendered ``template``: a Series of float32 vectors on
        the same index (None where a row failed; the reasons in ``.attrs["llm_errors"]``), or
        with ``as_array=True`` an (n_rows, dim) float32 array whose failed rows are NaN.

        Many rows go in each request (up to the API's limits); each text is cached on its
        own, so a re-run sends only new texts. ``mode="batch"`` sends them as OpenAI batch
        jobs instead: half price, answered within 24 hours, collected by the same call run
        again if this one is interrupted."""
        return _Embed(self._df, template, model=model, output=output, as_array=as_array,
                      value_field=None, progress=progress, options=options).sync()

    async def aembed(self, template: str, *, model: str, output: str = EMBED_OUTPUT,
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
        return frames.value_frame(self._s)

    def _options(self, options: dict) -> dict:
        return {**options, "value_field": str(self._frame().columns[0])}

    @property
    def report(self) -> RunReport | None:
        """The report of the run that made this Series (kept in ``s.attrs``)."""
        return self._s.attrs.get(frames.REPORT_ATTR)

    def apply(self, template: str, *, model: str | list[str], output: str = OUTPUT,
              **options: Any) -> pd.Series | pd.DataFrame:
        """Render ``template`` per cell (``{}`` or ``{value}`` is the cell), ask ``model``, and
        return the answers as a Series on the same index, as ``s.str`` methods do:
        ``df["label"] = df["text"].llm.apply("Classify: {}", model=...)``. NA where a cell
        failed, the reasons (by index label) in ``.attrs["llm_errors"]``, the report in
        ``.llm.report``. ``schema=``, ``usage=True`` or ``model=[...]`` make several columns: a
        DataFrame of them."""
        return _runner(self._frame(), template, model, output, self._options(options),
                       only_new=True).sync()

    async def aapply(self, template: str, *, model: str | list[str], output: str = OUTPUT,
                     **options: Any) -> pd.Series | pd.DataFrame:
        """``apply`` for code that already runs an event loop."""
        return await _runner(self._frame(), template, model, output, self._options(options),
                             "aapply", only_new=True).run_async()

    def estimate(self, template: str, *, model: str | list[str], pilot: int | None = None,
                 **options: Any) -> pd.DataFrame:
        """What ``apply`` would send and cost, one row per model; see ``DataFrame.llm.estimate``."""
        return _estimate(self._frame(), template, model, pilot, self._options(options))

    def embed(self, *, model: str, output: str = EMBED_OUTPUT, as_array: bool = False,
              progress: Any = None, **options: Any) -> pd.Series | np.ndarray:
        """One embedding per cell (the cells are the texts); see ``DataFrame.llm.embed``."""
        return _Embed(frames.series_frame(self._s), "{}", model=model, output=output, as_array=as_array,
                      value_field="text", progress=progress, options=options).sync()

    async def aembed(self, *, model: str, output: str = EMBED_OUTPUT, as_array: bool = False,
                     progress: Any = None, **options: Any) -> pd.Series | np.ndarray:
        """``embed`` for code that already runs an event loop."""
        return await _Embed(frames.series_frame(self._s), "{}", model=model, output=output, as_array=as_array,
                            value_field="text", progress=progress, options=options).run_async()


def _document() -> None:
    """Every method's signature and docstring list the options it takes, with defaults."""
    from .core.option_docs import document_methods
    from .runs.embed_spec import build_spec

    document_methods((DataFrameLLM, SeriesLLM), chat=(chat_spec, _Apply.__init__), embed=(build_spec,))


_document()

__all__ = ["DataFrameLLM", "Job", "SeriesLLM", "RunReport", "last_report", "last_result"]
