"""Embeddings: rows of field values -> one vector per row. No pandas here.

Unlike chat, one embeddings request carries many inputs, so the unit of caching is the input
and the unit of sending is a *pack* of inputs. Each input text is keyed on its own (endpoint,
model, dimensions, text): identical texts are sent once, and a re-run sends only the inputs
the cache does not hold. The rest are packed greedily up to the API's limits (OpenAI: 2048
inputs, 300,000 tokens summed over a request, 8192 tokens per input) and each pack is one
:class:`~llmbatch_pd.core.types.Request` for the unchanged engine: rate limits, retries, timeouts,
the budget ledger and the circuit breaker all work per pack.

Our token counts may be estimates (no tokenizer offline), so packs keep a margin below the
request limit, and an input that might be over the per-input limit goes in a pack of its own:
if the API refuses it, only that row fails.

``mode="batch"`` sends the same packs as lines of OpenAI batch jobs on ``/v1/embeddings``
(half price, within 24 hours) through the chat runs' :class:`~llmbatch_pd.runs.batch.BatchRunner`:
jobs recorded in the cache and re-attached after a restart, found again by their label,
split at 50,000 inputs per job. A pack's key (its ``custom_id``) is a digest of its inputs'
keys, so the same call run again makes the same packs and finds its jobs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import sqlite3
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core import errors
from ..core.budget import Ledger
from ..core.numbers import money
from ..core.prompts import BadText, CellError, MissingValue, Template
from ..core.types import Reply, Request, Usage
from ..planning import estimate as plan
from ..planning.pricing import Price, cost, price_for
from ..planning.tokens import TokenCounter, counter_for
from ..providers.embeddings import OpenAIEmbeddings
from ..providers.registry import ModelRef, make_embeddings_provider, parse_model
from ..transport.breaker import CircuitBreaker
from ..transport.limits import RateLimiter
from .run import RunReport, check_limits, check_mode

MAX_INPUTS = 2048
"""OpenAI: at most 2048 inputs in one embeddings request."""
MAX_REQUEST_TOKENS = 300_000
"""OpenAI: at most 300,000 tokens summed over all inputs of one request."""
MAX_INPUT_TOKENS = 8192
"""OpenAI: at most 8192 tokens in any one input."""

RowSource = Callable[[], Iterable[Mapping[str, Any]]]


@dataclass
class EmbedSpec:
    """Everything that decides what is sent; validated before anything is sent."""

    template: Template
    model: ModelRef
    provider: OpenAIEmbeddings
    dimensions: int | None = None
    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    max_retries: int = 6
    timeout: float = 120.0
    missing: str = "skip"
    budget: float | None = None
    price: Price | None = None
    cache_path: Path | None = None
    max_inputs: int = MAX_INPUTS
    max_request_tokens: int = MAX_REQUEST_TOKENS
    max_input_tokens: int = MAX_INPUT_TOKENS
    mode: str = "realtime"  # or "batch": OpenAI's Batch API, half price, within 24 h
    poll_interval: float = 30.0  # seconds between batch status checks (backing off)

    @property
    def batch(self) -> bool:
        return self.mode == "batch"

    @property
    def counter(self) -> TokenCounter:
        return counter_for(self.model.full)

    @property
    def margin(self) -> tuple[float, float]:
        """How far off our counts may be (low, high), as the chat plan assumes."""
        return plan.INPUT_RANGE_EXACT if self.counter.exact else plan.INPUT_RANGE_ESTIMATED

    def cost(self, usage: Usage) -> float:
        """What ``usage`` costs in this run's mode (batch jobs at half price)."""
        return cost(usage, self.price, batch=self.batch) if self.price is not None else 0.0

    def worst_cost(self, request: Request) -> float:
        """An upper bound on one pack's cost (no output tokens), reserved before it is sent."""
        if self.price is None:
            return 0.0
        return self.cost(Usage(math.ceil(request.est_input_tokens * self.margin[1] * 1.2) + 16))


