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
import sqlite3
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core import errors
from ..core.budget import Ledger
from ..core.prompts import request_key
from ..core.report import RunReport
from ..core.types import Reply, Request
from ..planning.estimate import Estimate, Pilot, wall_time
from ..store.db import History, Store
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

INTERRUPTED = errors.RowError("interrupted: the run was interrupted before this row's answer "
                              "arrived (it was sent: it may be billed)", kind="interrupted")
"""Why a row that was on its way has no answer after a kernel interrupt (Ctrl+C, a cancelled
task). The rows not yet sent are "not sent" (``NOT_SENT_INTERRUPTED``), not failures."""
NOT_SENT_INTERRUPTED = errors.NotSent("the run was interrupted first", kind="interrupted")
REASONS_KEPT = 512  # error messages remembered with their kind (the rest count as "other")
MIN_ENDPOINT_HISTORY = 5  # answered requests on an endpoint before its latency times new templates


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
        self._kinds: dict[str, str] = {}  # error message -> kind, for the row accounting
        self._out: set[int] = set()  # requests handed to the engine and not yet heard back

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

    def _weight(self, unit: int) -> int:
        """How many rows ``unit`` stands for (a chat row: 1)."""
        return 1

    # outcomes ---------------------------------------------------------------------------------

    def _tally(self, unit: int, message: str | None, unsent: bool) -> None:
        """Count ``unit``'s rows as ending without an answer, under the kind of the error
        whose message this is (the run's accounting; see core/accounting.py)."""
        self.report.count_unanswered(self._weight(unit), self._kinds.get(message or ""), unsent)

    def _reason(self, exc: errors.ProviderError) -> str:
        """``exc``'s message, its kind remembered for ``_tally``."""
        message = str(exc)
        if message not in self._kinds and len(self._kinds) < REASONS_KEPT:
            self._kinds[message] = exc.kind
        if isinstance(exc, errors.NotSent) and self.report.stop_kind is None:
            self.report.stop_kind = exc.kind
        return message

    def _fail_with(self, unit: int, exc: errors.ProviderError) -> None:
        self._fail(unit, self._reason(exc), isinstance(exc, errors.NotSent))

    def _close_unfinished(self, reason: errors.ProviderError, walk: bool = True) -> None:
        """Every row ends with an answer or an explicit error. ``walk``: first walk the units
        not yet looked at (a run stopped, or never started), so each keeps its own reason."""
        if walk:
            self._walk_rest(reason)
        message, unsent = self._reason(reason), isinstance(reason, errors.NotSent)
        for unit in self._unfinished():
            self._fail(unit, message, unsent)

    def _close_interrupted(self) -> None:
        """After a kernel interrupt: the units whose request was on its way failed
        (``INTERRUPTED``: it may be billed); the others were never sent."""
        self.report.interrupted = True
        self.report.stop_kind = "interrupted"
        self.report.cut_requests = len(self._out)
        out = {u for index in self._out for u in self._units_of(index)}
        sent, unsent = self._reason(INTERRUPTED), self._reason(NOT_SENT_INTERRUPTED)
        for unit in list(self._unfinished()):
            if unit in out:
                self._fail(unit, sent, False)
            else:
                self._fail(unit, unsent, True)

    def _units_of(self, index: int) -> Iterable[int]:
        """The units a request stands for (a chat request: its row)."""
        return (index,)

    def close_unsent(self, why: str) -> None:
        """Close every unfinished row as not sent, ``why`` saying why (a job cancelled before
        it started, a pilot that stopped the run)."""
        self._close_unfinished(errors.NotSent(why))

    def _not_sent(self) -> errors.NotSent:
        """Why the rows left at the end were not sent."""
        stop = self.stop_error  # a cancel or the budget says so; any other stop is "stopped"
        kind = stop.kind if stop is not None and stop.kind in ("budget", "cancelled") else None
        return errors.NotSent(self.stats.stop_reason or "the run ended first", kind=kind)

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
        """After sending, however it ended: the answers saved, the endpoint's latency
        remembered, the cache file closed."""
        self._remember_endpoint()
        self._close_store()

    # how long a request takes on this endpoint ----------------------------------------------
    # A template's own history (runs/chat.py) times its next runs. A template never run has
    # none, and the defaults (1 s + 100 tokens at 100 tokens/s = 2 s a request) were 5x too
    # long on the notebooks' simulator and 2x too short on slow answers
    # (benchmarks/wall_time.py): what this endpoint and model measured on any template is a
    # better guess than either.

    @property
    def endpoint_key(self) -> str:
        """The cache file's history key for this endpoint and model, whatever the template."""
        provider = self.spec.provider
        return request_key(provider.endpoint, provider.model, [{"history": "endpoint"}], {"history": 1})

    def _remember_endpoint(self) -> None:
        """Fold this run's answered requests (count, tokens, summed latency, learned limits)
        into the endpoint's history (real time only: a batch job's wait is no latency)."""
        s = self.stats
        if self.store is None or self.engine is None or not s.done or not s.latency_total:
            return
        limiter = self.engine.limiter
        from_headers = limiter.learned_from == "headers"
        rpm = limiter.requests.rate * 60 if from_headers and limiter.requests.rate else None
        tpm = limiter.tokens.rate * 60 if from_headers and limiter.tokens.rate else None
        try:
            self.store.add_history_later(self.endpoint_key, History(
                s.done, s.input_tokens, 0, s.output_tokens, s.latency_total, rpm, tpm))
        except sqlite3.Error:
            pass  # a figure for the next estimate, not worth failing a run over

    def _endpoint_history(self) -> History | None:
        """The endpoint's history (the cache file must be open), or None."""
        try:
            return self.store.get_history(self.endpoint_key) if self.store is not None else None
        except sqlite3.Error:
            return None

    def _retime(self, estimate: Estimate, endpoint: History | None, pilot: Pilot | None) -> None:
        """A template with no pilot and no history of its own, on an endpoint that has
        answered before: its wall time from the endpoint's measured latency and limits."""
        if pilot is not None or endpoint is None or endpoint.requests < MIN_ENDPOINT_HISTORY:
            return
        spec, n = self.spec, estimate.to_send
        per_request = (estimate.input_tokens + estimate.output_tokens) / n if n else 0
        estimate.wall_time_s = wall_time(n, endpoint.latency_total / endpoint.requests, spec.concurrency,
                                         spec.rpm or endpoint.rpm, spec.tpm or endpoint.tpm, per_request)

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

            self.batcher = BatchRunner(spec.provider, on_done=self._heard, store=self.store,
                                       poll_interval=spec.poll_interval, flush=self._save,
                                       **common, **(batch or {}))
        else:
            self.engine = Engine(spec.provider, concurrency=spec.concurrency,
                                 limiter=self.shared.limiter or RateLimiter(spec.rpm, spec.tpm),
                                 breaker=self.shared.breaker or CircuitBreaker(),
                                 **common, **(engine or {}))
            if self.shared.on_engine is not None:
                self.shared.on_engine(self.engine)

    def _heard(self, request: Request, reply: Reply | None, exc: errors.ProviderError | None) -> None:
        """One request's outcome (``_on_done``), counted for the accounting and the rate
        series on its way: answered rows per second, requests closed unsent."""
        self._out.discard(request.index)
        if isinstance(exc, errors.NotSent):
            self.report.unsent_requests += 1
        if reply is not None:
            self.stats.note_cost()
        before = self.report.answered_rows
        self._on_done(request, reply, exc)
        if self.report.answered_rows > before:
            self.stats.note_answered(self.report.answered_rows - before)

    def _handing(self, requests: Iterable[Request]) -> Iterator[Request]:
        """``requests`` as the engine pulls them, each remembered until it is heard back."""
        for request in requests:
            self._out.add(request.index)
            yield request

    async def _send(self, requests: Iterable[Request]) -> None:
        """Send ``requests`` (through batch jobs in batch mode) until done or stopped; then
        every unit ends with an answer or the reason it has none."""
        try:
            if self.batcher is not None:
                await self.batcher.run(self._handing(requests))
            else:
                assert self.engine is not None
                await self.engine.run(self._handing(requests), self._heard)
            self._close_unfinished(self._not_sent())  # after a stop: cached and NA rows still say so
        except asyncio.CancelledError:
            self._close_interrupted()
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
