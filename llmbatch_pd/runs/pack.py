"""``pack=k``: several rows in one request, the template's instructions paid once.

A packed request (CONTRACTS C1) carries the run's system prompt, then one user message: a fixed
preamble, the template with each field shown as ``<field>``, and the rows as a JSON array of
objects ``{"id": "1".."k", <field>: <rendered value>, ...}``. It asks for structured output
named ``packed_rows`` (``core.schema.PackedSchema``): ``{"rows": [{"id", "answer" | the
schema= fields}]}``.

Every id is checked. A row whose id is missing, answered twice, or whose item does not fit the
schema gets no answer from that pack: it is asked again in the next round, in packs half the
size, down to a single ordinary request (whose answer ``schema=`` checks and asks again like
any row's). Objects with ids that were not sent are ignored. Nothing becomes a silent None.

Answers are cached per row, under the key the row's own single request has (``Run._keyed``),
so a re-run, packed or not, finds them. The ledger settles each pack on its real usage (the
engine does it); the rows' shares of that usage (apportioned so they add up to it) go to the
cache and the usage columns. An answer that was refused (a pack not in the packed shape, a
row's answer that did not fit ``schema=``) was paid too: its usage is added to its rows' usage
columns at the end (answered or not), so the columns add up to the bill. In batch mode the packs are the batch lines (custom_id: the
pack's own key) and the rounds are further jobs.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..core import errors
from ..core.accounting import PackedRows
from ..core.prompts import build_messages, request_key
from ..core.reuse import truncation_note
from ..core.types import Reply, Request, Usage
from ..planning import estimate as plan
from .chat import LOOKUP_CHUNK, Run
from .packing import (
    AUTO_SAMPLE,
    MAX_AUTO,
    ROW_OVERHEAD,
    auto_size,
    instructions,
    pack_output_limit,
    packed_text,
    shares,
    unpack,
)
from .spec import RunSpec


@dataclass
class _Row:
    request: Request  # the row's own single request (its key is the cache key)
    fields: dict[str, str]  # its rendered fields, as the pack shows them


class PackedRun(Run):
    """A chat run that sends its rows ``spec.pack`` at a time (see the module docstring)."""

    def __init__(self, spec: RunSpec, row_values, n: int, find_repeats: bool = False) -> None:
        from ..core.schema import PackedSchema

        super().__init__(spec, row_values, n, find_repeats)
        self.packed = PackedSchema(spec.schema)
        system = spec.system
        if spec.provider.schema_in_prompt:  # JSON mode only: the packed schema in words
            system = f"{system}\n\n{self.packed.instruction()}" if system else self.packed.instruction()
        self.pack_system = system
        self.head = instructions(spec, self.packed)
        self.pack_params = {"temperature": spec.temperature, "max_tokens": spec.max_tokens,
                            **spec.provider.structured(self.packed), **spec.extra}
        self._schema_tokens = self._packed_schema_tokens()
        self.size = spec.pack if isinstance(spec.pack, int) else 0  # 0: "auto", found from the rows
        self._values: dict[int, Mapping[str, Any]] = {}  # rows of the chunk being rendered
        self._note_values = self._note
        self._alone: dict[int, _Row] = {}  # rows sent as their own request, until answered
        self._packs: dict[int, list[_Row]] = {}  # in flight: pack id (>= n) -> its rows
        self._next_pack = n
        self._again: list[_Row] = []  # rows to ask again in the next round
        self._tries: dict[int, int] = {}  # row -> answers refused so far
        self.pack_problems = 0  # rows a pack did not answer usably (asked again)
        self.packs_sent = 0
        self.packed_rows = 0  # rows answered from packs
        self.sent_rows = 0  # rows answered by what this run sent (packs or their own requests)
        self._planned_packs = 0
        self._basis = ""
        self.report.packed = PackedRows()  # the projection and the ETA count rows
        self._carried: dict[int, Usage] = {}  # row -> usage of answers of it that were refused

    # building packs -----------------------------------------------------------------------

    def _packed_schema_tokens(self) -> int:
        spec = self.spec
        documented, wrapped = spec.provider.hidden_prompt(self.packed)
        hidden = documented + (spec.counter.count(wrapped) if wrapped else 0)
        if spec.provider.schema_in_prompt:
            return hidden
        return hidden + spec.counter.count(json.dumps(self.packed.json_schema, separators=(",", ":")))

    def pack_max_tokens(self, k: int) -> int | None:
        return pack_output_limit(self.spec.max_tokens, k)

    def _rows(self, requests: Iterable[Request]) -> Iterator[_Row]:
        """The single requests of the rows to send, with their rendered fields."""
        template, missing = self.spec.template, self.spec.missing
        for request in requests:
            values = self._values.pop(request.index)
            yield _Row(request, template.render_fields(values, missing))

    def _note(self, i: int, values: Mapping[str, Any]) -> None:
        """Row ``i``'s values, kept until its request is packed. Rows are rendered a chunk at
        a time and every request of a chunk is taken before the next is rendered, so what is
        left of the earlier chunks (rows the cache answered, repeats) is not needed."""
        if i % LOOKUP_CHUNK == 0:
            self._values.clear()
        self._values[i] = values

    def _pack(self, rows: list[_Row]) -> Request:
        spec = self.spec
        text = packed_text(self.head, [r.fields for r in rows])
        messages = build_messages(text, self.pack_system)
        params = dict(self.pack_params)
        limit = self.pack_max_tokens(len(rows))
        if "max_tokens" in params or limit is not None:
            params["max_tokens"] = limit
        keyed = {k: v for k, v in params.items() if k != "max_tokens"}
        pack_id, self._next_pack = self._next_pack, self._next_pack + 1
        self._packs[pack_id] = rows
        return Request(index=pack_id, messages=messages, params=params,
                       key=request_key(spec.provider.endpoint, spec.provider.model, messages, keyed),
                       est_input_tokens=spec.counter.count_messages(messages) + self._schema_tokens,
                       max_output_tokens=limit or 0)

    def _grouped(self, rows: Iterable[_Row], size: int) -> Iterator[Request]:
        """Packs of ``size`` rows (a pack of one is the row's own request); a pack whose prompt
        would not fit the context window goes as its rows' own requests."""
        window = self.spec.context_window
        group: list[_Row] = []

        def alone(row: _Row) -> Request:
            self._alone[row.request.index] = row
            return row.request

        def flush() -> Iterator[Request]:
            if len(group) == 1:
                yield alone(group[0])
            elif group:
                pack = self._pack(group)
                if window and pack.est_input_tokens > window:
                    del self._packs[pack.index]
                    yield from (alone(r) for r in group)
                else:
                    yield pack

        for row in rows:
            group.append(row)
            if len(group) >= (size or self.size):  # 0: "auto", sized once the first rows are seen
                yield from flush()
                group = []
        yield from flush()

    def _first_round(self) -> Iterator[Request]:
        rows = self._rows(self._requests())
        if not self.size:
            rows = self._auto(rows)
        return self._grouped(rows, self.size)

    def _auto(self, rows: Iterator[_Row]) -> Iterator[_Row]:
        """``pack="auto"``: the size from the first rows' prompts, the model's context window
        and the answers' length (a pilot's per-row figure, else ``max_tokens=`` or the
        estimate's default), then every row."""
        spec, sample = self.spec, []
        for row in rows:
            sample.append(row)
            if len(sample) >= AUTO_SAMPLE:
                break
        head = spec.counter.count(self.head) + self._schema_tokens
        per_row = [spec.counter.count(json.dumps(r.fields, ensure_ascii=False)) for r in sample]
        output = spec.pack_output or min(spec.max_tokens or plan.DEFAULT_OUTPUT_TOKENS, plan.DEFAULT_OUTPUT_TOKENS)
        price = spec.price
        ratio = price.output_per_mtok / price.input_per_mtok if price and price.input_per_mtok else 4.0
        self.size = auto_size(per_row, head, spec.context_window, output,
                              [r.request.est_input_tokens for r in sample], ratio)
        yield from sample
        yield from rows

    # answers --------------------------------------------------------------------------------

    def _on_done(self, request: Request, reply: Reply | None, exc: errors.ProviderError | None) -> None:
        rows = self._packs.pop(request.index, None)
        if rows is None:
            self._on_single(request, reply, exc)
            return
        if reply is None:
            if isinstance(exc, errors.InvalidOutput | errors.MalformedResponse) and self.stop_error is None:
                self._ask_again(rows)
            else:
                self.report.packed.closed += len(rows)
                for row in rows:
                    self._record(row.request.index, None, exc, self._with_followers(row.request.index))
            return
        self.packs_sent += 1
        self.sent_estimated_tokens += request.est_input_tokens
        try:
            texts, _problems = unpack(self.packed, reply.text, len(rows))
        except errors.InvalidOutput:
            self._carry(zip(rows, shares(reply.usage, [float(r.request.est_input_tokens) for r in rows],
                                         [1.0] * len(rows)), strict=True))
            self._ask_again(rows)
            return
        good = [(row, text) for row, text in zip(rows, texts, strict=True) if text is not None]
        self._ask_again([row for row, text in zip(rows, texts, strict=True) if text is None])
        parts = shares(reply.usage, [float(r.request.est_input_tokens) for r, _ in good],
                       [float(len(t)) + 20 for _, t in good])
        limit = self._limit(self.spec.max_tokens)
        for (row, text), usage in zip(good, parts, strict=True):
            own = Reply(text=text, usage=usage, finish_reason="stop", model=reply.model, limit=limit)
            self.packed_rows += 1
            self._sent_answered()
            self._answered(row.request, own)

    def _on_single(self, request: Request, reply: Reply | None, exc: errors.ProviderError | None) -> None:
        """A row's own request (a pack of one, or asked again alone): its answer is checked
        against ``schema=`` here (the engine checks nothing in a packed run) and asked again
        up to ``schema_retries`` times, as the engine would."""
        schema, row = self.spec.schema, self._alone.pop(request.index, None)
        if reply is not None and reply.text is not None and schema is not None:
            try:
                schema.check(reply.text)
            except errors.InvalidOutput as invalid:
                tries = self._tries.get(request.index, 0)
                if (row is not None and not reply.truncated and tries < self.spec.schema_retries
                        and self.stop_error is None):
                    self._tries[request.index] = tries + 1
                    self._carry([(row, reply.usage)])
                    self._again.append(row)
                    return
                if row is not None:
                    self._carry([(row, reply.usage)])
                if reply.truncated:  # asked again, it would be cut again
                    invalid.message = f"{truncation_note(self._limit(request.max_output_tokens))}: {invalid.message}"
                reply, exc = None, invalid
        if reply is not None and reply.text is not None:
            self._sent_answered()
        else:
            self.report.packed.closed += 1
        super()._on_done(request, reply, exc)

    def _sent_answered(self) -> None:
        """A row answered by a request this run sent."""
        self.sent_rows += 1
        self.report.packed.answered += 1
        self.report.packed.closed += 1

    def _heard(self, request: Request, reply: Reply | None, exc: errors.ProviderError | None) -> None:
        """A request's outcome; an answered one's cost goes with the rows it answered (0: all
        asked again), for the projection's cost per row."""
        packed = self.report.packed
        before = packed.answered
        super()._heard(request, reply, exc)
        if reply is not None and self.stats.recent_costs:
            packed.note(self.stats.recent_costs[-1], packed.answered - before)

    def _answered(self, request: Request, reply: Reply) -> None:
        """A row answered by a pack: cached under its own key, shared with its duplicates."""
        if self.store is not None:
            self._keep((request.key, self.spec.provider.model, reply))
        if self.keep_replies:
            self.replies[request.key] = reply
        self._record(request.index, reply, None, self._with_followers(request.index))

    def _carry(self, paid: Iterable[tuple[_Row, Usage]]) -> None:
        """Usage of an answer that was refused (a pack that was not the packed shape, a row
        whose answer did not fit ``schema=``), kept for its rows' usage columns."""
        for row, usage in paid:
            i = row.request.index
            self._carried[i] = usage if i not in self._carried else self._carried[i] + usage

    def _settle_carried(self) -> None:
        """Each row's usage columns count the refused answers paid for it too (answered or
        not), so the columns add up to the bill."""
        if self.keep_usage:
            for i, usage in self._carried.items():
                self.usages[i] = usage if self.usages[i] is None else self.usages[i] + usage
        self._carried = {}

    def _with_followers(self, i: int) -> list[int]:
        return [i, *self._followers.pop(i, ())]

    def _ask_again(self, rows: list[_Row]) -> None:
        self.pack_problems += len(rows)
        self._again.extend(rows)

    def _walk_rest(self, reason: errors.ProviderError) -> None:
        """Rows not yet looked at keep their own outcome; packs never sent fail their rows."""
        if self._stream is None:
            self._stream = self._first_round()
        for request in self._stream:
            for row in self._packs.pop(request.index, [_Row(request, {})]):
                self._fail_with(row.request.index, reason)

    # sending in rounds ----------------------------------------------------------------------

    async def _send(self, requests: Iterable[Request]) -> None:
        """Round one sends the packs; each later round asks the rows the last one did not
        answer usably, in packs half the size, down to the rows' own requests."""
        try:
            await self._transmit(requests)
            size = max(1, self.size or 1)
            while self._again and self.stop_error is None:
                again, self._again = self._again, []
                size = max(1, size // 2)
                await self._transmit(self._grouped(again, size))
            for row in self._again:  # the run stopped first
                self._fail_with(row.request.index, self._not_sent())
            self._again = []
            self._close_unfinished(self._not_sent())
        except asyncio.CancelledError:
            self._close_interrupted()  # the rows of packs on the wire failed, the rest not sent
            raise
        finally:
            self._settle_carried()
            self._end()

    async def _transmit(self, requests: Iterable[Request]) -> None:
        """Send ``requests``, each heard back through ``_heard`` (the accounting, the rate
        series and the recent costs), remembered as on its way until then."""
        if self.batcher is not None:
            await self.batcher.run(self._handing(requests))
        else:
            assert self.engine is not None
            await self.engine.run(self._handing(requests), self._heard)

    def _start(self, ledger, *, batch=None, engine=None) -> None:
        super()._start(ledger, batch=batch, engine={**(engine or {}), "check": None})
        self.stats.total = max(1, math.ceil(self.n / max(1, self.size or MAX_AUTO)))

    def _request_stream(self) -> Iterator[Request]:
        return self._first_round()

    def rows_of(self, request: Request) -> list[int]:
        rows = self._packs.get(request.index)
        return [request.index] if rows is None else [r.request.index for r in rows]

    def _units_of(self, index: int) -> list[int]:
        """The rows a request on its way stands for (a pack: its rows)."""
        rows = self._packs.get(index)
        return [index] if rows is None else [r.request.index for r in rows]

    def _remember(self) -> None:
        """A packed run does not add to the template's history: its figures are per pack, the
        history's per request of one row."""

    def _remember_endpoint(self) -> None:
        """Nor to the endpoint's history (a pack's latency is k rows of answer, which would
        time new templates' requests of one row)."""

    # planning -------------------------------------------------------------------------------

    def _planned(self) -> Iterator[Request]:
        self._planned_packs = 0
        for request in self._first_round():
            self._packs.pop(request.index, None)
            self._planned_packs += 1
            yield request

    def as_pilot(self) -> plan.Pilot:
        """Per row answered: what a pack cost (its tokens spread over its rows)."""
        s = self.stats
        return plan.Pilot(requests=self.sent_rows, input_tokens=s.input_tokens,
                          estimated_input_tokens=self.sent_estimated_tokens,
                          output_tokens=s.output_tokens,
                          latency_s=s.latency_total / s.done if s.done else 0.0, source="packed")

    def _plan_pilot(self, pilot: plan.Pilot | None) -> plan.Pilot | None:
        """The figures per pack that ``plan.build`` extrapolates from: a packed pilot's per-row
        output (or a single-row history's, plus each row's id and braces, or the default)
        times the rows per pack."""
        per_pack = self._rows_per_pack()
        if pilot is not None and pilot.requests:
            per_row = pilot.output_tokens / pilot.requests + (0 if pilot.source == "packed" else ROW_OVERHEAD)
            self._basis = (f"{'packed pilot' if pilot.source == 'packed' else pilot.source} of "
                           f"{pilot.requests} rows: {per_row:.0f} output tokens per row, "
                           f"{per_pack:.1f} rows per request")
            return plan.Pilot(requests=pilot.requests, input_tokens=pilot.input_tokens,
                              estimated_input_tokens=pilot.estimated_input_tokens,
                              output_tokens=round(per_row * per_pack * pilot.requests),
                              latency_s=pilot.latency_s if pilot.source == "packed" else 0.0)
        per_row = min(plan.DEFAULT_OUTPUT_TOKENS, self.spec.max_tokens or plan.DEFAULT_OUTPUT_TOKENS) + ROW_OVERHEAD
        self._basis = (f"default: {per_row} output tokens per row (run a pilot for a better figure), "
                       f"{per_pack:.1f} rows per request")
        out = per_row * per_pack
        return plan.Pilot(requests=1, output_tokens=round(out),
                          latency_s=plan.DEFAULT_LATENCY_S + out / plan.OUTPUT_TOKENS_PER_S)

    def _rows_per_pack(self) -> float:
        r = self.report
        rows = r.requests - r.cached - r.prefilled - r.too_long
        return rows / self._planned_packs if self._planned_packs else 1.0

    def _plan_max_tokens(self) -> int | None:
        return self.pack_max_tokens(self.size) if self.size else self.spec.max_tokens

    def _offer(self) -> Any:
        """The provider's offer with a pack's static start (system prompt and the packed
        instructions, which every pack repeats) as what prompt caching can read."""
        offer = super()._offer()
        count = self.spec.counter.count
        static = (count(self.pack_system) + 4 if self.pack_system else 0) + count(self.head) + 4
        tokens = static - static % max(1, offer.step)
        return replace(offer, static=static,
                       tokens=tokens if offer.minimum and tokens >= offer.minimum else 0)

    def _planned_estimate(self, estimate: plan.Estimate) -> plan.Estimate:
        """The estimate of this packed run; the other ways to run the rows (``ways``) are the
        one-row-a-request estimate's to compare, not this one's."""
        estimate.output_basis = self._basis
        estimate.ways = []
        return estimate


def make_run(spec: RunSpec, row_values, n: int, find_repeats: bool = False) -> Run:
    """The run ``spec`` asks for: packed (``pack=``) or one request per row."""
    if spec.pack is None or spec.pack == 1:
        return Run(spec, row_values, n, find_repeats)
    return PackedRun(spec, row_values, n, find_repeats)
