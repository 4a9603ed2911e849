"""``ddf.llm`` on dask.dataframe: ``apply`` and ``embed`` (lazy), ``estimate`` (computed now), the pandas
path run per partition under one coordinator per run (``coordinator.py``: one pace, one
budget, one breaker and one stop for the whole cluster).

``apply`` validates everything on the driver first, by running the pandas call on the
frame's empty ``_meta`` (nothing is sent; that also gives the result's columns and dtypes),
reads this model's answers from the cache file (workers never open it), makes the estimate
when something needs it before the run (``budget=``, a display: as pandas does; it reads the
partitions once, sending nothing), opens the run on the scheduler, starts the driver thread
(``driver.py``) and returns the lazy result: ``ddf.map_partitions`` over
``partition.apply_partition``, same index. ``result.llm.wait()`` blocks until the run has ended
and returns its report (``result.llm.report`` is the live one).
"""

from __future__ import annotations

import math
import uuid
import weakref
from typing import Any

import pandas as pd
from dask.dataframe.extensions import register_dataframe_accessor, register_series_accessor

from .. import frames
from .. import options as opts
from ..core import defaults, errors, journal
from ..core.report import RunReport
from ..core.types import Request
from ..planning import estimate as plan
from ..runs.chat import MIN_HISTORY, Run
from ..runs.chat_spec import chat_spec
from ..runs.embed_spec import build_spec
from ..runs.spec import RunSpec
from ..store.db import Store
from ..store.writer import ANSWER_COLUMNS
from ..ui import choose_display
from .coordinator import RunLimits, open_run, stop_run
from .driver import Driver, driver, release
from .embed import EmbedJob, cached_vectors, embed_partition
from .partition import PartJob, apply_partition, plan_partition, share_hits

OUTPUT, EMBED_OUTPUT = defaults.OUTPUT, defaults.EMBED_OUTPUT
RUN_ATTR = "llm_run"
"""The run's id, in the lazy result's ``_meta.attrs`` (``result.llm.wait()`` finds it there)."""
NOT_ON_DASK = {"pilot": "run the pilot on a sample first: ddf.head(n).llm.estimate(..., pilot=n)",
               "mode": "batch jobs are a pandas-path feature: df.llm.apply(..., mode='batch')",
               "pack": "packing rows into one request is a pandas-path feature: df.llm.apply(..., pack=k)"}
ALLOWED = {"pilot": (None,), "mode": (None, "realtime"), "pack": (None, 1)}
"""The values of the ``NOT_ON_DASK`` options that mean "not used" (``pack=1`` is one row a request)."""


def _client() -> Any:
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        raise errors.InputError(
            "ddf.llm needs a dask.distributed Client (its scheduler holds the run's coordinator): "
            "from dask.distributed import Client; client = Client()") from None


def _per_partition(client: Any, concurrency: int) -> int:
    """``concurrency=`` is the cluster's, as the pace and the budget are: shared out among the
    partitions that run at once (one per worker thread). A cluster of many threads would
    otherwise open with a first wave many times one process's, all of it sent before the
    provider's headers tell the pace."""
    threads = sum(client.nthreads().values()) or 1
    return max(1, math.ceil(concurrency / threads))


def _refuse(model: Any, options: dict[str, Any]) -> None:
    if not isinstance(model, str):
        raise errors.InputError("ddf.llm takes one model= name (run one apply per model)")
    for name, advice in NOT_ON_DASK.items():
        value = options.get(name)
        if value is not None and not any(value == ok and type(value) is type(ok) for ok in ALLOWED[name]):
            raise errors.InputError(f"{name}= does not run on Dask: {advice}")


def _cached(spec: RunSpec) -> dict[str, dict]:
    """This model's answers in the cache file, as answer records (the driver reads the file
    before anything is scheduled; the partitions answer their rows from these)."""
    if spec.cache_path is None or spec.refresh:
        return {}
    store = Store(spec.cache_path)
    try:
        rows = store.db.execute(f"SELECT {ANSWER_COLUMNS}, cut.max_tokens FROM answers "
                                "LEFT JOIN cut USING (key) WHERE model = ?", (spec.provider.model,)).fetchall()
    finally:
        store.close()
    return {r[0]: {"text": r[2], "finish_reason": r[3], "model": r[1], "input_tokens": r[4],
                   "output_tokens": r[5], "cached_tokens": r[6], "cache_write_tokens": r[7], "limit": r[9]}
            for r in rows}


