"""A batch run's jobs once they exist at the provider: polled (backing off) until they end,
cancelled on a user's cancel, their results downloaded and handed to their rows, and every
request's outcome settled (the budget ledger, the stats, ``on_done``). ``JobCollector`` is the
batch runner's half that waits; ``batch.py`` holds the half that gets requests into jobs.

A job is marked collected in the store only once every result has been read (``flush`` hands
the answers to the writer first, so the flag reaches the file after them): a download cut
short is read again by the next run, never paid again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic

from ..core import errors
from ..core.budget import Ledger
from ..core.types import BATCH_COUNTS, BatchInfo, Reply, Request
from ..providers.base import BatchOutcome, Provider
from ..store.db import Store
from ..store.spool import Spool, Spooled
from ..transport.engine import EngineStats, OnDone, RetryPolicy
from ..transport.http import BatchClient as _HTTP

MAX_POLL_INTERVAL = 300.0
MAX_POLL_FAILURES = 20  # consecutive polls that failed before a job is given up (it stays open)
CANCEL_WAIT = 60.0  # after cancelling jobs, how long the polls go on to collect what they answered
RESULT_CHUNK = 500  # result lines matched to their rows together


@dataclass
class BatchJob:
    """One batch job this run waits for: its status at the provider and what is left of it."""

    info: BatchInfo
    pending: int  # this run's requests in the job not yet answered
    keys: frozenset[str] | None = None  # an earlier run's job: every key in it (None: all ours)
    attached: bool = False
    poll_failures: int = 0
    finished: bool = False  # collected, or given up for this run
    submitted_at: float = field(default_factory=monotonic)


class JobCollector:
    """Wait for a run's batch jobs and collect them; ``stop()`` ends the waiting. The
    attributes below are set by :class:`~llmbatch_pd.runs.batch.BatchRunner`."""

    provider: Provider
    on_done: OnDone
    stats: EngineStats
    store: Store | None
    ledger: Ledger | None
    poll_interval: float
    max_poll_interval: float
    retry: RetryPolicy
    on_warning: Callable[[str], None] | None
    cancel_wait: float
    flush: Callable[[], None] | None
    spool: Spool | None
    jobs: list[BatchJob]
    _stop: errors.ProviderError | None
    _cancel_jobs: bool  # stop() from a user's cancel: cancel the jobs too
    _cancel_until: float | None  # set once the cancels are sent
    _loop: asyncio.AbstractEventLoop | None
    _wake: asyncio.Event | None

    # control -------------------------------------------------------------------------------

    def stop(self, reason: errors.ProviderError, *, cancel_jobs: bool = False) -> None:
        """Stop submitting and waiting (from the loop's thread; ``call_soon_threadsafe`` from
        others). With ``cancel_jobs`` (a user's cancel) the jobs already submitted are
        cancelled at the provider, and what they answered before is still collected; without
        (a fatal error) they keep running, and the same call run again collects them."""
        if self._stop is None:
            self._stop = reason
            self.stats.stop_reason = str(reason)
        self._cancel_jobs |= cancel_jobs
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    @property
    def stopped(self) -> errors.ProviderError | None:
        return self._stop

    # polling and collecting ------------------------------------------------------------------

    async def _poll(self, http: _HTTP) -> None:
        interval = self.poll_interval
        while True:
            active = [j for j in self.jobs if not j.finished]
            if not active:
                break
            if self._stop is not None:
                if self._cancel_jobs and self._cancel_until is None:
                    await self._cancel(http, active)
                if self._cancel_until is None or monotonic() >= self._cancel_until:
                    self._give_up_waiting(f"not collected: {self._stop}")
                    break
            changed = False
            for job in active:
                if not job.info.ended:
                    changed |= await self._refresh(http, job)
                if job.info.ended and not job.finished:
                    await self._collect(http, job)
                    changed = True
                self._update_stats()
                if self._stop is not None and self._cancel_until is None:
                    break
            if all(j.finished for j in self.jobs):
                break
            if self._cancel_until is not None:  # cancelled: look often, the wait is short
                interval = min(self.poll_interval, self.cancel_wait / 6)
            else:
                interval = self.poll_interval if changed else min(interval * 1.5, self.max_poll_interval)
            assert self._wake is not None
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except TimeoutError:
                pass
            self._wake.clear()
        self._update_stats()

    async def _cancel(self, http: _HTTP, active: list[BatchJob]) -> None:
        """A user's cancel: say so, then cancel the jobs still running at the provider. Their
        answers so far were paid for: the polls go on a while to collect them."""
        running = [j for j in active if not j.info.ended]
        self._cancel_until = monotonic() + self.cancel_wait
        if not running:
            return
        ids = ", ".join(j.info.id for j in running)
        self._warn(f"{self._stop}: cancelling {len(running)} batch job(s) at the provider ({ids}); "
                   "the answers they already gave are still collected and cached")
        for job in running:
            try:
                job.info = await self.provider.cancel_batch(http, job.info.id)
            except errors.ProviderError as exc:  # ended meanwhile (409), or unreachable
                self._warn(f"batch {job.info.id} could not be cancelled: {exc}")
            else:
                self._set_status(job.info.id, job.info.status)

    async def _refresh(self, http: _HTTP, job: BatchJob) -> bool:
        """Ask the provider how the job is doing; True if anything changed."""
        try:
            info = await self.provider.get_batch(http, job.info.id)
        except errors.ProviderError as exc:
            job.poll_failures += 1
            if exc.fatal:
                self.stop(exc)
            elif not exc.retryable or job.poll_failures >= MAX_POLL_FAILURES:
                self._warn(f"batch {job.info.id} could not be read ({exc}); its rows are left "
                           "unanswered and the same call run again tries it again")
                self._abandon(job, errors.RowError(
                    f"batch {job.info.id} could not be read: {exc}; run the same call again to "
                    "collect it", kind=exc.kind))
            return False
        job.poll_failures = 0
        changed = (info.status, info.counts) != (job.info.status, job.info.counts)
        job.info = info
        if changed:
            self._set_status(info.id, info.status)
        return changed

    async def _collect(self, http: _HTTP, job: BatchJob) -> None:
        """Read every result of an ended job; mark it collected once all were read."""
        attempt = 0  # whole downloads tried again (each call inside follows transport's rules)
        spool, job_id = self.spool, job.info.id
        while True:
            lines: list[BatchOutcome] = []
            try:
                async for outcome in self.provider.batch_results(http, job.info):
                    lines.append(outcome)
                    if len(lines) >= RESULT_CHUNK:
                        self._take(job, lines)
                        lines = []
                self._take(job, lines)
                break
            except errors.ProviderError as exc:
                self._take(job, lines)  # what was read before the download broke counts
                if exc.retryable and attempt < self.retry.max_retries and self._stop is None:
                    # a download may take minutes: count the tries, not the time since the first
                    await asyncio.sleep(self.retry.delay(attempt, exc.retry_after))
                    attempt += 1
                    continue
                self._warn(f"the results of batch {job_id} could not be downloaded ({exc}); "
                           "the same call run again tries again")
                self._abandon(job, errors.RowError(
                    f"the results of batch {job_id} could not be downloaded: {exc}", kind=exc.kind))
                return
        info = job.info
        left = spool.waiting(job_id)
        if left:  # no line for them: the job failed, expired or was cancelled first
            kind = {"expired": "expired", "cancelled": "cancelled", "canceled": "cancelled"}.get(info.status, "batch")
            why = f": {info.error}" if info.error else ""
            missing = errors.RowError(
                f"no result in batch {info.id} (status {info.status}{why}); "
                "run the same call again to submit this row again", kind=kind)
            self._fail_all(left, missing)
        job.pending = 0
        job.finished = True
        if self.flush is not None:
            self.flush()  # the answers first, then (behind them on the writer) the flag
        self._set_status(info.id, info.status, collected=True)

    def _take(self, job: BatchJob, lines: list[BatchOutcome]) -> None:
        """Hand a chunk of a job's result lines to their rows (each row once)."""
        spool, job_id = self.spool, job.info.id
        found = spool.lookup([key for key, _, _ in lines])
        for key, reply, exc in lines:
            item = found.get(key)
            if item is not None and item.job == job_id:
                if not spool.done[item.seq]:
                    job.pending -= 1
                    self._finish_spooled(item, reply, exc)
            elif reply is not None and job.keys is not None and key in job.keys:
                self._cache(key, reply)  # not this run's row, but paid for: keep it

    # outcomes --------------------------------------------------------------------------------

    def _finish_spooled(self, item: Spooled, reply: Reply | None, exc: errors.ProviderError | None,
                        uncertain: bool = False, counted: bool = True) -> None:
        self.spool.done[item.seq] = 1
        self._finish(item.request(), reply, exc, item.worst, uncertain, counted)

    def _finish(self, request: Request, reply: Reply | None, exc: errors.ProviderError | None,
                worst: float | None, uncertain: bool = False, counted: bool = True) -> None:
        """One request's outcome; ``worst`` is what it holds in the ledger (None: nothing).
        ``counted``: its error goes in the errors by kind (not for rows merely left unsent)."""
        stats, ledger = self.stats, self.ledger
        if reply is not None:
            stats.done += 1
            stats.input_tokens += reply.usage.input_tokens
            stats.output_tokens += reply.usage.output_tokens
            if ledger is not None and worst is not None:
                stats.cost += ledger.settle(worst, reply.usage)
                if note := ledger.crossed_warning():
                    self._warn(note)
        else:
            if exc is None:
                exc = errors.RowError("no answer")
            stats.failed += 1
            if counted:
                stats.by_kind[exc.kind] += 1
                stats.note_error(exc)
            if ledger is not None and worst is not None:
                if uncertain:
                    ledger.keep_uncertain(worst)
                else:
                    ledger.settle(worst, None)
        self.on_done(request, reply, exc)

    def _fail_all(self, items: list[Spooled], exc: errors.ProviderError, uncertain: bool = False,
                  counted: bool = True) -> None:
        for item in items:
            self._finish_spooled(item, None, exc, uncertain, counted)

    def _abandon(self, job: BatchJob, exc: errors.ProviderError, counted: bool = True) -> None:
        """Stop waiting for a job this run; it stays open in the store for the next run."""
        self._fail_all(self.spool.waiting(job.info.id), exc, uncertain=True, counted=counted)
        job.pending = 0
        job.finished = True

    def _give_up_waiting(self, why: str) -> None:
        for job in self.jobs:
            if not job.finished and job.pending:
                where = ("is being cancelled at the provider: the same call run again collects "
                         "what it answered before the cancel" if self._cancel_until is not None
                         else "keeps running at the provider: run the same call again to collect "
                         "its answers (they are not paid twice)")
                self._abandon(job, errors.RowError(f"{why}; batch {job.info.id} {where}",
                                                   kind="cancelled"), counted=False)
        self._update_stats()

    def _not_sent(self) -> errors.NotSent:
        stop = self._stop
        return errors.NotSent(stop, kind=stop.kind if stop else None)

    def _cache(self, key: str, reply: Reply) -> None:
        # Vectors are cached per input text by the embeddings run, which this key is not.
        if self.store is None or reply.text is None or reply.vectors is not None:
            return
        self.store.put_later([(key, self.provider.model, reply)])

    def _set_status(self, batch_id: str, status: str, collected: bool = False) -> None:
        if self.store is None:
            return
        self.store.set_batch_status_later(batch_id, status, collected=collected)

    def _warn(self, message: str) -> None:
        if self.on_warning is not None:
            self.on_warning(message)

    def _update_stats(self) -> None:
        stats = self.stats
        stats.in_flight = sum(j.pending for j in self.jobs if not j.finished)
        if not self.jobs:
            return
        totals: Counter[str] = Counter({name: 0 for name in BATCH_COUNTS})
        for job in self.jobs:
            totals.update(job.info.counts)
        stats.batch_counts = {name: totals[name] for name in BATCH_COUNTS}
        stats.batch_status = summarize([j.info.status for j in self.jobs])


def summarize(statuses: list[str]) -> str:
    """One job: its status. Several: "completed 2, in_progress 1" (most common first)."""
    counts = Counter(statuses)
    if len(counts) == 1:
        (status, n), = counts.items()
        return status if n == 1 else f"{status} ({n} jobs)"
    return ", ".join(f"{status} {n}" for status, n in counts.most_common())
