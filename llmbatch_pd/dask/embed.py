"""``ddf.llm.embed`` on a worker: the pandas path's embeddings run (``runs.embed.EmbedRun``)
over one partition, paced and budgeted by the run's coordinator, as ``partition.py`` does for
chat. Its "cache" is the vectors the driver read from the cache file and those the
coordinator already holds for the run; new vectors go to the coordinator as answer records
``{"vector": [...], "tokens": n, "model": m}``, which the driver writes (``vector_rows``)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import InputError
from ..core.outcome import raised_stop
from ..core.types import Usage
from ..frames import row_source
from ..runs.embed import EmbedRun, input_key, key_prefix
from ..runs.embed_spec import EmbedSpec, build_spec
from ..store.db import Store
from ..transport.loop_thread import run_sync
from .partition import REPORT_EVERY, Ended, PartitionStore, ended_once, hits_of, topic


def vector_record(vector: np.ndarray, tokens: int, model: str) -> dict[str, Any]:
    return {"vector": np.asarray(vector, dtype="<f4").tolist(), "tokens": int(tokens), "model": model}


def vector_rows(items: Iterable[tuple[str, dict]], model: str) -> list[tuple[str, str, np.ndarray, int]]:
    """Drained vector records as ``Store.put_vectors`` rows."""
    return [(key, rec.get("model") or model, np.asarray(rec["vector"], dtype="<f4"), int(rec.get("tokens") or 0))
            for key, rec in items]


def cached_vectors(spec: EmbedSpec) -> dict[str, dict]:
    """This model's vectors in the cache file, as records (read by the driver only)."""
    if spec.cache_path is None or not Path(spec.cache_path).exists():
        return {}
    store = Store(spec.cache_path)
    try:
        rows = store.db.execute("SELECT key, dim, data, tokens FROM vectors WHERE model = ?",
                                (spec.provider.model,)).fetchall()
    finally:
        store.close()
    found = {}
    for key, dim, data, tokens in rows:
        vector = np.frombuffer(data, dtype="<f4")
        if vector.shape[0] == dim:
            found[key] = vector_record(vector, tokens, spec.provider.model)
    return found


@dataclass
class EmbedJob:
    """What an embed partition needs, picklable (options rebuilt into a spec on the worker)."""

    run_id: str
    template: str
    options: dict[str, Any]
    output: str
    worst_cost: float = 0.0
    hits: dict[str, dict] = field(default_factory=dict, repr=False)
    hits_key: str | None = None  # scattered once (``partition.share_hits``)

    def __repr__(self) -> str:  # never the options: api_key= may be among them
        return f"EmbedJob(run_id={self.run_id!r}, output={self.output!r}, hits={len(self.hits)})"

    def spec(self, columns: Any) -> EmbedSpec:
        return build_spec(self.template, list(columns), **{**self.options, "cache": False})


class VectorStore(PartitionStore):
    """The vectors cache as a partition's embeddings run sees it."""

    def put_vectors(self, items: list[tuple[str, str, np.ndarray, int]]) -> None:
        for key, model, vector, tokens in items:
            self.out.put((key, vector_record(vector, tokens, model)))


class EmbedPartitionRun(EmbedRun):
    """The embeddings run over one partition, its cache a ``VectorStore``."""

    def __init__(self, spec: EmbedSpec, rows: Any, n: int, store: VectorStore) -> None:
        super().__init__(spec, rows, n)
        self.vector_store = store
        self.known = 0

    def input_keys(self) -> list[str]:
        """Every row's input key (rendered, not sent), for the coordinator's known answers."""
        prefix = key_prefix(self.spec.provider.endpoint, self.spec.provider.model, self.spec.dimensions)
        keys = []
        for values in self.row_values():
            try:
                keys.append(input_key(prefix, self.spec.template.render(values, self.spec.missing)))
            except Exception:  # noqa: BLE001  (the run itself says why the row fails)
                continue
        return keys

    def _lookup_cache(self) -> None:
        hits = self.vector_store.hits
        for u, key in enumerate(self.keys):
            rec = hits.get(key)
            if rec is not None:
                self.found[u] = np.asarray(rec["vector"], dtype="<f4")
                self.report.cached += 1
                self.report.answered_rows += self.weight[u]
                self.report.saved_by_cache += self.spec.cost(Usage(int(rec.get("tokens") or 0)))

    async def execute(self, ledger: Any = None) -> Any:
        self.prepare()
        self.stats.total = len(self.packs)
        self.store = self.vector_store
        self._start(ledger)
        await self._send(self._requests())
        return self.report


def embed_partition(pdf: pd.DataFrame, job: EmbedJob, partition_info: dict | None = None) -> pd.Series:
    """The partition's vectors, a Series of float32 arrays on its index (None where a row failed)."""
    return ended_once(_embed, pdf, job, partition_info)


def _embed(pdf: pd.DataFrame, job: EmbedJob, number: int | None, began: float) -> pd.Series:
    from distributed import get_worker

    from .remote import coordinated, known_answers, report_answers

    spec = job.spec(pdf.columns)
    rows, n = row_source(pdf, spec.template.fields), len(pdf)
    keys = list(dict.fromkeys(EmbedPartitionRun(spec, rows, n, VectorStore({})).input_keys()))
    hits = hits_of(job)
    known = known_answers(job.run_id, [k for k in keys if k not in hits])
    store = VectorStore({**hits, **known})
    run = EmbedPartitionRun(spec, rows, n, store)

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
        matrix, ok = run.matrix(), run.has_vector()
        if getattr(getattr(ledger, "_link", None), "gone", False) and not run.stats.sent and not all(ok):
            raise InputError(  # computed again after its run ended: nothing was sent
                f"the run {job.run_id} of this ddf.llm.embed result has ended: its vectors are in the "
                "cache file. Call ddf.llm.embed again (cached texts are not paid twice), or persist() "
                "the result to compute it once")
    cells = np.empty(n, dtype=object)
    for i in range(n):
        if ok[i]:
            cells[i] = matrix[i]
    r = run.report
    # the vectors another partition paid for in this run: counted as cached by the partition's
    # run, taken off the run's saved_by_cache by the driver's fold
    known_cost = sum(spec.cost(Usage(int(rec.get("tokens") or 0))) for rec in known.values())
    errors = Counter(e for e in run.row_errors() if e is not None)
    get_worker().log_event(topic(job.run_id), {
        "partition": number, "began": began, "ended": time.time(),
        "rows": n, "requests": len(run.texts), "duplicates": r.duplicates, "skipped": r.skipped,
        "cached": r.cached, "known": len(known), "known_cost": known_cost, "answered_rows": r.answered_rows,
        "failed_rows": r.failed_rows, "not_sent": r.not_sent, "saved_by_cache": r.saved_by_cache,
        "answered_requests": run.stats.done, "failed_requests": run.stats.failed,
        "errors": dict(errors.most_common(10)), "stop_reason": run.stats.stop_reason,
        "failed_by": dict(r.failed_by), "not_sent_by": dict(r.not_sent_by), "stop_kind": r.stop_kind,
        "unsent_requests": r.unsent_requests,
        "warnings": list(r.warnings), "history": None})
    out = pd.Series(cells, index=pdf.index, name=job.output, dtype=object)
    fatal = raised_stop(run.stop_error, out, r)
    if fatal is not None:
        raise Ended(fatal)
    return out