def _plan(client: Any, ddf: Any, spec: RunSpec, job: PartJob) -> tuple[plan.Estimate, int]:
    """The estimate over every partition (rendered and counted on the workers, nothing sent),
    and the longest prompt's token count (the worst case a request reserves)."""
    parts = client.gather(client.compute([_delayed_plan(p, job) for p in ddf.to_delayed()]))
    counts = [c for p in parts for c in p["input_counts"]]
    history = None
    if spec.cache_path is not None:
        probe = Run(spec, lambda: iter(()), 0)
        store = Store(spec.cache_path)
        try:
            history = store.get_history(probe.history_key)
        finally:
            store.close()
    pilot = None
    if history is not None and history.requests >= MIN_HISTORY:
        pilot = plan.Pilot(history.requests, history.input_tokens, history.estimated_input_tokens,
                           history.output_tokens, history.latency_total / history.requests, source="history")
    total = {k: sum(p[k] for p in parts) for k in ("rows", "duplicates", "cached", "skipped", "too_long")}
    estimate = plan.build(
        spec.model.full, **total, input_counts=counts, exact=spec.counter.exact,
        token_counting=spec.counter.name, price=spec.price, max_tokens=spec.max_tokens,
        concurrency=spec.concurrency, rpm=spec.rpm or (history.rpm if history else None),
        tpm=spec.tpm or (history.tpm if history else None), budget=spec.budget, pilot=pilot, tiers=spec.tiers)
    estimate.cache_saves = sum(p["saved_by_cache"] for p in parts) if spec.price is not None else None
    return estimate, max(counts, default=0)


def _delayed_plan(part: Any, job: PartJob) -> Any:
    import dask

    return dask.delayed(plan_partition, pure=False)(part, job)


def _meta(ddf: Any, template: str, model: str, output: str, usage: bool, options: dict) -> pd.DataFrame:
    """The pandas call on the empty ``_meta``: every option checked as pandas checks it, and
    the result's columns and dtypes. Nothing is sent (no rows), no cache file is opened."""
    last = dict(frames.LAST)
    try:
        meta = ddf._meta.llm.apply(template, model=model, output=output, usage=usage, progress=False,
                                   **{**options, "cache": False})
    finally:
        frames.LAST.clear()
        frames.LAST.update(last)
    _unrecord(meta)
    return meta


def _unrecord(meta: pd.DataFrame | pd.Series) -> None:
    """The pandas call on ``_meta`` sent nothing and is not the user's run: out of the kernel's
    journal (the Dask run is recorded by its driver when it ends) and out of the result's attrs."""
    if meta.attrs.get(frames.REPORT_ATTR) is not None:
        journal.forget(meta.attrs[frames.REPORT_ATTR])
    meta.attrs.clear()


