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

import hashlib
import json
import math
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import errors
from ..core.budget import Ledger
from ..core.numbers import money
from ..core.prompts import BadText, CellError, MissingValue
from ..core.types import Reply, Request, Usage
from ..planning import estimate as plan
from ..planning.pricing import cost
from .base import BaseRun, RowValues, RunReport
from .embed_spec import EmbedSpec


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


class EmbedRun(BaseRun):
    """One embeddings run over ``n`` rows whose field values come from ``row_values()``.

    ``prepare()`` renders, de-duplicates, reads the cache and packs (nothing is sent);
    ``execute()`` sends the packs; ``vectors`` and ``errors`` then hold one entry per row.
    """

    spec: EmbedSpec

    def __init__(self, spec: EmbedSpec, row_values: RowValues, n: int) -> None:
        super().__init__(spec, row_values, n)
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
        self._prepared = False

    # before anything is sent ---------------------------------------------------------------

    def prepare(self) -> plan.Estimate:
        """Render, de-duplicate, look up the cache, pack, and estimate. Sends nothing."""
        if self._prepared:
            return self.estimate
        spec, report = self.spec, self.report
        prefix = key_prefix(spec.provider.endpoint, spec.provider.model, spec.dimensions)
        seen: dict[str, int] = {}
        for i, values in enumerate(self.row_values()):
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
                self._fail(u, str(errors.ContextLengthError(
                    f"text of about {t:,} tokens exceeds {spec.model.model}'s limit of "
                    f"{spec.max_input_tokens:,} tokens per input: not sent")))
                self.report.too_long += self.weight[u]
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
            model=spec.model.full, rows=self.n, to_send=len(self.packs), duplicates=r.duplicates,
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
        expected = est.cost_for(self.spec.mode)
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
                self._fail_with(u, exc)
            return
        for u, vector in zip(pack.inputs, reply.vectors, strict=True):
            self.found[u] = vector
            self.report.answered_rows += self.weight[u]
            if self.store is not None:
                self._keep((self.keys[u], self.spec.provider.model, vector, self.tokens[u]))

    def _write(self, items: list[tuple[str, str, np.ndarray, int]]) -> None:
        try:
            self.store.put_vectors(items)
        except sqlite3.Error as err:
            self.store = None
            self._warn(f"cache write failed, caching is off for the rest of this run: {err}")

    def _fail(self, unit: int, message: str | None, unsent: bool = False) -> None:
        self.failed[unit] = message
        self._tally(unit, message, unsent)

    def _weight(self, unit: int) -> int:
        return self.weight[unit]

    def _units_of(self, index: int) -> list[int]:
        return self.packs[index].inputs

    def _unfinished(self) -> Iterator[int]:
        return (u for u in range(len(self.texts)) if self.found[u] is None and u not in self.failed)

    async def execute(self, ledger: Ledger | None = None) -> RunReport:
        """Send every pack: the engine retries, throttles and keeps to the budget; in batch
        mode the batch runner submits, polls and collects jobs (the whole worst case reserved
        first, since a job cannot be stopped part-way)."""
        spec = self.spec
        self.prepare()
        if ledger is None and spec.price is not None:
            ledger = Ledger(spec.budget, spec.cost)
        self.stats.total = len(self.packs)
        if spec.cache_path is not None and self.packs:
            from ..store.db import Store

            try:
                self.store = Store(spec.cache_path)
            except sqlite3.Error as err:
                self._warn(f"cache unavailable, vectors are not cached: {err}")
        self._start(ledger)
        await self._send(self._requests())
        return self.report

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
