"""The ways one model can run the same rows, priced side by side: the answer to "what is the
cheapest way to run this" before anything is sent.

The estimate (``estimate.build``) measures one way: the options the user gave. From its counts
this module derives the others, each with its cost, wall time and requests:

- ``per row``: one request per row, real time, no prompt-cache discount;
- ``per row, prompt cached``: the same requests with the static start of the prompt (system
  prompt, then the template's text before its first field) read from the provider's cache,
  except the first request, which writes it (or misses) while the engine waits for its answer
  before sending more; only above the model's minimum (:func:`cache_split`);
- ``packed k`` (k = 5, 10, 20; ``pack=k``): k rows per request (CONTRACTS C1), the instructions
  paid once per pack (and cached like the above); sizes from the template and row token counts;
- ``flex`` (OpenAI's models that have it; ``tier="flex"``): batch prices, prompt-cached, slower;
- ``batch`` (``mode="batch"``): half price, answers within 24 hours.

A way ``fits`` when its cost is within ``budget`` and its wall time within ``max_wall_s``; the
cheapest that fits is marked. Nothing here changes what a run does: ``apply`` runs the way
its options say (:attr:`Way.option` names them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..core.types import Usage
from .pricing import Price, cost, flex_price

PACK_SIZES = (5, 10, 20)
PACK_PREAMBLE_TOKENS = 60
"""The packed request's fixed instructions ahead of the template (C1's preamble)."""
PACK_SCHEMA_TOKENS = 70
"""The ``packed_rows`` JSON schema each packed request carries (billed as input)."""
ROW_JSON_TOKENS = 6
"""Per row of a pack: ``{"id": "7", ...}`` and the separators."""
FIELD_JSON_TOKENS = 4
"""Per field of a row in a pack: its quoted name and value quotes."""
ANSWER_JSON_TOKENS = 10
"""Per row of a packed answer: ``{"id": "7", "answer": "..."}`` around the text."""
FLEX_SLOWDOWN = 3.0
"""Flex answers are slower; OpenAI gives no figure, we assume three times the latency."""
BATCH_WALL_S = 24 * 3600.0
"""A batch job's window: its answers come within 24 hours (often much sooner)."""


@dataclass(frozen=True)
class Way:
    """One way to run the rows on one model. ``cost`` in dollars (None: no price known),
    ``wall_s`` seconds, ``requests`` to send; ``fits`` the budget and wall-time limit;
    ``cheapest`` of those that fit; ``option`` the keyword that picks it (``pack=10``)."""

    name: str
    cost: float | None
    wall_s: float
    requests: int
    fits: bool
    cheapest: bool
    note: str
    option: str = ""


@dataclass(frozen=True)
class Offer:
    """What the provider offers a run's requests beyond the list price (``Provider.offer``)."""

    tokens: int = 0
    """Prompt tokens each request can read from the cache once written (0: none)."""
    minimum: int = 0
    """The API's shortest cacheable prefix (0: no prompt caching)."""
    step: int = 1
    """Hits come in multiples of this (OpenAI: 128)."""
    writes: bool = False
    """Writes are billed (Anthropic, 1.25x input); otherwise a miss pays the input price."""
    static: int = 0
    """Tokens of the static start (system + template prefix), cached or not."""
    batch: bool = False
    """A batch API (``mode="batch"``)."""
    flex: bool = False
    """OpenAI's flex tier (``tier="flex"``)."""
    fields: int = 1
    """The template's fields (a packed row carries each as JSON)."""


@dataclass(frozen=True)
class Basis:
    """The per-row run the ways are derived from (the estimate's expected figures)."""

    rows: int
    """Requests one per row would send (after de-duplication and the answer cache)."""
    input_tokens: int
    output_tokens: int
    latency: float
    """Seconds per per-row request."""
    seconds_per_output_token: float
    price: Price | None
    budget: float | None = None


def cache_split(requests: int, tokens: int, writes: bool, *, hits: bool = True) -> tuple[int, int]:
    """(cached tokens, cache-write tokens) over ``requests`` that each carry ``tokens``
    cacheable ones. The engine sends a run's first request alone until an answer comes back
    (``transport/opening.py``), so that one misses and, where writes are billed, writes; every
    later one reads. ``hits=False``: the worst case, nothing read (every request writes)."""
    if not tokens or not requests:
        return 0, 0
    first = 1 if hits else requests
    return (requests - first) * tokens, first * tokens if writes else 0