class _Call:
    """One ``ddf.llm.apply``: checked, planned, opened on the scheduler, returned lazy."""

    def __init__(self, ddf: Any, template: str, model: Any, output: str, usage: bool,
                 progress: Any, options: dict[str, Any]) -> None:
        _refuse(model, options)
        self.meta = _meta(ddf, template, model, output, usage, options)
        self.client = _client()
        spec = self.spec = chat_spec(list(ddf.columns), template, model=model, **options)
        run_id = uuid.uuid4().hex
        options = {k: v for k, v in options.items() if k != "cache"}
        self.job = PartJob(run_id, template, {**options, "model": model,
                                              "concurrency": _per_partition(self.client, spec.concurrency)},
                           output, usage=usage, hits=_cached(spec))
        shared = share_hits(self.client, self.job)  # once to the cluster, not in every task
        estimate, longest = None, 0
        if spec.budget is not None or progress is not False:
            estimate, longest = _plan(self.client, ddf, spec, self.job)
            if spec.budget is not None:
                opts.check_budget(spec, estimate)
        worst = spec.worst_cost(Request(0, [], est_input_tokens=longest, max_output_tokens=spec.max_tokens or 0))
        self.job.worst_cost = worst
        open_run(self.client, RunLimits(run_id=run_id, rpm=spec.rpm, tpm=spec.tpm, budget=spec.budget,
                                        worst_cost=worst))
        report = RunReport(model=spec.model.full, rows=estimate.rows if estimate else 0, budget=spec.budget,
                           priced=spec.price is not None)
        report.estimate = estimate
        report.stats.total = report.rows
        client = self.client

        def cancel() -> None:  # the panel's Cancel: every worker stops sending
            stop_run(client, run_id, "cancelled from the panel")

        shown = (None if progress is False else
                 choose_display(report, estimate, spec.budget, progress, on_cancel=cancel, background=True))
        self.driver = Driver(self.client, run_id, report, npartitions=ddf.npartitions,
                             cache_path=spec.cache_path, model=spec.provider.model,
                             history_key=Run(spec, lambda: iter(()), 0).history_key, display=shown,
                             price=spec.cost)
        self.meta.attrs[RUN_ATTR] = run_id
        self.meta.attrs[frames.REPORT_ATTR] = report
        self.ddf = ddf
        # the result dropped: its driver ends, the run closes, the scattered hits go
        weakref.finalize(self.job, release, run_id, shared)

    def result(self) -> Any:
        return self.ddf.map_partitions(apply_partition, self.job, meta=self.meta, partition_info=True,
                                       enforce_metadata=False)


def _estimate(ddf: Any, template: str, model: Any, options: dict[str, Any]) -> pd.DataFrame:
    names = [model] if isinstance(model, str) else list(model)
    options.pop("progress", None)
    client = _client()
    rows = []
    for name in names:
        _refuse(name, options)
        ddf._meta.llm.estimate(template, model=name, **options)  # every option checked as pandas does
        spec = chat_spec(list(ddf.columns), template, model=name, need_key=False, **options)
        job = PartJob("estimate", template, {**options, "model": name, "need_key": False}, OUTPUT,
                      hits=_cached(spec))
        estimate, _ = _plan(client, ddf, spec, job)
        row = estimate.as_row()
        budget, expected = spec.budget, estimate.cost_for(spec.mode)
        row["within_budget"] = None if budget is None or expected is None else expected <= budget
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def _embed(data: Any, template: str, model: str, output: str, progress: Any, options: dict[str, Any]) -> Any:
    """``embed`` on a Dask frame: checked by the pandas call on ``_meta`` (which gives the
    result's dtype), this model's vectors read from the cache file, the run opened on the
    scheduler, the driver thread started; the lazy Series of vectors returned."""
    if options.get("as_array"):
        raise errors.InputError("as_array= does not run on Dask: stack the computed Series (np.stack)")
    _refuse(model, options)
    last = dict(frames.LAST)
    try:
        checked = {k: v for k, v in options.items() if k != "value_field"} | {"cache": False}
        if "value_field" in options:  # a Series' cells: the pandas Series call
            meta = data._meta[options["value_field"]].llm.embed(model=model, output=output, progress=False,
                                                                 **checked)
        else:
            meta = data._meta.llm.embed(template, model=model, output=output, progress=False, **checked)
    finally:
        frames.LAST.clear()
        frames.LAST.update(last)
    _unrecord(meta)
    client = _client()
    spec = build_spec(template, list(data.columns), model=model, **options)
    run_id = uuid.uuid4().hex
    worst = spec.worst_cost(Request(0, [], est_input_tokens=spec.max_request_tokens))  # the largest pack
    job = EmbedJob(run_id, template, {k: v for k, v in options.items() if k != "cache"}
                   | {"model": model, "concurrency": _per_partition(client, spec.concurrency)},
                   output, worst_cost=worst, hits=cached_vectors(spec))
    shared = share_hits(client, job)  # once to the cluster, not in every task
    open_run(client, RunLimits(run_id=run_id, rpm=spec.rpm, tpm=spec.tpm, budget=spec.budget, worst_cost=worst))
    report = RunReport(model=spec.model.full, rows=0, budget=spec.budget, priced=spec.price is not None)
    shown = None if progress is False else choose_display(
        report, None, spec.budget, progress, on_cancel=lambda: stop_run(client, run_id, "cancelled from the panel"),
        background=True)
    Driver(client, run_id, report, npartitions=data.npartitions, cache_path=spec.cache_path,
           model=spec.provider.model, history_key=None, display=shown)
    meta.attrs[RUN_ATTR] = run_id
    meta.attrs[frames.REPORT_ATTR] = report
    weakref.finalize(job, release, run_id, shared)  # the result dropped: driver ends, run closes, hits go
    return data.map_partitions(embed_partition, job, meta=meta, partition_info=True, enforce_metadata=False)


