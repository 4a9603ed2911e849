"""One partition of ``ddf.llm.apply`` on a worker: the pandas path's run (``runs.chat.Run``)
over the partition's rows, paced, budgeted and stopped by the run's coordinator.

A worker never opens the cache file (SQLite over a shared filesystem loses writes): the run's
"cache" here is ``PartitionStore``, which answers from the hits the driver read before the
graph was built and from the answers the coordinator already holds for this run (a partition
re-run after its worker died pays nothing twice), and which hands every new answer to the
coordinator (``remote.report_answers``), where the driver drains it into the cache file.

The remote calls are made on the partition's task thread (where ``get_worker()`` works): the
known answers once before the run, the new answers every ``REPORT_EVERY`` seconds while the
run goes on (its engine runs on the process's private loop thread).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..core import errors
from ..core.outcome import raised_stop
from ..core.types import Reply, Usage
from ..frames import Naming, chat_columns, row_source
from ..runs.chat import Run
from ..runs.chat_spec import chat_spec
from ..runs.spec import RunSpec
from ..store.db import History
from ..transport.loop_thread import run_sync

REPORT_EVERY = 0.05
"""Seconds between two hand-overs of new answers to the coordinator: what a worker killed
at the wrong moment can lose (answers paid for, asked again by the re-run partition)."""
KNOWN_CHUNK = 5000
"""Request keys asked of the coordinator in one call."""


def topic(run_id: str) -> str:
    """The worker-event topic the partitions of a run report their end on."""
    return f"llmbatch-{run_id}"


# -- answer records: what the coordinator holds and the cache file stores, as plain values --


def record(reply: Reply, model: str | None) -> dict[str, Any]:
    """A Reply as an answer record (plain values: it crosses processes and the scheduler)."""
    u = reply.usage
    return {"text": reply.text, "finish_reason": reply.finish_reason, "model": model or reply.model,
            "limit": reply.limit, "input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
            "cached_tokens": u.cached_tokens, "cache_write_tokens": u.cache_write_tokens, "cost": u.cost}


def reply_of(rec: dict[str, Any]) -> Reply:
    """An answer record back as the Reply a run (or the cache file) takes."""
    usage = Usage(int(rec.get("input_tokens") or 0), int(rec.get("output_tokens") or 0),
                  int(rec.get("cached_tokens") or 0), int(rec.get("cache_write_tokens") or 0),
                  rec.get("cost"))
    return Reply(rec.get("text"), usage, rec.get("finish_reason"), rec.get("model"), limit=rec.get("limit"))


# -- what a partition task is given ----------------------------------------------------------

_HITS: dict[str, dict] = {}
"""The last scattered hits this worker process fetched (one set: a run's partitions share it)."""
_HITS_LOCK = threading.Lock()


def share_hits(client: Any, job: Any) -> Any:
    """Scatter ``job.hits`` to the cluster once and keep only its key in the job, so the
    graph (every partition task, every plan task) does not carry the model's whole cache.
    Returns the future: the caller keeps it as long as the job may be computed."""
    if not job.hits:
        return None
    [future] = client.scatter([job.hits], hash=False)
    job.hits, job.hits_key = {}, future.key
    return future


def hits_of(job: Any) -> dict[str, dict]:
    """The job's hits: its own, or the scattered ones (fetched once per worker process)."""
    if job.hits_key is None:
        return job.hits
    with _HITS_LOCK:
        found = _HITS.get(job.hits_key)
        if found is None:
            from distributed import Future, get_client

            client = get_client()
            found = client.gather(Future(job.hits_key, client=client))
            _HITS.clear()
            _HITS[job.hits_key] = found
        return found


@dataclass
class PartJob:
    """Everything a partition needs, picklable: the call's options (the spec is rebuilt on the
    worker: a provider holds a connection pool), the run's id on the coordinator, and the
    answers the driver's cache already holds for this model (request key -> record)."""

    run_id: str
    template: str
    options: dict[str, Any]
    output: str
    usage: bool = False
    worst_cost: float = 0.0  # dollars: the dearest request's worst case (the coordinator leases by it)
    hits: dict[str, dict] = field(default_factory=dict, repr=False)
    hits_key: str | None = None  # the hits scattered once to the cluster (``share_hits``), not in each task

    def __repr__(self) -> str:  # never the options: api_key= may be among them
        return f"PartJob(run_id={self.run_id!r}, output={self.output!r}, hits={len(self.hits)})"

    def spec(self, columns: Any) -> RunSpec:
        """The run's spec for a partition: no cache file (the driver owns it)."""
        spec = chat_spec(list(columns), self.template, **{**self.options, "cache": False})
        return spec


class PartitionStore:
    """The cache as a partition's run sees it (the methods of ``store.db.Store`` a chat run
    calls): lookups in the driver's hits and the coordinator's known answers, new answers
    queued for the coordinator, the run's history kept for the partition's end event."""

    writer = None

    def __init__(self, hits: dict[str, dict]) -> None:
        self.hits = hits
        self.out: queue.SimpleQueue = queue.SimpleQueue()
        self.history: History | None = None

    def get_many(self, keys: list[str]) -> dict[str, Reply]:
        hits = self.hits
        return {k: reply_of(hits[k]) for k in keys if k in hits}

    def put_later(self, items: list[tuple[str, str, Reply]]) -> None:
        for key, model, reply in items:
            self.out.put((key, record(reply, model)))

    def add_history_later(self, key: str, history: History) -> None:
        self.history = history

    def take(self) -> list[tuple[str, dict]]:
        items = []
        while True:
            try:
                items.append(self.out.get_nowait())
            except queue.Empty:
                return items

    def close(self) -> None:
        """Nothing to close: the answers leave through ``take``."""


class PartitionRun(Run):
    """The chat run over one partition, its "cache" a ``PartitionStore``."""

    def __init__(self, spec: RunSpec, rows: Any, n: int, store: PartitionStore) -> None:
        super().__init__(spec, rows, n, find_repeats=True)
        self.partition_store = store

    def _open_store(self) -> None:
        self.store = self.partition_store

    def _remember(self) -> None:
        """The history goes to the driver with the partition's end (one writer for the file)."""
        answered, input_tokens, output_tokens = self.answered_usage
        if answered:
            self.partition_store.history = History(answered, input_tokens, self.sent_estimated_tokens,
                                                   output_tokens, self.stats.latency_total)

    def keys(self) -> Iterator[str]:
        """The request key of every row that renders (without sending or looking anything up)."""
        spec = self.spec
        for _, messages, key, _ in self._keyed(spec.system_prompt, spec.params):
            if messages is not None:
                yield key


# -- the tasks -------------------------------------------------------------------------------


def _known(run_id: str, keys: list[str]) -> dict[str, dict]:
    from .remote import known_answers

    found: dict[str, dict] = {}
    for start in range(0, len(keys), KNOWN_CHUNK):
        found.update(known_answers(run_id, keys[start:start + KNOWN_CHUNK]))
    return found


def apply_partition(pdf: pd.DataFrame, job: PartJob, partition_info: dict | None = None) -> pd.DataFrame:
    """The partition with the run's new columns (the pandas path's, same names and dtypes)."""
    return ended_once(_apply, pdf, job, partition_info)


def ended_once(work: Any, pdf: pd.DataFrame, job: Any, partition_info: dict | None) -> Any:
    """``work(pdf, job, number, began)``, whose partition logs its end event exactly once: the
    driver waits for every partition's end, so one that raises says so before it does."""
    began = time.time()
    number = (partition_info or {}).get("number")
    try:
        return work(pdf, job, number, began)
    except Ended as ended:  # its end event is logged: the run-wide stop it raises
        raise ended.error from None
    except BaseException as exc:
        log_failure(job.run_id, number, began, exc)
        raise


class Ended(Exception):
    """A partition that logged its end event and then raises ``error`` (a run-wide stop)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def log_failure(run_id: str, number: int | None, began: float, exc: BaseException) -> None:
    """An end event for a partition that raised before its summary (the driver stops waiting
    for it and reports the error); the worker may be gone too, so this never raises."""
    from distributed import get_worker

    try:
        get_worker().log_event(topic(run_id), {"partition": number, "began": began, "ended": time.time(),
                                               "error": f"{type(exc).__name__}: {exc}"})
    except Exception:  # noqa: BLE001 - no worker (or a closed one): nothing to tell
        pass


def _apply(pdf: pd.DataFrame, job: PartJob, number: int | None, began: float) -> pd.DataFrame:
    from distributed import get_worker

    from .remote import coordinated, report_answers

    spec = job.spec(pdf.columns)
    rows, n = row_source(pdf, spec.template.fields), len(pdf)
    probe = PartitionRun(spec, rows, n, PartitionStore({}))
    keys = list(dict.fromkeys(probe.keys()))
    hits = hits_of(job)
    known = _known(job.run_id, [k for k in keys if k not in hits]) if keys else {}
    store = PartitionStore({**hits, **known})
    run = PartitionRun(spec, rows, n, store)
    run.keep_usage = job.usage

    def hand_over() -> None:
        items = store.take()
        if items:
            report_answers(job.run_id, items)

    with coordinated(job.run_id, price=spec.cost, worst_cost=job.worst_cost) as (shared, ledger):
        run.shared = shared
        try:
            run_sync(run.execute(ledger), tick=hand_over, interval=REPORT_EVERY)
        finally:
            hand_over()
        if getattr(getattr(ledger, "_link", None), "gone", False) and not run.stats.sent:
            raise errors.InputError(  # computed again after its run ended: nothing was sent
                f"the run {job.run_id} of this ddf.llm.apply result has ended: its answers are in the "
                "cache file. Call ddf.llm.apply again (cached rows are not paid twice), or persist() "
                "the result to compute it once")
    out = pdf.copy()
    for name, column in chat_columns(run, Naming(job.output, None, job.usage)).items():
        out[name] = column
    known_cost = sum(spec.cost(reply_of(rec).usage) for rec in known.values())
    get_worker().log_event(topic(job.run_id), summary(run, number, len(known), known_cost, began))
    fatal = raised_stop(run.stop_error, out, run.report)
    if fatal is not None:
        raise Ended(fatal)
    return out


def summary(run: PartitionRun, number: int | None, known: int, known_cost: float,
            began: float) -> dict[str, Any]:
    """The partition's figures, for the driver's report (plain values). ``known``: rows the
    coordinator answered (paid in this run by another partition, or by this one before its
    worker died), counted by the run as cached; ``began``: when the task started (epoch s)."""
    r, s = run.report, run.stats
    history = run.partition_store.history
    return {
        "partition": number, "began": began, "ended": time.time(), "rows": r.rows, "requests": r.requests, "duplicates": r.duplicates,
        "skipped": r.skipped, "cached": r.cached, "known": known,
        "known_cost": known_cost, "too_long": r.too_long,
        "truncated": r.truncated, "answered_rows": r.answered_rows, "failed_rows": r.failed_rows,
        "not_sent": r.not_sent, "saved_by_cache": r.saved_by_cache, "saved_by_dedup": r.saved_by_dedup,
        "answered_requests": s.done, "failed_requests": s.failed, "retrying": s.retrying,
        "errors": dict(s.errors.most_common(10)), "stop_reason": s.stop_reason,
        "failed_by": dict(r.failed_by), "not_sent_by": dict(r.not_sent_by), "stop_kind": r.stop_kind,
        "unsent_requests": r.unsent_requests,
        "warnings": list(r.warnings),
        "history": None if history is None else [history.requests, history.input_tokens,
                                                 history.estimated_input_tokens, history.output_tokens,
                                                 history.latency_total],
    }


def plan_partition(pdf: pd.DataFrame, job: PartJob) -> dict[str, Any]:
    """What the partition would send (nothing is sent): the counts an estimate is built from."""
    spec = job.spec(pdf.columns)
    run = PartitionRun(spec, row_source(pdf, spec.template.fields), len(pdf), PartitionStore(hits_of(job)))
    run._open_store()
    counts = [r.est_input_tokens for r in run._requests()]
    r = run.report
    return {"rows": r.rows, "duplicates": r.duplicates, "cached": r.cached, "skipped": r.skipped,
            "too_long": r.too_long, "input_counts": counts, "saved_by_cache": r.saved_by_cache}
