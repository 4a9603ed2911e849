"""Batch jobs (``mode="batch"``): the same requests at half price, answered within 24 hours.

The requests after rendering, de-duplication and the cache (``Run._requests()``) are split
into jobs no larger than the provider allows, each job is submitted once, polled until it
ends, and its results are handed to ``on_done`` (which writes them to the cache) as they are
downloaded. No pandas here; the provider supplies the wire format, ``transport.http`` the
session, the sending and the retries, this module the submitting and the bookkeeping, and
``batch_collect`` the polling and the collecting.

Never pay twice:

- A job is recorded in the store (``Store.add_batch_later``: on the cache's writer thread,
  so a file another process has locked never stalls the loop) the moment the provider has
  created it, with the keys of its requests. A run that finds a job still open for some of its
  requests (same endpoint, same model, same keys: the same call after a kernel restart)
  re-attaches to it instead of submitting those requests again. Creating a job and
  recording it is shielded from Ctrl+C.
- Where the API keeps labels (OpenAI's batch ``metadata``), each job carries a digest of its
  request keys, and before submitting, the runner asks the provider for a job with that
  label: a job the cache never recorded (a SIGKILL between the provider's answer and the
  SQLite write, a create that timed out after it went through, a run with ``cache=False``)
  is collected instead of paid for again. Anthropic's message batches have no labels, so
  there only the cache's record protects.
- Results go to the cache as they are downloaded; a job is marked collected only once every
  result has been read, so a download cut short is read again by the next run. The flag is
  queued on the writer behind the answers (``flush`` hands them over first), so it reaches
  the file with or after them, never before: a crash in between leaves the job open, and
  the next run downloads it again rather than paying again. Results of an
  attached job that this run does not need (a re-run on fewer rows) are cached too: they
  were paid for.
- Requests that failed or expired are not cached, so the same ``apply`` run again submits a
  new job for exactly those rows.

A job's cost cannot be capped part-way once submitted, so the budget must hold the worst case
of every request (at batch prices) before anything is sent; otherwise ``BudgetError``.

Cancelling: a user's cancel (``Job.cancel()``, the panel's Cancel, ``Run.cancel``) cancels the
submitted jobs at the provider, after a warning naming them, and keeps polling a while
(``CANCEL_WAIT``) to collect what they answered before the cancel (paid for). A kernel
interrupt (Ctrl+C, a cancelled task) only stops waiting: the jobs keep running and the same
call run again collects them, so an interrupt never throws away work that is being paid for.

The requests are not held in memory: they stream into a temporary file (``spool.py``) while
the rows are rendered, and each job's lines are read back from it when it is submitted.

This module gets the requests into jobs (spooling, re-attaching, reserving, submitting);
``batch_collect.py`` waits for the jobs and collects their results.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from time import monotonic

from ..core import defaults, errors
from ..core.budget import Ledger
from ..core.numbers import money
from ..core.types import BatchInfo, Request
from ..planning.batch_gate import Party
from ..providers.base import Provider
from ..store.db import Store, keys_digest
from ..store.spool import Spool, Spooled
from ..transport.engine import EngineStats, OnDone, RetryPolicy, WorstCost
from ..transport.http import BatchClient as _HTTP
from ..transport.http import Session, open_session
from .batch_collect import CANCEL_WAIT, MAX_POLL_INTERVAL, BatchJob, JobCollector

ENVELOPE_BYTES = 4096  # room for the multipart / JSON wrapping around the lines
SPOOL_YIELD = 2048  # requests spooled between two turns of the event loop
OnDuplicate = Callable[[Request, int], None]
"""(request, row of the earlier request with the same key): one line, its answer shared."""


class BatchRunner(JobCollector):
    """Submit, poll and collect one run's batch jobs. ``stop()`` ends the waiting."""

    def __init__(
        self,
        provider: Provider,
        *,
        on_done: OnDone,
        on_duplicate: OnDuplicate | None = None,
        stats: EngineStats | None = None,
        store: Store | None = None,
        ledger: Ledger | None = None,
        worst_cost: WorstCost | None = None,
        poll_interval: float = defaults.POLL_INTERVAL,
        max_poll_interval: float | None = None,
        max_requests: int | None = None,
        max_bytes: int | None = None,
        max_inputs: int | None = None,
        timeout: float = defaults.TIMEOUT,
        retry: RetryPolicy | None = None,
        on_warning: Callable[[str], None] | None = None,
        session: Session | None = None,
        cancel_wait: float = CANCEL_WAIT,
        flush: Callable[[], None] | None = None,
        gate: Party | None = None,
    ) -> None:
        if not provider.supports_batch:
            raise errors.InputError(f"{provider.name} at {provider.base_url} has no batch API")
        if not poll_interval or poll_interval <= 0:
            raise errors.InputError(f"poll_interval= must be a positive number of seconds, not {poll_interval!r}")
        self.provider = provider
        self.on_done = on_done
        self.on_duplicate = on_duplicate
        self.stats = stats or EngineStats()
        self.store = store
        self.ledger = ledger
        self.worst_cost = worst_cost
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = max_poll_interval or max(
            self.poll_interval, min(10 * self.poll_interval, MAX_POLL_INTERVAL))
        self.max_requests = max_requests or provider.max_batch_requests
        self.max_bytes = max_bytes or provider.max_batch_bytes
        # A cap on what the requests carry rather than on their number (OpenAI: 50,000
        # embedding inputs per job); providers without one weigh nothing.
        self.max_inputs = max_inputs or provider.max_batch_inputs
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.on_warning = on_warning
        self.cancel_wait = cancel_wait
        # ``flush``: hands the answers given to ``on_done`` to the store's writer now, so a
        # job's collected flag, queued on the same writer next, reaches the file after them.
        self.flush = flush
        self.gate = gate  # model=[...]: nobody submits until every model's worst case is reserved
        self._session = session
        self._stop: errors.ProviderError | None = None
        self._cancel_jobs = False  # stop() from a user's cancel: cancel the jobs too
        self._cancel_until: float | None = None  # set once the cancels are sent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self.spool: Spool | None = None
        self.jobs: list[BatchJob] = []

    def __repr__(self) -> str:
        return (f"BatchRunner({self.provider!r}, jobs={[j.info.id for j in self.jobs]}, "
                f"status={self.stats.batch_status!r})")

    # the run -------------------------------------------------------------------------------

    async def run(self, requests: Iterable[Request]) -> None:
        """Answer every request through batch jobs (until stopped), reporting each to
        ``on_done``. The requests stream into a temporary file (``spool.py``), not memory.
        Raises BudgetError, before anything is sent, if the worst case of the jobs does not
        fit the budget."""
        stats = self.stats
        stats.started = stats.started or monotonic()
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        owns_session = self._session is None
        if owns_session:
            self._session = open_session()
        http = _HTTP(self.provider, self._session, self.timeout, self.retry)
        self.spool = Spool()
        gate, self.gate = self.gate, None
        try:
            stats.batch_status = "preparing"
            await self._fill(requests)
            if not self.spool.count:
                stats.batch_status = None
                return
            self.jobs = await self._attach(http)
            self._reserve()
            if gate is not None:
                gate, passing = None, gate
                await passing.passed()
            await self._submit_all(http)
            self._update_stats()
            await self._poll(http)
        except BaseException as exc:
            if gate is not None:  # failed before the gate (a budget refusal): nobody submits
                gate.leave(failed=True)
                gate = None
            if isinstance(exc, asyncio.CancelledError):
                self._give_up_waiting("cancelled: the run was interrupted")
            raise
        finally:
            if gate is not None:  # nothing to send: the other models need not wait for it
                gate.leave()
            stats.finished = monotonic()
            stats.in_flight = 0
            self.spool.close()
            if owns_session and self._session is not None:
                await self._session.close()
                self._session = None

    async def _fill(self, requests: Iterable[Request]) -> None:
        """Spool every request (a chunk at a time, letting the loop breathe in between);
        a request too large for any job fails at once, a repeated key joins its first."""
        room = max(1, self.max_bytes - ENVELOPE_BYTES)
        spool = self.spool
        for n, request in enumerate(requests, 1):
            line = self.provider.batch_line(request)
            if len(line) + 1 > room:
                self._finish(request, None, errors.RowError(
                    f"this request is {(len(line) + 1) / 1e6:.1f} MB, more than a batch job can "
                    f"carry ({self.max_bytes / 1e6:.0f} MB): not sent", kind="too large"), None)
            else:
                worst = self.worst_cost(request) if self.worst_cost is not None else 0.0
                weight = self.provider.batch_inputs(request) if self.max_inputs else 0
                leader = spool.add(request, line, worst, weight)
                if leader is not None:  # the same prompt as an earlier row: one line, one answer
                    if self.on_duplicate is None:
                        raise RuntimeError(f"request key {request.key} twice and no on_duplicate")
                    self.on_duplicate(request, leader)
            if n % SPOOL_YIELD == 0:
                await asyncio.sleep(0)
        spool.seal()

    # re-attaching to jobs recorded by an earlier run -----------------------------------------

    async def _attach(self, http: _HTTP) -> list[BatchJob]:
        if self.store is None:
            return []
        p, spool = self.provider, self.spool
        try:
            records = self.store.open_batches(p.endpoint, p.model)
        except sqlite3.Error as exc:
            self._warn(f"could not read the batch jobs recorded in the cache: {exc}")
            return []
        jobs: list[BatchJob] = []
        for record in records:
            mine = spool.claim(record.keys, record.id)
            if not mine:
                continue
            try:
                info = await p.get_batch(http, record.id)
            except errors.ProviderError as exc:
                if exc.fatal:
                    spool.release(record.id)
                    self.stop(exc)
                    return jobs
                if exc.retryable:  # the provider is briefly unwell: the polls will retry
                    info = BatchInfo(id=record.id, status=record.status)
                else:  # gone (404: another account, deleted): submit those requests again
                    self._warn(f"batch {record.id} recorded in the cache cannot be read ({exc}); "
                               "its requests are submitted again")
                    self._set_status(record.id, f"unreadable: {exc}"[:200], collected=True)
                    spool.release(record.id)
                    continue
            jobs.append(BatchJob(info, mine, frozenset(record.keys), attached=True))
            self.stats.batch_ids.append(record.id)
        return jobs

    # budget ----------------------------------------------------------------------------------

    def _reserve(self) -> None:
        """Reserve the worst case of every request at once: a job cannot be stopped part-way."""
        ledger, spool = self.ledger, self.spool
        if ledger is None:
            return
        total = spool.total_worst()
        if ledger.try_reserve(total):
            ledger.holds += spool.count - 1  # one hold per request, settled one by one
            return
        attached = sum(j.pending for j in self.jobs)
        new = spool.count - attached
        caps = spool.output_caps()
        cap = f"{caps[0]:,}" if len(caps) == 1 else "max_tokens"
        tokens = "input tokens only" if cap == "0" else f"input plus {cap} output tokens each"  # 0: embeddings
        raise errors.BudgetError(
            f"not started: a batch job cannot be stopped part-way, so its worst case must fit "
            f"the budget before it is sent. {spool.count:,} requests"
            + (f" ({new:,} new, {attached:,} in jobs already running)" if attached else "")
            + f" could cost up to {money(total)} at batch prices ({tokens}), and "
            f"{money(ledger.committed)} is already committed of the {money(ledger.limit)} budget. "
            + ("Raise budget= or use fewer rows." if cap == "0"
               else "Raise budget=, lower max_tokens=, or use fewer rows.")
        )

    # submitting ------------------------------------------------------------------------------

    async def _submit_all(self, http: _HTTP) -> None:
        """Jobs of at most ``max_requests`` requests, ``max_bytes`` bytes and, where the
        provider caps them, ``max_inputs`` inputs, read back from the spool one at a time."""
        chunk: list[tuple[Spooled, bytes]] = []
        size = inputs = 0
        room = max(1, self.max_bytes - ENVELOPE_BYTES)
        for item, line, weight in self.spool.unassigned():
            n = len(line) + 1
            if chunk and (len(chunk) >= self.max_requests or size + n > room
                          or (self.max_inputs and inputs + weight > self.max_inputs)):
                await self._submit_or_drop(http, chunk)
                chunk, size, inputs = [], 0, 0
            chunk.append((item, line))
            size += n
            inputs += weight
        if chunk:
            await self._submit_or_drop(http, chunk)

    async def _submit_or_drop(self, http: _HTTP, chunk: list[tuple[Spooled, bytes]]) -> None:
        if self._stop is not None:
            self._fail_all([s for s, _ in chunk], self._not_sent(), counted=False)
        else:
            await self._submit(http, chunk)  # the job joins self.jobs

    async def _submit(self, http: _HTTP, chunk: list[tuple[Spooled, bytes]]) -> BatchJob | None:
        items = [s for s, _ in chunk]
        tag = keys_digest(s.key for s in items)
        found = await self._find(http, tag)
        if found is not None:  # submitted before, but never recorded here: collect that one
            return self._add_job(found, items, attached=True)
        self.stats.batch_status = "submitting"
        # Shielded: once the provider may have created the job, wait for its answer and its
        # record in the store even if the run is cancelled meanwhile.
        task = asyncio.ensure_future(self._create(http, chunk, tag))
        try:
            info = await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                try:
                    await task
                except BaseException:
                    pass
            if task.done() and not task.cancelled() and task.exception() is None:
                self._add_job(task.result(), items)
            raise
        except errors.ProviderError as exc:
            if exc.fatal:
                self.stop(exc)
            may_exist = isinstance(exc, (errors.RequestTimeout, errors.TransportError, errors.MalformedResponse))
            found = await self._find(http, tag) if may_exist and not exc.fatal else None
            if found is not None:  # the create did go through: the job is there after all
                return self._add_job(found, items, attached=True)
            reason = errors.RowError(
                f"the batch job could not be created: {exc}"
                + (" (it may exist at the provider all the same: check before running again)" if may_exist else ""),
                kind=exc.kind)
            self._fail_all(items, reason, uncertain=may_exist)
            return None
        return self._add_job(info, items)

    async def _create(self, http: _HTTP, chunk: list[tuple[Spooled, bytes]], tag: str) -> BatchInfo:
        info = await self.provider.create_batch(http, [line for _, line in chunk], tag)
        self._record(info, [s.key for s, _ in chunk])
        return info

    async def _find(self, http: _HTTP, tag: str) -> BatchInfo | None:
        """A job for exactly these requests that the provider has and the cache does not."""
        try:
            return await self.provider.find_batch(http, tag)
        except errors.ProviderError as exc:
            if exc.fatal:
                self.stop(exc)
            return None  # cannot look: submitting is still right

    def _record(self, info: BatchInfo, keys: list[str]) -> None:
        if self.store is None:
            return
        p = self.provider
        # on the writer thread: a file locked by another process never stalls the loop
        self.store.add_batch_later(info.id, provider=p.name, endpoint=p.endpoint, model=p.model,
                                   keys=keys, status=info.status)

    def _add_job(self, info: BatchInfo, items: list[Spooled], attached: bool = False) -> BatchJob:
        if attached:  # found at the provider: record it, as a job created here would be
            self._record(info, [s.key for s in items])
        self.spool.assign([s.seq for s in items], info.id)
        job = BatchJob(info, len(items), attached=attached)
        self.stats.sent += 0 if attached else len(items)
        self.stats.batch_ids.append(info.id)
        self.jobs.append(job)
        return job