def build_spec(template: str, columns: list[Any], *, model: str, value_field: str | None = None,
               dimensions: int | None = None, base_url: str | None = None,
               api_key: str | None = None, concurrency: int = 16, rpm: float | None = None,
               tpm: float | None = None, max_retries: int = 6, timeout: float = 120.0,
               missing: str = "skip", budget: float | None = None, cache: Any = True,
               prices: dict | None = None, encoding_format: str = "base64",
               mode: str = "realtime", poll_interval: float = 30.0) -> EmbedSpec:
    """Validate the options and resolve the model to an embeddings provider; sends nothing."""
    from ..store import db as store

    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)
                                   or dimensions < 1):
        raise errors.InputError(f"dimensions= must be a positive integer, not {dimensions!r}")
    check_limits(concurrency, max_retries, timeout, missing, budget)
    check_mode(mode, poll_interval)
    parsed = Template.parse(template, value_field=value_field)
    parsed.check_columns(columns)
    ref = parse_model(model, base_url=base_url)
    provider = make_embeddings_provider(ref, base_url=base_url, api_key=api_key,
                                        encoding_format=encoding_format)
    if mode == "batch" and not provider.supports_batch:  # DeepSeek, Gemini: refused before any send
        raise errors.InputError(
            f"mode='batch': {ref.full} has no batch API here (embeddings batch jobs work with "
            "openai/ models); use mode='realtime'")
    try:
        price = price_for(ref.provider, ref.model, prices)
    except ValueError as exc:
        raise errors.InputError(str(exc)) from None
    if budget is not None and price is None:
        raise errors.InputError(
            f"no price is known for {ref.full}, so it cannot run under budget=: pass "
            f"prices={{{ref.full!r}: (input_per_million, 0)}}")
    return EmbedSpec(template=parsed, model=ref, provider=provider, dimensions=dimensions,
                     concurrency=concurrency, rpm=rpm, tpm=tpm, max_retries=max_retries,
                     timeout=timeout, missing=missing, budget=budget, price=price,
                     cache_path=store.resolve(cache), mode=mode, poll_interval=float(poll_interval))


def key_prefix(endpoint: str, model: str, dimensions: int | None) -> Any:
    """A digest primed with what every input of a run shares (never the API key)."""
    head = json.dumps(["embeddings", endpoint, model, dimensions], separators=(",", ":"))
    return hashlib.blake2b(head.encode() + b"\n", digest_size=16)


def input_key(prefix: Any, text: str) -> str:
    """The cache key of one input: the run's primed digest, then the text."""
    digest = prefix.copy()
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


@dataclass
class _Pack:
    """One request's inputs: positions in the unique-input table."""

    inputs: list[int]
    tokens: int


