"""What a chat run and an embeddings run share, written once: the report they fill, how a
unit of work (a chat row, a unique embeddings input) fails and is counted, "not sent" told
apart from "failed" by its type (``errors.NotSent``), the unfinished closed with a reason at
the end, answers handed to the cache once per loop iteration, warnings, the engine or batch
runner that sends, and cancelling it. No pandas here.

A subclass says what its units are (``_unfinished``, ``_fail``), what an answer does
(``_on_done``) and how its answers are written (``_write``).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core import errors
from ..core.budget import Ledger
from ..core.report import RunReport
from ..core.types import Reply, Request
from ..store.db import Store
from ..transport.breaker import CircuitBreaker
from ..transport.limits import RateLimiter
from .spec import SendSpec

if TYPE_CHECKING:  # aiohttp loads on the first run (~200 ms of import)
    from ..transport.engine import Engine
    from .batch import BatchRunner

@dataclass
class Shared:
    """Pacing and the breaker shared with other runs (the Dask coordinator's, shared by every
    worker of a cluster). Set ``BaseRun.shared`` before the run starts; without it a run
    builds its own from the spec's ``rpm``/``tpm``. The budget is shared through the ledger
    passed to ``execute``."""

    limiter: RateLimiter | None = None
    breaker: CircuitBreaker | None = None
    on_engine: Callable[[Engine], None] | None = None  # told the engine once it is built


RowValues = Callable[[], Iterable[Mapping[str, Any]]]
"""Called (once per walk) for the rows' field values, one mapping per row."""

INTERRUPTED = errors.RowError("cancelled: the run was interrupted before this row finished",
                              kind="cancelled")
"""Why a row has no answer after a kernel interrupt (Ctrl+C, a cancelled task)."""