class _Lazy:
    """What a lazy result made by ``ddf.llm`` offers: its run, its report, waiting for it."""

    _data: Any

    @property
    def run_id(self) -> str | None:
        """The run that makes this (lazy) result, or None."""
        return self._data._meta.attrs.get(RUN_ATTR)

    @property
    def report(self) -> RunReport | None:
        """The live report of the run that makes this result (final once ``wait()`` returned)."""
        return self._data._meta.attrs.get(frames.REPORT_ATTR)

    def wait(self, timeout: float | None = None) -> RunReport:
        """Block until the run making this result has ended (every partition computed, every
        answer in the cache file) and return its report."""
        if self.run_id is None:
            raise errors.InputError("this Dask collection is not the result of ddf.llm.apply or embed")
        return driver(self.run_id).wait(timeout)


@register_dataframe_accessor("llm")
class DaskFrameLLM(_Lazy):
    """``ddf.llm.apply(template, model=...)``: one LLM answer per row, across a Dask cluster
    under one rate limit and one budget (see the package docstring)."""

    def __init__(self, ddf: Any) -> None:
        self._ddf = self._data = ddf

    def apply(self, template: str, *, model: str, output: str = OUTPUT, usage: bool = False,
              progress: Any = None, **options: Any) -> Any:
        """A lazy Dask DataFrame: the frame's columns plus the pandas call's (same names, same
        dtypes), on the same index. The run starts on the cluster when it is computed; the
        cache file is written by this process as answers arrive. Same options as
        ``df.llm.apply`` except ``pilot=``, ``mode="batch"`` and ``model=[...]``."""
        return _Call(self._ddf, template, model, output, usage, progress, options).result()

    def estimate(self, template: str, *, model: str | list[str], **options: Any) -> pd.DataFrame:
        """What ``apply`` would send and cost (one row per model), counted over every
        partition on the cluster; nothing is sent."""
        return _estimate(self._ddf, template, model, options)

    def embed(self, template: str, *, model: str, output: str = EMBED_OUTPUT, progress: Any = None,
              **options: Any) -> Any:
        """A lazy Dask Series of float32 vectors on the same index (None where a row failed;
        the reasons are in the run's report), as ``df.llm.embed``; each text is cached on
        its own. Not ``as_array=`` nor ``mode="batch"``."""
        return _embed(self._ddf, template, model, output, progress, options)


@register_series_accessor("llm")
class DaskSeriesLLM(_Lazy):
    """``s.llm.apply("Translate: {}", model=...)`` on a Dask Series: ``{}`` is the cell."""

    def __init__(self, series: Any) -> None:
        self._s = self._data = series

    def _frame(self) -> tuple[Any, str]:
        name = self._s.name if self._s.name is not None else "value"
        return self._s.to_frame(name=name), str(name)

    def apply(self, template: str, *, model: str, output: str = OUTPUT, **options: Any) -> Any:
        frame, name = self._frame()
        return frame.llm.apply(template, model=model, output=output, value_field=name, **options)

    def estimate(self, template: str, *, model: str | list[str], **options: Any) -> pd.DataFrame:
        frame, name = self._frame()
        return frame.llm.estimate(template, model=model, value_field=name, **options)

    def embed(self, *, model: str, output: str = EMBED_OUTPUT, progress: Any = None, **options: Any) -> Any:
        """One embedding per cell (the cells are the texts); see ``ddf.llm.embed``."""
        return _embed(self._s.to_frame(name="text"), "{}", model, output, progress,
                      {**options, "value_field": "text"})


__all__ = ["DaskFrameLLM", "DaskSeriesLLM"]
