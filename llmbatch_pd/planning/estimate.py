"""Before anything is sent: how many requests, how many tokens, how many dollars, how long.

The estimate walks the same request stream as the run (render, skip NA rows, de-duplicate,
answer from the cache), so its counts are the run's counts. Input tokens come from
``tokens.py`` (exact with tiktoken where available offline, otherwise a calibrated estimate
with a wider range). Output tokens come from a pilot when one was run, else from
``DEFAULT_OUTPUT_TOKENS``; ``max_tokens`` (or ``DEFAULT_MAX_OUTPUT``) bounds the high end.

Prompt caching (real time): each request's static start (``Provider.offer``) is read from the
provider's cache, except by the first request, which the engine sends alone and which misses
(OpenAI) or writes (Anthropic); the expected and low costs count that, the high one no hits. The
other ways to run the same rows (packed, flex, batch) are priced in ``ways.py``
(:attr:`Estimate.ways`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..core.figures import expected_cost
from ..core.numbers import money as fmt_money
from ..core.types import Usage
from .pricing import BATCH_DISCOUNT, Price, cost
from .ways import Basis, Offer, Way, cache_split, mark, ways

# Without a pilot we assume this many output tokens per answer (a sentence or two).
DEFAULT_OUTPUT_TOKENS = 100
# Without max_tokens we assume at most this many; a run under budget= sends it as max_tokens
# so that the worst case the budget reserves is a real bound.
DEFAULT_MAX_OUTPUT = 4096
# Without a pilot we assume a request takes this long, plus its output at OUTPUT_TOKENS_PER_S.
DEFAULT_LATENCY_S = 1.0
OUTPUT_TOKENS_PER_S = 100.0
# Input-token range around the count: exact counts only miss the chat framing; the
# heuristic is within about 15 % on calibrated scripts (see benchmarks/calibrate_tokens.py).
INPUT_RANGE_EXACT = (0.98, 1.05)
INPUT_RANGE_ESTIMATED = (0.8, 1.35)


@dataclass
class Pilot:
    """Real usage from the first few requests, to extrapolate from."""

    requests: int = 0
    input_tokens: int = 0  # as the provider counted them
    estimated_input_tokens: int = 0  # as we counted the same prompts
    output_tokens: int = 0
    latency_s: float = 0.0  # mean seconds per request
    source: str = "pilot"  # or "history": earlier runs of the same template on this model

    @property
    def input_ratio(self) -> float:
        if not self.estimated_input_tokens:
            return 1.0
        return self.input_tokens / self.estimated_input_tokens


@dataclass
class Estimate:
    """One model's plan. Costs are dollars; ``None`` where the model has no price.

    ``to_send`` counts the requests that will go out: one per unique prompt, less those the
    cache answers and those too long for the model. (A run's ``RunReport.requests`` counts
    every unique request, the cached ones included.)"""

    model: str
    rows: int = 0
    to_send: int = 0  # unique requests that will be sent: not the cached, not the too long
    duplicates: int = 0
    cached: int = 0
    skipped: int = 0
    too_long: int = 0
    input_tokens: int = 0
    input_tokens_low: int = 0
    input_tokens_high: int = 0
    output_tokens_low: int = 0
    output_tokens: int = 0
    output_tokens_high: int = 0
    cost_low: float | None = None
    cost: float | None = None
    cost_high: float | None = None
    batch_cost_low: float | None = None
    batch_cost: float | None = None
    batch_cost_high: float | None = None
    cache_saves: float | None = None  # dollars the cached rows would have cost
    cached_input_tokens: int = 0  # of input_tokens: expected to be read from the prompt cache
    cache_write_tokens: int = 0  # of input_tokens: expected to be written to it (Anthropic)
    prompt_cache_saves: float | None = None  # dollars prompt caching is expected to save
    wall_time_s: float = 0.0
    budget: float | None = None
    token_counting: str = ""
    output_basis: str = ""
    price: Price | None = field(default=None, repr=False)
    ways: list[Way] = field(default_factory=list, repr=False)
    """Every way this model can run the rows, priced (``planning.ways``), cheapest marked."""

    def ways_within(self, max_wall_s: float | None = None, budget: float | None = None) -> list[Way]:
        """:attr:`ways` re-marked for a wall-time limit (and a budget other than the run's)."""
        return mark(self.ways, self.budget if budget is None else budget, max_wall_s)

    @property
    def cheapest(self) -> Way | None:
        """The cheapest way that fits the budget, or None."""
        return next((w for w in self.ways if w.cheapest), None)

    @property
    def requests(self) -> int:
        """``to_send`` by its old name (read only): the estimate frame's column keeps it."""
        return self.to_send

    def cost_for(self, mode: str) -> float | None:
        """The expected cost in ``mode`` (``"batch"``: at batch prices); None without a price
        (``core.figures.expected_cost`` picks between the figures, for every caller)."""
        return expected_cost(self, mode)[1]

    def as_row(self) -> dict[str, Any]:
        """The estimate frame's row (``df.llm.estimate()``): ``to_send`` is its "requests" column."""
        row = asdict(self)
        row.pop("price")
        row.pop("ways")
        row = {"requests" if k == "to_send" else k: v for k, v in row.items()}
        for way in self.ways:
            row[f"{way.name} $"] = way.cost
        row["cheapest way"] = self.cheapest.name if self.cheapest is not None else None
        return row

    def summary(self) -> str:
        money = "no price known"
        if self.cost is not None:
            money = f"{fmt_money(self.cost)} expected ({fmt_money(self.cost_low)}–{fmt_money(self.cost_high)})"
            if self.budget is not None:
                money += f", budget {fmt_money(self.budget)}"
        return (
            f"{self.model}: {self.rows} rows -> {self.to_send} requests "
            f"({self.duplicates} duplicates, {self.cached} cached, {self.skipped} skipped"
            f"{f', {self.too_long} too long' if self.too_long else ''}); "
            f"{self.input_tokens:,} input + ~{self.output_tokens:,} output tokens; {money}; "
            f"~{_duration(self.wall_time_s)}"
        )


def build(
    model: str,
    *,
    rows: int,
    duplicates: int,
    cached: int,
    skipped: int,
    too_long: int,
    input_counts: list[int],
    exact: bool,
    token_counting: str,
    price: Price | None,
    max_tokens: int | None,
    concurrency: int,
    rpm: float | None,
    tpm: float | None,
    budget: float | None,
    pilot: Pilot | None = None,
    tiers: tuple[tuple[int, Price], ...] = (),
    offer: Offer | None = None,
    realtime: bool = True,
) -> Estimate:
    """The numbers, from the counts of one pass over the request stream. ``tiers``: the
    model's dearer prices for long prompts (``worst.tiers_for``), applied request by request.
    ``offer``: the provider's prompt caching, batch API and flex tier (``Provider.offer``);
    ``realtime=False`` (``mode="batch"``) predicts no prompt-cache hits."""
    ratio = pilot.input_ratio if pilot and pilot.requests else 1.0
    offer = offer or Offer()
    requests = len(input_counts)
    counted = sum(input_counts)
    # the cacheable tokens corrected as our count was (the pilot's ratio), in the API's steps
    cacheable = _cacheable(offer, ratio, counted * ratio / requests if requests else 0)
    offer = replace(offer, tokens=cacheable, static=round(offer.static * ratio))
    low_f, high_f = INPUT_RANGE_EXACT if exact else INPUT_RANGE_ESTIMATED
    input_expected = round(counted * ratio)
    input_low = round(counted * min(low_f, ratio))
    input_high = math.ceil(counted * max(high_f, ratio * 1.05))
    cap = max_tokens or DEFAULT_MAX_OUTPUT
    if pilot and pilot.requests:
        per_answer = pilot.output_tokens / pilot.requests
        basis = (f"pilot of {pilot.requests} requests" if pilot.source == "pilot" else
                 f"{pilot.requests:,} earlier answers to this template")
        basis += f": {per_answer:.0f} output tokens per answer"
        low_per = min(per_answer * 0.5, cap)
        latency = pilot.latency_s or DEFAULT_LATENCY_S
    else:
        per_answer = min(DEFAULT_OUTPUT_TOKENS, cap)
        basis = f"default: {per_answer} output tokens per answer (run a pilot for a better figure)"
        low_per = 1
        latency = DEFAULT_LATENCY_S + per_answer / OUTPUT_TOKENS_PER_S
    est = Estimate(
        model=model,
        rows=rows,
        to_send=requests,
        duplicates=duplicates,
        cached=cached,
        skipped=skipped,
        too_long=too_long,
        input_tokens=input_expected,
        input_tokens_low=input_low,
        input_tokens_high=input_high,
        output_tokens_low=round(low_per * requests),
        output_tokens=round(per_answer * requests),
        output_tokens_high=cap * requests,
        budget=budget,
        token_counting=token_counting,
        output_basis=basis,
        price=price,
    )
    if price is not None:
        scenarios = (("_low", input_low, est.output_tokens_low, min(low_f, ratio), low_per),
                     ("", input_expected, est.output_tokens, ratio, per_answer),
                     ("_high", input_high, est.output_tokens_high, max(high_f, ratio * 1.05), cap))
        cache_tokens = cacheable if realtime else 0
        for suffix, inp, out, factor, per in scenarios:
            if tiers and any(c * factor > tiers[0][0] for c in input_counts):
                dollars = _tiered(input_counts, factor, per, price, tiers)
                batch_dollars = dollars * BATCH_DISCOUNT
            else:
                read, written = cache_split(requests, cache_tokens, offer.writes,
                                            hits=suffix != "_high")
                dollars = cost(Usage(inp, out, read, written), price)
                batch_dollars = cost(Usage(inp, out), replace(price, discount=1.0), batch=True)
                if suffix == "":
                    est.cached_input_tokens, est.cache_write_tokens = read, written
                    est.prompt_cache_saves = cost(Usage(inp, out), price) - dollars
            setattr(est, f"cost{suffix}", dollars)
            setattr(est, f"batch_cost{suffix}", batch_dollars)
    est.wall_time_s = wall_time(requests, latency, concurrency, rpm, tpm,
                                (input_expected + est.output_tokens) / requests if requests else 0)

    def wall(n: int, seconds: float, tokens: float) -> float:
        return wall_time(n, seconds, concurrency, rpm, tpm, tokens)

    basis = Basis(rows=requests, input_tokens=input_expected, output_tokens=est.output_tokens,
                  latency=latency, seconds_per_output_token=1 / OUTPUT_TOKENS_PER_S,
                  price=price, budget=budget)
    est.ways = ways(basis, offer, wall)
    return est


def _cacheable(offer: Offer, ratio: float, per_request: float) -> int:
    """Prompt tokens a request reads from the cache: ``offer.tokens`` corrected as our count of
    them was (``ratio``: the provider's count over ours, from a pilot), in the API's steps."""
    if not offer.tokens:
        return 0
    tokens = int(min(offer.tokens * ratio, per_request))
    return tokens - tokens % max(1, offer.step)


def _tiered(counts: list[int], factor: float, per_answer: float, price: Price,
            tiers: tuple[tuple[int, Price], ...]) -> float:
    """Dollars request by request, each at the tier its prompt falls into (a long prompt makes
    every one of its tokens dearer)."""
    from .worst import price_at

    total = 0.0
    for count in counts:
        tokens = count * factor
        total += cost(Usage(math.ceil(tokens), math.ceil(per_answer)), price_at(price, tiers, tokens))
    return total


def wall_time(requests: int, latency: float, concurrency: int, rpm: float | None,
              tpm: float | None, tokens_per_request: float) -> float:
    """Seconds, from the tightest of concurrency, request rate and token rate."""
    if not requests:
        return 0.0
    rates = [concurrency / latency]
    if rpm:
        rates.append(rpm / 60.0)
    if tpm and tokens_per_request:
        rates.append(tpm / 60.0 / tokens_per_request)
    return requests / min(rates) + latency


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