def ways(basis: Basis, caching: Offer, wall: Callable[[int, float, float], float],
         max_wall_s: float | None = None) -> list[Way]:
    """Every way ``basis`` can run, priced; ``wall(requests, latency, tokens_per_request)``
    gives a real-time run's seconds (the estimate's rate limits applied)."""
    n, b = basis.rows, basis
    if not n:
        return []
    per_request = (b.input_tokens + b.output_tokens) / n
    price = replace(b.price, discount=1.0) if b.price is not None else None
    cached, written = cache_split(n, caching.tokens, caching.writes)
    plain = Usage(b.input_tokens, b.output_tokens)
    with_cache = Usage(b.input_tokens, b.output_tokens, cached, written)
    realtime = wall(n, b.latency, per_request)
    found = [_way("per row", _dollars(plain, price), realtime, n, "one request per row")]
    if caching.tokens:
        how = ("cache_control marks the prefix" if caching.writes else "automatic")
        found.append(_way("per row, prompt cached", _dollars(with_cache, price), realtime, n,
                          f"{caching.tokens:,} prompt tokens a request read from cache ({how})"))
    found.extend(_packed(b, caching, price, wall))
    if caching.flex:
        found.append(_way("flex", _dollars(with_cache, flex_price(price)),
                          wall(n, b.latency * FLEX_SLOWDOWN, per_request), n,
                          "batch prices in real time, slower answers, 429s when capacity is short",
                          'tier="flex"'))
    if caching.batch:
        found.append(_way("batch", _dollars(plain, price, batch=True), BATCH_WALL_S, n,
                          "half price; answers within 24 h (often much sooner); no prompt-cache "
                          "hits counted (best effort in batches)", 'mode="batch"'))
    return mark(found, b.budget, max_wall_s)


def mark(found: list[Way], budget: float | None, max_wall_s: float | None) -> list[Way]:
    """``found`` with ``fits`` (within ``budget`` and ``max_wall_s``) and ``cheapest`` set."""
    fitted = [replace(w, fits=(budget is None or (w.cost is not None and w.cost <= budget))
                      and (max_wall_s is None or w.wall_s <= max_wall_s), cheapest=False)
              for w in found]
    priced = [w for w in fitted if w.fits and w.cost is not None]
    if not priced:
        return fitted
    best = min(priced, key=lambda w: (w.cost, w.wall_s))
    return [replace(w, cheapest=True) if w is best else w for w in fitted]


def _packed(b: Basis, caching: Offer, price: Price | None,
            wall: Callable[[int, float, float], float]) -> list[Way]:
    """``pack=k``: the static start once per pack, each row's own tokens plus its JSON."""
    out: list[Way] = []
    n = b.rows
    own = max(0.0, b.input_tokens / n - caching.static)  # a row's tokens beyond the static start
    per_answer = b.output_tokens / n
    instructions = caching.static + PACK_PREAMBLE_TOKENS
    for k in PACK_SIZES:
        if n < 2 * k:  # fewer than two packs: no saving worth a quality risk
            continue
        packs = math.ceil(n / k)
        rows_in = n * (own + ROW_JSON_TOKENS + FIELD_JSON_TOKENS * caching.fields)
        tokens_in = math.ceil(packs * (instructions + PACK_SCHEMA_TOKENS) + rows_in)
        tokens_out = math.ceil(n * (per_answer + ANSWER_JSON_TOKENS) + packs * 4)
        cacheable = instructions - instructions % max(1, caching.step)
        cacheable = cacheable if caching.minimum and cacheable >= caching.minimum else 0
        cached, written = cache_split(packs, cacheable, caching.writes)
        latency = b.latency + (k - 1) * (per_answer + ANSWER_JSON_TOKENS) * b.seconds_per_output_token
        seconds = wall(packs, latency, (tokens_in + tokens_out) / packs)
        note = f"{k} rows per request; check answers with estimate(pilot=N, pack={k})"
        out.append(_way(f"packed {k}", _dollars(Usage(tokens_in, tokens_out, cached, written), price),
                        seconds, packs, note, f"pack={k}"))
    return out


def _way(name: str, dollars: float | None, wall_s: float, requests: int, note: str,
         option: str = "") -> Way:
    return Way(name, dollars, wall_s, requests, True, False, note, option)


def _dollars(usage: Usage, price: Price | None, *, batch: bool = False) -> float | None:
    return None if price is None else cost(usage, price, batch=batch)
