"""What one request can cost at most: the dearer price tier a long prompt falls into. The
budget reserves this before each send, so it must be a true upper bound. (The tokens a
provider adds to the prompt unseen are the provider's to say: ``Provider.hidden_prompt``.)

- Tiered prices: genai-prices lists models whose every token costs more once the prompt
  passes a threshold (Claude Sonnet 4.5 and Gemini 2.5 Pro above 200k input tokens: "cliff"
  tiers, by total input tokens). ``pricing.Price`` holds the base tier; here are the others.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from .pricing import Price

_PRICE_FIELDS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")


def price_at(base: Price, tiers: tuple[tuple[int, Price], ...], input_tokens: int) -> Price:
    """The price every token of a request with ``input_tokens`` prompt tokens pays."""
    for start, price in reversed(tiers):
        if input_tokens > start:
            return price
    return base


@lru_cache(maxsize=256)
def tiers_for(provider: str, model: str) -> tuple[tuple[int, Price], ...]:
    """(threshold, price above it) for ``model``'s tiered prices in genai-prices, ascending;
    empty for the many models with one price."""
    from . import pricing

    owner = pricing.catalogue_owner(provider, model)  # a gateway's bare name: its catalogue
    info = pricing._model_info(owner, model) if owner is not None else None
    if info is None:
        return ()
    prices = pricing._standard_model_price(info.prices, datetime.now(tz=UTC))
    values = {f: getattr(prices, f, None) for f in _PRICE_FIELDS}
    starts = sorted({t.start for v in values.values() for t in getattr(v, "tiers", ())})
    return tuple((start, Price(
        input_per_mtok=_at(values["input_mtok"], start) or 0.0,
        output_per_mtok=_at(values["output_mtok"], start) or 0.0,
        cached_input_per_mtok=_at(values["cache_read_mtok"], start),
        cache_write_per_mtok=_at(values["cache_write_mtok"], start),
        source="genai-prices")) for start in starts)


def _at(value: Any, start: int) -> float | None:
    """A genai-prices price (a number or TieredPrices) for prompts above ``start``."""
    if value is None:
        return None
    tiers = getattr(value, "tiers", None)
    if tiers is None:
        return float(value)
    price = value.base
    for tier in tiers:
        if start >= tier.start:
            price = tier.price
    return float(price)