class BaseRun:
    """One run over ``n`` rows whose field values come from ``row_values()``; ``spec``
    decides what is sent and how (a ``RunSpec`` or an ``EmbedSpec``)."""

    def __init__(self, spec: SendSpec, row_values: RowValues, n: int) -> None:
        self.spec = spec
        self.row_values = row_values
        self.n = n
        self.report = RunReport(model=spec.model.full, rows=n, budget=spec.budget, mode=spec.mode,
                                priced=spec.price is not None)
        self.stats = self.report.stats
        self.engine: Engine | None = None
        self.batcher: BatchRunner | None = None
        self.store: Store | None = None
        self.warnings_shown_elsewhere = False  # the notebook panel shows them in place
        self.shared = Shared()
        self._unsaved: list = []

    # what a subclass supplies ----------------------------------------------------------------

    def _on_done(self, request: Request, reply: Reply | None, exc: errors.ProviderError | None) -> None:
        """One request's outcome, from the engine or the batch runner."""
        raise NotImplementedError

    def _unfinished(self) -> Iterator[int]:
        """The units (rows, unique inputs) with neither an answer nor an error yet."""
        raise NotImplementedError

    def _fail(self, unit: int, message: str | None, unsent: bool = False) -> None:
        """``unit`` ends without an answer: ``message`` says why; ``unsent``: it was never
        sent because the run stopped first (counted as not sent, apart from the failures)."""
        raise NotImplementedError

    def _write(self, items: list) -> None:
        """Hand answers to the cache file (``self.store``)."""
        raise NotImplementedError

    def _walk_rest(self, reason: errors.ProviderError) -> None:
        """Before the unfinished are closed: units not yet looked at get their own outcome."""

    # outcomes ---------------------------------------------------------------------------------

    def _fail_with(self, unit: int, exc: errors.ProviderError) -> None:
        self._fail(unit, str(exc), isinstance(exc, errors.NotSent))

    def _close_unfinished(self, reason: errors.ProviderError, walk: bool = True) -> None:
        """Every row ends with an answer or an explicit error. ``walk``: first walk the units
        not yet looked at (a run stopped, or never started), so each keeps its own reason."""
        if walk:
            self._walk_rest(reason)
        message, unsent = str(reason), isinstance(reason, errors.NotSent)
        for unit in self._unfinished():
            self._fail(unit, message, unsent)

    def close_unsent(self, why: str) -> None:
        """Close every unfinished row as not sent, ``why`` saying why (a job cancelled before
        it started, a pilot that stopped the run)."""
        self._close_unfinished(errors.NotSent(why))

    def _not_sent(self) -> errors.NotSent:
        """Why the rows left at the end were not sent."""
        return errors.NotSent(self.stats.stop_reason or "the run ended first")

    def _warn(self, message: str) -> None:
        self.report.warnings.append(message)
        if not self.warnings_shown_elsewhere:
            warnings.warn(message, stacklevel=2)

    # saving -----------------------------------------------------------------------------------

    def _keep(self, item: Any) -> None:
        """An answer for the cache: written at the end of this loop iteration together with
        every other answer that arrived in it (one commit per batch, not one per answer)."""
        if not self._unsaved:
            asyncio.get_running_loop().call_soon(self._save)
        self._unsaved.append(item)

    def _save(self) -> None:
        items, self._unsaved = self._unsaved, []
        if items and self.store is not None:
            self._write(items)

    def _close_store(self) -> None:
        self._save()
        if self.store is not None:
            self.store.close()
            self.store = None

    def _end(self) -> None:
        """After sending, however it ended: the answers saved, the cache file closed."""
        self._close_store()

    # sending ----------------------------------------------------------------------------------

    def _start(self, ledger: Ledger | None, *, batch: dict[str, Any] | None = None,
               engine: dict[str, Any] | None = None) -> None:
        """The batch runner (``mode="batch"``) or the engine that sends this run's requests;
        ``batch`` and ``engine``: options only one kind of run has."""
        from ..transport.engine import Engine, RetryPolicy  # the HTTP stack loads on the first run

        spec = self.spec
        common = {"ledger": ledger, "worst_cost": spec.worst_cost, "timeout": spec.timeout,
                  "retry": RetryPolicy(max_retries=spec.max_retries), "stats": self.stats,
                  "on_warning": self._warn}
        if spec.batch:
            from .batch import BatchRunner

            self.batcher = BatchRunner(spec.provider, on_done=self._on_done, store=self.store,
                                       poll_interval=spec.poll_interval, flush=self._save,
                                       **common, **(batch or {}))
        else:
            self.engine = Engine(spec.provider, concurrency=spec.concurrency,
                                 limiter=self.shared.limiter or RateLimiter(spec.rpm, spec.tpm),
                                 breaker=self.shared.breaker or CircuitBreaker(),
                                 **common, **(engine or {}))
            if self.shared.on_engine is not None:
                self.shared.on_engine(self.engine)

    async def _send(self, requests: Iterable[Request]) -> None:
        """Send ``requests`` (through batch jobs in batch mode) until done or stopped; then
        every unit ends with an answer or the reason it has none."""
        try:
            if self.batcher is not None:
                await self.batcher.run(requests)
            else:
                assert self.engine is not None
                await self.engine.run(requests, self._on_done)
            self._close_unfinished(self._not_sent())  # after a stop: cached and NA rows still say so
        except asyncio.CancelledError:
            self.report.interrupted = True
            self._close_unfinished(INTERRUPTED, walk=False)
            raise
        finally:
            self._end()

    @property
    def stop_error(self) -> errors.ProviderError | None:
        """Why the run stopped early (the engine's or the batch runner's stop), or None. A
        ``FatalError`` here (bad key, no quota, provider down) is raised to the caller."""
        for part in (self.engine, self.batcher):
            if part is not None and part.stopped is not None:
                return part.stopped
        return None

    def cancel(self, reason: str = "cancelled") -> None:
        """Send nothing more (a Cancel button); requests in flight finish and are kept.
        In batch mode the submitted jobs are cancelled at the provider (after a warning naming
        them) and what they answered before is still collected. A kernel interrupt instead
        leaves them running, for the same call run again to collect."""
        if self.engine is not None:
            self.engine.stop(errors.RowError(reason, kind="cancelled"))
        if self.batcher is not None:
            self.batcher.stop(errors.RowError(reason, kind="cancelled"), cancel_jobs=True)