class EmbedRun:
    """One embeddings run over ``n`` rows whose field values come from ``rows()``.

    ``prepare()`` renders, de-duplicates, reads the cache and packs (nothing is sent);
    ``execute()`` sends the packs; ``vectors`` and ``errors`` then hold one entry per row.
    """

    def __init__(self, spec: EmbedSpec, rows: RowSource, n: int) -> None:
        self.spec = spec
        self.rows = rows
        self.n = n
        self.report = RunReport(model=spec.model.full, rows=n, budget=spec.budget, mode=spec.mode,
                                priced=spec.price is not None)
        self.stats = self.report.stats
        self.errors: list[str | None] = [None] * n
        self.row_input: list[int] = [-1] * n  # row -> position in the unique-input table
        self.weight: list[int] = []  # unique input -> how many rows use it
        self.texts: list[str] = []  # unique inputs
        self.keys: list[str] = []
        self.tokens: list[int] = []
        self.found: list[np.ndarray | None] = []  # unique input -> vector, once known
        self.failed: dict[int, str] = {}  # unique input -> why it has no vector
        self.packs: list[_Pack] = []
        self.estimate: plan.Estimate | None = None
        self.engine: Any = None
        self.batcher: Any = None  # mode="batch": the BatchRunner
        self.warnings_shown_elsewhere = False
        self._unsaved: list[tuple[str, str, np.ndarray, int]] = []
        self._store: Any = None
        self._prepared = False

    # before anything is sent ---------------------------------------------------------------

    def prepare(self) -> plan.Estimate:
        """Render, de-duplicate, look up the cache, pack, and estimate. Sends nothing."""
        if self._prepared:
            return self.estimate
        spec, report = self.spec, self.report
        prefix = key_prefix(spec.provider.endpoint, spec.provider.model, spec.dimensions)
        seen: dict[str, int] = {}
        for i, values in enumerate(self.rows()):
            try:
                text = spec.template.render(values, spec.missing)
            except (MissingValue, CellError) as exc:  # this row fails alone
                self.errors[i] = str(exc)
                report.skipped += isinstance(exc, MissingValue)
                continue
            if not text:
                self.errors[i] = "empty text: the embeddings API refuses empty strings; row not sent"
                report.skipped += 1
                continue
            try:
                text.encode()
            except UnicodeEncodeError as exc:  # cannot be sent as JSON: this row alone fails
                self.errors[i] = str(BadText(exc))
                continue
            key = input_key(prefix, text)
            u = seen.get(key)
            if u is not None:
                report.duplicates += 1
            else:
                u = seen[key] = len(self.texts)
                self.texts.append(text)
                self.keys.append(key)
                self.weight.append(0)
            self.row_input[i] = u
            self.weight[u] += 1
        self.found = [None] * len(self.texts)
        report.failed_rows = sum(e is not None for e in self.errors)
        self._lookup_cache()
        self._pack()
        self.estimate = self._estimate()
        self._prepared = True
        return self.estimate

    def _lookup_cache(self) -> None:
        spec = self.spec
        if spec.cache_path is None or not self.keys:
            return
        from ..store.db import Store

        try:
            store = Store(spec.cache_path)
            try:
                hits = store.get_vectors(self.keys)
            finally:
                store.close()
        except sqlite3.Error as err:
            self._warn(f"cache read failed, every input is sent: {err}")
            return
        for u, key in enumerate(self.keys):
            hit = hits.get(key)
            if hit is not None:
                self.found[u] = hit[0]
                self.report.cached += 1
                self.report.answered_rows += self.weight[u]
                self.report.saved_by_cache += spec.cost(Usage(hit[1]))

    def _pack(self) -> None:
        """Greedy packs in input order, each within the count and token limits (with margin)."""
        spec = self.spec
        low, high = spec.margin
        counter = spec.counter
        budget_tokens = int(spec.max_request_tokens / high)
        pack: list[int] = []
        total = 0
        self.tokens = [0] * len(self.texts)
        for u, text in enumerate(self.texts):
            if self.found[u] is not None:
                continue
            t = self.tokens[u] = max(1, counter.count(text))
            if t * low > spec.max_input_tokens:  # too long even if we overcounted
                self.failed[u] = str(errors.ContextLengthError(
                    f"text of about {t:,} tokens exceeds {spec.model.model}'s limit of "
                    f"{spec.max_input_tokens:,} tokens per input: not sent"))
                self.report.too_long += 1
                self.report.failed_rows += self.weight[u]
                continue
            if t * high > spec.max_input_tokens:  # may be refused: alone, so only it fails
                self.packs.append(_Pack([u], t))
                continue
            if pack and (len(pack) >= spec.max_inputs or total + t > budget_tokens):
                self.packs.append(_Pack(pack, total))
                pack, total = [], 0
            pack.append(u)
            total += t
        if pack:
            self.packs.append(_Pack(pack, total))
        self.report.requests = len(self.packs)

    def _estimate(self) -> plan.Estimate:
        spec, r = self.spec, self.report
        counted = sum(p.tokens for p in self.packs)
        low_f, high_f = spec.margin
        est = plan.Estimate(
            model=spec.model.full, rows=self.n, requests=len(self.packs), duplicates=r.duplicates,
            cached=r.cached, skipped=r.skipped, too_long=r.too_long, input_tokens=counted,
            input_tokens_low=round(counted * low_f), input_tokens_high=math.ceil(counted * high_f),
            budget=spec.budget, token_counting=spec.counter.name,
            output_basis="embeddings have no output tokens", price=spec.price)
        if spec.price is not None:
            for suffix, tokens in (("_low", est.input_tokens_low), ("", counted),
                                   ("_high", est.input_tokens_high)):
                setattr(est, f"cost{suffix}", cost(Usage(tokens), spec.price))
                setattr(est, f"batch_cost{suffix}", cost(Usage(tokens), spec.price, batch=True))
            est.cache_saves = r.saved_by_cache
        est.wall_time_s = plan.wall_time(len(self.packs), plan.DEFAULT_LATENCY_S, spec.concurrency,
                                         spec.rpm, spec.tpm, counted / len(self.packs) if self.packs else 0)
        return est

    def check_budget(self) -> None:
        """BudgetError before anything is sent when the expected cost (at batch prices in
        batch mode) is above the budget."""
        est, budget = self.prepare(), self.spec.budget
        expected = est.batch_cost if self.spec.batch else est.cost
        if budget is not None and expected is not None and expected > budget:
            raise errors.BudgetError(
                f"not started: the expected cost is above the budget of {money(budget)}.\n"
                f"{est.summary()}\nRaise budget= or use fewer rows.")

    # sending --------------------------------------------------------------------------------

    def _requests(self) -> Iterable[Request]:
        dims = self.spec.dimensions
        for number, pack in enumerate(self.packs):
            params: dict[str, Any] = {"input": [self.texts[u] for u in pack.inputs]}
            if dims is not None:
                params["dimensions"] = dims
            yield Request(index=number, messages=[], params=params, est_input_tokens=pack.tokens,
                          key=self._pack_key(pack))

    def _pack_key(self, pack: _Pack) -> str:
        """A digest of the pack's input keys (which hold the model, dimensions and text): the
        batch runner's request key, so a re-run's identical pack finds its job again."""
        digest = hashlib.blake2b(digest_size=16)
        for u in pack.inputs:
            digest.update(self.keys[u].encode())
        return digest.hexdigest()

    def _on_done(self, request: Request, reply: Reply | None, exc: errors.ProviderError | None) -> None:
        pack = self.packs[request.index]
        if reply is not None:
            vectors = reply.vectors or []
            if len(vectors) != len(pack.inputs):
                reply, exc = None, errors.MalformedResponse(
                    f"the server sent {len(vectors)} vectors for {len(pack.inputs)} inputs")
                self.stats.by_kind[exc.kind] += 1  # the engine counted an answer
        if reply is None:
            for u in pack.inputs:
                self.failed[u] = str(exc)
                self.report.failed_rows += self.weight[u]
            return
        if self._store is not None and not self._unsaved:
            asyncio.get_running_loop().call_soon(self._save)  # one commit per loop iteration
        for u, vector in zip(pack.inputs, reply.vectors, strict=True):
            self.found[u] = vector
            self.report.answered_rows += self.weight[u]
            if self._store is not None:
                self._unsaved.append((self.keys[u], self.spec.provider.model, vector, self.tokens[u]))

    def _save(self) -> None:
        items, self._unsaved = self._unsaved, []
        if not items or self._store is None:
            return
        try:
            self._store.put_vectors(items)
        except sqlite3.Error as err:
            self._store = None
            self._warn(f"cache write failed, caching is off for the rest of this run: {err}")

    async def execute(self, ledger: Ledger | None = None) -> RunReport:
        """Send every pack: the engine retries, throttles and keeps to the budget; in batch
        mode the batch runner submits, polls and collects jobs (the whole worst case reserved
        first, since a job cannot be stopped part-way)."""
        from ..transport.engine import Engine, RetryPolicy  # aiohttp loads on the first run

        spec = self.spec
        self.prepare()
        if ledger is None and spec.price is not None:
            ledger = Ledger(spec.budget, spec.cost)
        self.stats.total = len(self.packs)
        retry = RetryPolicy(max_retries=spec.max_retries)
        if spec.cache_path is not None and self.packs:
            from ..store.db import Store

            try:
                self._store = Store(spec.cache_path)
            except sqlite3.Error as err:
                self._warn(f"cache unavailable, vectors are not cached: {err}")
        if spec.batch:
            from .batch import BatchRunner

            self.batcher = BatchRunner(
                spec.provider, on_done=self._on_done, stats=self.stats, store=self._store,
                ledger=ledger, worst_cost=spec.worst_cost, poll_interval=spec.poll_interval,
                timeout=spec.timeout, retry=retry, on_warning=self._warn, flush=self._save)
        else:
            self.engine = Engine(
                spec.provider, concurrency=spec.concurrency, limiter=RateLimiter(spec.rpm, spec.tpm),
                retry=retry, timeout=spec.timeout, ledger=ledger, worst_cost=spec.worst_cost,
                stats=self.stats, on_warning=self._warn, breaker=CircuitBreaker())
        try:
            if self.batcher is not None:
                await self.batcher.run(self._requests())
            else:
                await self.engine.run(self._requests(), self._on_done)
        except asyncio.CancelledError:
            self.report.interrupted = True
            self._close_unfinished("cancelled: the run was interrupted before this row finished")
            raise
        finally:
            self._save()
            if self._store is not None:
                self._store.close()
                self._store = None
        self._close_unfinished(f"not sent: {self.stats.stop_reason or 'the run ended first'}")
        return self.report

    def cancel(self, reason: str = "cancelled") -> None:
        """Send nothing more; packs in flight finish and are kept. In batch mode the
        submitted jobs are cancelled at the provider (what they answered is still collected);
        a kernel interrupt instead leaves them running for the same call run again."""
        if self.engine is not None:
            self.engine.stop(errors.RowError(reason, kind="cancelled"))
        if self.batcher is not None:
            self.batcher.stop(errors.RowError(reason, kind="cancelled"), cancel_jobs=True)

    def _close_unfinished(self, reason: str) -> None:
        for u in range(len(self.texts)):
            if self.found[u] is None and u not in self.failed:
                self.failed[u] = reason
                self.report.failed_rows += self.weight[u]
                self.report.not_sent += self.weight[u] if reason.startswith("not sent") else 0

    def _warn(self, message: str) -> None:
        self.report.warnings.append(message)
        if not self.warnings_shown_elsewhere:
            warnings.warn(message, stacklevel=2)

    # results --------------------------------------------------------------------------------

    def row_errors(self) -> list[str | None]:
        """Per row: why it has no vector, or None."""
        out = list(self.errors)
        for i, u in enumerate(self.row_input):
            if u >= 0 and self.found[u] is None:
                out[i] = self.failed.get(u, "no vector")
        return out

    def matrix(self) -> np.ndarray:
        """An (n_rows, dim) float32 array; rows without a vector are NaN."""
        dim = next((v.shape[0] for v in self.found if v is not None), self.spec.dimensions or 0)
        out = np.full((self.n, dim), np.nan, dtype=np.float32)
        for i, u in enumerate(self.row_input):
            if u >= 0 and self.found[u] is not None:
                out[i] = self.found[u]
        return out

    def has_vector(self) -> list[bool]:
        return [u >= 0 and self.found[u] is not None for u in self.row_input]


def failure_warning(errors_: list[str | None], fields: tuple[str, ...] = (), where: str = "") -> str | None:
    """How many rows have no embedding and the commonest reasons (skipped rows by column),
    in the words apply uses too; None if every row has one."""
    from ..core.outcome import row_warning

    return row_warning(errors_, fields, failed="have no embedding", where=where)
