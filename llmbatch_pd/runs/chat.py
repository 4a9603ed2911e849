"""One chat run, from rows of field values to answers per row. No pandas here.

Rows stream through: render, skip rows with missing values, de-duplicate identical requests,
answer from earlier answers (a pilot's, then the cache's), flag prompts too long for the
model, and hand the rest to the engine (or the batch runner). Answers land in per-row lists as
they arrive, so an interrupted run still has every row that finished. ``plan()`` walks the
same stream without sending anything, so the estimate counts exactly what the run will send.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

from ..core import errors
from ..core.budget import Ledger
from ..core.prompts import BadText, CellError, MissingValue, build_messages, request_key
from ..core.reuse import reusable, truncation_note, truncation_warning
from ..core.types import Reply, Request, Usage
from ..planning import estimate as plan
from ..planning.pricing import prompt_cache_saving
from ..store.db import History, Store
from ..store.writer import Writer
from .base import BaseRun, RowValues, RunReport
from .spec import RunSpec

MIN_HISTORY = 5  # answered requests of a template before its history replaces the defaults
LOOKUP_CHUNK = 256  # rows rendered and looked up in the cache together
NO_USAGE = Usage()  # shared by every row that paid nothing (cached, duplicate); never mutated
FLUSH_WAIT = 1.0  # seconds a run waits at its end for answers a locked cache file holds back


class Run(BaseRun):
    """A run over ``n`` rows whose field values come from ``row_values()``."""

    spec: RunSpec

    def __init__(self, spec: RunSpec, row_values: RowValues, n: int, find_repeats: bool = False) -> None:
        super().__init__(spec, row_values, n)
        # per row: False = its prompt appears once, no dedupe entry (None: track every row).
        # With find_repeats, found from the rendered prompts when the stream is first walked
        # (a pass that pays off on big frames; a pilot's few rows just track every row).
        self.may_repeat: Any = True if find_repeats else None
        self.answers: list[str | None] = [None] * n
        self.errors: list[str | None] = [None] * n
        self.unsent = bytearray(n)  # per row: 1 = never sent, the run stopped first
        self.usages: list[Usage | None] = [None] * n
        self.keep_usage = True  # per-row usage for usage=True; off, only what dedup needs
        self._followers: dict[int, list[int]] = {}
        self.batch_gate = None  # model=[...] in batch mode: see planning/batch_gate.py
        self.keep_replies = False  # a pilot keeps its answers (by key) for the main run
        self.replies: dict[str, Reply] = {}
        self.sent_estimated_tokens = 0  # our count of the prompts that were answered
        self.answered_usage = [0, 0, 0]  # answers, their input and output tokens (not a pilot's)
        self._writer: Writer | None = None  # the cache file's writer, waited for at the end
        self._writer_lost = 0
        self._handed_over = False  # answers given to the writer (then waited for at the end)
        self._stream: Iterator[Request] | None = None  # the request stream, walked once

    # the request stream ------------------------------------------------------------------

    def _requests(self) -> Iterator[Request]:
        spec, report = self.spec, self.report
        params = spec.params
        model = spec.provider.model
        counter, window = spec.counter, spec.context_window
        schema_tokens = spec.schema_tokens()
        system = spec.system_prompt
        leaders: dict[str, int] = {}
        may_repeat = self.may_repeat = self._prompt_repeats()
        for i, messages, key, hit in self._keyed(system, params):
            if messages is None:  # a missing value or a cell that does not fit: key holds why
                self._fail(i, str(key))
                report.skipped += isinstance(key, MissingValue)
                continue
            tracked = may_repeat is None or may_repeat[i]
            leader = leaders.get(key) if tracked else None
            if leader is not None:
                report.duplicates += 1
                if self._is_finished(leader):  # its answer is here already: share it now
                    self._copy_row(leader, i)
                else:
                    self._followers.setdefault(leader, []).append(i)
                continue
            if tracked:
                leaders[key] = i
            report.requests += 1
            earlier = spec.prefill.get(key)
            if earlier is not None:
                report.prefilled += 1
                self._record(i, earlier, None, [i])
                continue
            if hit is not None:
                report.cached += 1
                report.saved_by_cache += spec.cost(hit.usage)
                self._record(i, hit, None, [i], paid=False)
                continue
            tokens = counter.count_messages(messages) + schema_tokens
            if window and tokens > window:
                report.too_long += 1
                self._fail(i, str(errors.ContextLengthError(
                    f"prompt of about {tokens:,} tokens exceeds {model}'s context window of "
                    f"{window:,}: not sent")))
                continue
            yield Request(
                index=i,
                messages=messages,
                params=params,
                key=key,
                est_input_tokens=tokens,
                max_output_tokens=spec.max_tokens or 0,
            )

    def _prompt_repeats(self) -> Any:
        """The rows whose prompts may repeat (``Template.repeats``), once per spec and rows:
        the estimate's walk and the run's share it."""
        if self.may_repeat is None:
            return None
        done = self.spec.repeats
        if done is None or done[0] is not self.row_values or len(done[1]) != self.n:
            spec = self.spec
            done = spec.repeats = (self.row_values,
                                   spec.template.repeats(self.row_values(), self.n, spec.missing))
        return done[1]

    def _keyed(self, system: str | None, params: dict[str, Any]) -> Iterator[tuple]:
        """(row, messages, key, cached answer) per row, rendered a chunk at a time so that the
        cache is asked once per chunk instead of once per row. A row that cannot be rendered
        (a missing value, a cell that does not fit its format spec) comes as (row, None, the
        exception, None): it fails alone, the others go on. The key leaves ``max_tokens`` out
        (see core/reuse.py)."""
        spec = self.spec
        endpoint, model = spec.provider.endpoint, spec.provider.model
        params = {k: v for k, v in params.items() if k != "max_tokens"}
        chunk: list[tuple] = []
        for i, values in enumerate(self.row_values()):
            try:
                messages = build_messages(spec.template.render(values, spec.missing), system)
                chunk.append((i, messages, request_key(endpoint, model, messages, params)))
            except (MissingValue, CellError) as exc:
                chunk.append((i, None, exc))
            except UnicodeEncodeError as exc:  # cannot be sent as JSON: this row alone fails
                chunk.append((i, None, BadText(exc)))
            if len(chunk) >= LOOKUP_CHUNK:
                yield from self._with_hits(chunk)
                chunk = []
        yield from self._with_hits(chunk)

    def _with_hits(self, chunk: list[tuple]) -> Iterator[tuple]:
        spec = self.spec
        hits = {}
        if self.store is not None and not spec.refresh:
            hits = self.store.get_many([c[2] for c in chunk if c[1] is not None])
        if hits:
            limit, check = self._limit(spec.max_tokens), spec.schema.check if spec.schema else None
            user_limit = None if spec.max_tokens_from_budget else spec.max_tokens
            hits = {k: hit for k, hit in hits.items() if reusable(hit, limit, user_limit, check)}
        for i, messages, key in chunk:
            yield i, messages, key, hits.get(key) if messages is not None else None

    def _limit(self, max_tokens: int | None) -> int | None:
        """The output limit a request goes out with (the provider's default if none is set)."""
        return max_tokens or self.spec.provider.default_max_tokens

    def _walk_rest(self, reason: errors.ProviderError) -> None:
        """Walk what is left of the request stream without sending: rows the cache answers,
        rows with a missing value and duplicates keep their own outcome; the requests that
        would have been sent fail with ``reason``."""
        if self._stream is None:
            self._stream = self._requests()
        for request in self._stream:
            self._fail_with(request.index, reason)

    # outcomes ----------------------------------------------------------------------------

    def _on_done(self, request: Request, reply: Reply | None, exc: errors.ProviderError | None) -> None:
        if reply is not None and reply.text is None:
            reply, exc = None, errors.RowError(f"the model returned no text (finish_reason={reply.finish_reason})")
        if reply is not None:
            reply.limit = self._limit(request.max_output_tokens)  # stored: truncated at what
        if reply is not None and self.spec.schema is not None and self.engine is None:
            try:  # batch results (real time was checked, and asked again, by the engine)
                self.spec.schema.check(reply.text)
            except errors.InvalidOutput as invalid:
                if reply.truncated:
                    invalid.message = f"{truncation_note(reply.limit)}: {invalid.message}"
                reply, exc = None, invalid
        if reply is not None and self.store is not None:
            self._keep((request.key, self.spec.provider.model, reply))
        if reply is not None:
            self.sent_estimated_tokens += request.est_input_tokens
            self.answered_usage[0] += 1  # this run's own answers, for the history
            self.answered_usage[1] += reply.usage.input_tokens
            self.answered_usage[2] += reply.usage.output_tokens
            if self.keep_replies:
                self.replies[request.key] = reply
        rows = [request.index, *self._followers.pop(request.index, ())]
        self._record(request.index, reply, exc, rows)

    def _write(self, items: list) -> None:
        """Hand the answers to the cache file's writer thread: the loop never waits for the
        file's lock (another process may hold it for seconds)."""
        self.store.put_later(items)
        self._handed_over = True

    async def _settle_writes(self) -> None:
        """Wait (a bounded time, off the loop) until this run's answers are on disk."""
        if self._writer is not None and self._handed_over:
            for message in await asyncio.to_thread(self._writer.settle, FLUSH_WAIT, self._writer_lost):
                self._warn(message)

    def _record(self, leader: int, reply: Reply | None, exc: errors.ProviderError | None,
                rows: list[int], paid: bool = True) -> None:
        if reply is None:
            for i in rows:
                self._fail_with(i, exc)
            return
        keep_all = self.keep_usage
        if reply.truncated:  # the text is kept, and the row says it is cut short
            note = truncation_note(reply.limit)
            for i in rows:
                self.errors[i] = note
            self.report.truncated += len(rows)
        for i in rows:
            self.answers[i] = reply.text
            if i == leader:  # its usage is needed again only for the columns or a duplicate
                if keep_all or self.may_repeat is None or self.may_repeat[i]:
                    self.usages[i] = reply.usage if paid else NO_USAGE
            elif keep_all:
                self.usages[i] = NO_USAGE
        self.report.answered_rows += len(rows)
        if paid:
            self.report.saved_by_prompt_cache += prompt_cache_saving(reply.usage, self.spec.price,
                                                                     batch=self.spec.batch)
        if len(rows) > 1:
            self.report.saved_by_dedup += (len(rows) - 1) * self.spec.cost(reply.usage)

    def _on_duplicate(self, request: Request, leader: int) -> None:
        """Batch mode: ``request`` has the same key as row ``leader``'s (different values
        that render the same prompt): not a request of its own, it shares that answer."""
        self.report.requests -= 1
        self.report.duplicates += 1
        if self._is_finished(leader):
            self._copy_row(leader, request.index)
        else:
            self._followers.setdefault(leader, []).append(request.index)

    def _copy_row(self, leader: int, i: int) -> None:
        if self.answers[leader] is None:
            self._fail(i, self.errors[leader], bool(self.unsent[leader]))
            return
        self.answers[i] = self.answers[leader]
        if self.errors[leader] is not None:  # truncated: flagged like its leader
            self.errors[i] = self.errors[leader]
            self.report.truncated += 1
        if self.keep_usage:
            self.usages[i] = NO_USAGE
        self.report.answered_rows += 1
        self.report.saved_by_dedup += self.spec.cost(self.usages[leader] or Usage())

    def invalidate(self, i: int, message: str) -> None:
        """An answered row whose answer turned out unusable (a cached answer that a stricter
        schema now refuses): it becomes a failed row, in the report too."""
        self.answers[i] = None
        self.report.answered_rows -= 1
        self._fail(i, message)

    def _fail(self, unit: int, message: str | None, unsent: bool = False) -> None:
        self.errors[unit] = message
        self.unsent[unit] = unsent
        self._tally(unit, message, unsent)

    def _unfinished(self) -> Iterator[int]:
        return (i for i in range(self.n) if not self._is_finished(i))

    def _is_finished(self, i: int) -> bool:
        return self.answers[i] is not None or self.errors[i] is not None

    # planning and running ----------------------------------------------------------------

    def as_pilot(self) -> plan.Pilot:
        """What this (finished) run measured, to extrapolate the rest from."""
        s = self.stats
        answered = s.done
        return plan.Pilot(
            requests=answered,
            input_tokens=s.input_tokens,
            estimated_input_tokens=self.sent_estimated_tokens,
            output_tokens=s.output_tokens,
            latency_s=s.latency_total / answered if answered else 0.0,
        )

    def plan(self, pilot: plan.Pilot | None = None) -> plan.Estimate:
        """Walk the request stream without sending anything and estimate the run. Without a
        pilot, earlier runs of the same template on this model (in the cache file) stand in."""
        spec = self.spec
        self._open_store()
        history = endpoint = None
        try:
            counts = [r.est_input_tokens for r in self._requests()]
            history = self.store.get_history(self.history_key) if self.store is not None else None
            endpoint = self._endpoint_history()
        except sqlite3.Error:
            pass  # an estimate from defaults is still an estimate
        finally:
            self._close_store()
        if pilot is None and history is not None and history.requests >= MIN_HISTORY:
            pilot = plan.Pilot(history.requests, history.input_tokens, history.estimated_input_tokens,
                               history.output_tokens, history.latency_total / history.requests,
                               source="history")
        r = self.report
        estimate = plan.build(
            spec.model.full, rows=self.n, duplicates=r.duplicates, cached=r.cached + r.prefilled,
            skipped=r.skipped, too_long=r.too_long, input_counts=counts, exact=spec.counter.exact,
            token_counting=spec.counter.name, price=spec.price, max_tokens=spec.max_tokens,
            concurrency=spec.concurrency, rpm=spec.rpm or (history.rpm if history else None),
            tpm=spec.tpm or (history.tpm if history else None), budget=spec.budget, pilot=pilot,
            tiers=spec.tiers, realtime=not spec.batch,
            offer=spec.provider.offer(spec.system_prompt, spec.counter.count, len(spec.template.fields)),
        )
        estimate.cache_saves = r.saved_by_cache if spec.price is not None else None
        self._retime(estimate, endpoint, pilot)
        return estimate

    @property
    def history_key(self) -> str:
        """What identifies "the same job" for the history: endpoint, model, template, system
        prompt and parameters (answer length depends on them), never the rows. Not max_tokens:
        it only cuts answers, and budget= sets it, which must not hide the history."""
        spec = self.spec
        params = {k: v for k, v in spec.params.items() if k != "max_tokens"}
        return request_key(spec.provider.endpoint, spec.provider.model,
                           [{"template": spec.template.text, "system": spec.system_prompt}],
                           {**params, "history": 1})

    def _remember(self) -> None:
        """Add this run's measurements to the template's history (real time only: a batch
        job's latency says nothing about the next real-time run)."""
        answered, input_tokens, output_tokens = self.answered_usage
        if self.store is None or self.engine is None or not answered:
            return
        limiter = self.engine.limiter
        from_headers = limiter.learned_from == "headers"
        rpm = limiter.requests.rate * 60 if from_headers and limiter.requests.rate else None
        tpm = limiter.tokens.rate * 60 if from_headers and limiter.tokens.rate else None
        self.store.add_history_later(self.history_key, History(  # written by the writer thread
            answered, input_tokens, self.sent_estimated_tokens, output_tokens,
            self.stats.latency_total, rpm, tpm))

    def _open_store(self) -> None:
        if self.spec.cache_path is not None:
            self.store = Store(self.spec.cache_path)
            self._writer, self._writer_lost = self.store.writer, self.store.writer.lost

    def _end(self) -> None:
        self._remember()
        super()._end()

    async def execute(self, ledger: Ledger | None = None) -> RunReport:
        spec = self.spec
        if ledger is None:  # also without a price: a provider may report each answer's cost
            ledger = Ledger(spec.budget, spec.cost)
        self.stats.total = self.n
        self._open_store()
        self._start(ledger,
                    batch={"on_duplicate": self._on_duplicate, "gate": self.batch_gate},
                    engine={"check": spec.schema.check if spec.schema is not None else None,
                            "max_invalid": spec.schema_retries})
        self._stream = self._requests()  # mode="batch": the same stream, through batch jobs
        await self._send(self._stream)
        await self._settle_writes()
        if self.report.truncated:
            self._warn(truncation_warning(self.report.truncated))
        return self.report
