"""Prices per million tokens, and the dollar cost of a request's usage.

Why a module of our own: the plan and the budget need one small, offline answer per model,
"what does a token cost", and one formula for the cost of :class:`~llmbatch_pd.core.types.Usage`.

Prices come from the ``genai-prices`` package's *bundled* data. Its updater (``UpdatePrices``)
fetches newer data over the network and is never started here; if the user started it in the
same process, its snapshot is what ``genai_prices`` serves and we use that. ``genai_prices`` is
imported inside the functions, on first use: on its own, importing it takes 0.2-0.3 s (pydantic,
and httpx2 for the updater we never start) and loading its data another 20-30 ms, which
``import llmbatch_pd`` should not pay.

How genai-prices' shapes are reduced to one :class:`Price`:

- Tiered prices (e.g. Claude Sonnet 4.5 and Gemini 2.5 Pro cost more once a prompt passes
  200k tokens) are taken at their *base* tier: requests above the threshold cost more than
  :func:`cost` says.
- Prices that change on a date (``StartDateConstraint``) are taken as of today, as genai-prices
  does. Time-of-day prices (``TimeOfDateConstraint``: DeepSeek's off-peak discount in the
  bundled data) are resolved to the *dearest* of the windows, since a run's requests may be
  sent at any hour and budgets must not be exceeded.
- Request variants (OpenAI's priority / flex tiers, genai-prices' own ``processing: batch``)
  are ignored: this is the standard tier. Batch pricing is ours: ``cost(..., batch=True)``
  halves everything, the discount both OpenAI and Anthropic document for their batch APIs.
  OpenAI's flex tier is "priced at Batch API rates, with additional discounts from prompt
  caching" (its flex-processing guide): :func:`flex_price` is the price with that discount.
- Prompt caching: cached reads pay ``cache_read_mtok``, cache writes ``cache_write_mtok``
  (Anthropic's 5-minute writes, 1.25x input) and one-hour writes ``cache_write_1h_mtok`` (2x
  input; genai-prices lists it for Anthropic's models; twice the input price where it does not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

__all__ = [
    "PROVIDERS",
    "Price",
    "context_window",
    "cost",
    "flex_price",
    "prompt_cache_saving",
    "price_for",
    "resolve_provider",
]

PROVIDERS = ("openai", "anthropic", "deepseek", "gemini")
"""Our provider ids, in the order a bare model name is resolved."""

# genai-prices calls Gemini's provider "google".
_GENAI_PROVIDER = {
    "openai": "openai",
    "anthropic": "anthropic",
    "deepseek": "deepseek",
    "gemini": "google",
}
_OURS = {"google": "gemini"}

AS_GIVEN = "openai-compatible"
"""The provider of a name sent as given to an OpenAI-compatible ``base_url=`` (providers/registry.py)."""

BATCH_DISCOUNT = 0.5
"""Batch APIs (OpenAI Batch, Anthropic Message Batches) charge half price."""


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens. ``None`` means "no separate price": the input price applies."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None
    source: str = "override"
    """Either "genai-prices" or "override"."""
    cache_write_1h_per_mtok: float | None = None
    """One-hour cache writes (Anthropic); None: twice the input price, as Anthropic bills them."""
    discount: float = 1.0
    """What the whole bill is multiplied by: 1.0 for the standard tier, :data:`BATCH_DISCOUNT`
    for OpenAI's flex tier (:func:`flex_price`)."""


def flex_price(price: Price | None) -> Price | None:
    """``price`` in OpenAI's flex tier: Batch API rates (half), caching discounts on top."""
    return None if price is None else replace(price, discount=BATCH_DISCOUNT)


class UsageLike(Protocol):
    """What :func:`cost` reads; :class:`llmbatch_pd.core.types.Usage` is one."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int


def cost(usage: UsageLike, price: Price | None, *, batch: bool = False) -> float:
    """Dollars for ``usage`` at ``price``; ``batch=True`` applies the 50 % batch discount.

    A cost the provider reported (``usage.cost``: LiteLLM's proxy sends it) is what was billed
    and wins over the price list. Without either the answer is 0.0: callers that show money
    say "price unknown" from knowing the model has no price, never from this figure.

    ``usage.input_tokens`` counts every prompt token, the cached and cache-written ones
    included (OpenAI's convention, and genai-prices'; Anthropic's counts are normalised to it
    by the provider layer). Cached tokens pay the cached price, cache writes the cache-write
    price (each the input price when there is none), the rest the input price.
    """
    reported = getattr(usage, "cost", None)
    if reported is not None:
        return reported
    if price is None:
        return 0.0
    cached = max(0, getattr(usage, "cached_tokens", 0) or 0)
    written = max(0, getattr(usage, "cache_write_tokens", 0) or 0)
    written_1h = min(written, max(0, getattr(usage, "cache_write_1h_tokens", 0) or 0))
    # Clamp rather than raise: a provider's odd usage report must not stop a run.
    uncached = max(0, usage.input_tokens - cached - written)
    cached_price = (
        price.input_per_mtok if price.cached_input_per_mtok is None else price.cached_input_per_mtok
    )
    write_price = (
        price.input_per_mtok if price.cache_write_per_mtok is None else price.cache_write_per_mtok
    )
    write_1h_price = (
        2 * price.input_per_mtok if price.cache_write_1h_per_mtok is None
        else price.cache_write_1h_per_mtok
    )
    dollars = (
        uncached * price.input_per_mtok
        + cached * cached_price
        + (written - written_1h) * write_price
        + written_1h * write_1h_price
        + max(0, usage.output_tokens) * price.output_per_mtok
    ) / 1_000_000
    dollars *= getattr(price, "discount", 1.0)
    return dollars * BATCH_DISCOUNT if batch else dollars


def prompt_cache_saving(usage: UsageLike, price: Price | None, *, batch: bool = False) -> float:
    """Dollars prompt caching saved on ``usage``: its cost with every prompt token at the
    input price, less its cost (negative when cache writes cost more than the reads saved)."""
    if price is None or getattr(usage, "cost", None) is not None:
        return 0.0
    if not (getattr(usage, "cached_tokens", 0) or getattr(usage, "cache_write_tokens", 0)):
        return 0.0
    plain = _Plain(usage.input_tokens, usage.output_tokens)
    return cost(plain, price, batch=batch) - cost(usage, price, batch=batch)


@dataclass(frozen=True)
class _Plain:
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0


def price_for(
    provider: str, model: str, overrides: Mapping[str, Any] | None = None
) -> Price | None:
    """The price of ``model`` at ``provider`` ("openai", "anthropic", "deepseek", "gemini").

    ``overrides`` maps "provider/model" or "model" (the first wins) to ``(input, output)``,
    ``(input, output, cached_input)``, a dict of :class:`Price` field names (``input``,
    ``output``, ``cached_input`` and ``cache_write`` also accepted) or a :class:`Price`, all in
    dollars per million tokens. Otherwise genai-prices' bundled catalogue is asked; a model it
    does not know gives None.

    :data:`AS_GIVEN` (a name sent as given to an OpenAI-compatible server, providers/registry.py) is
    priced by ``overrides`` under the name as given, else, for a bare name, at the price of
    the catalogue's model of that name (``gpt-4o`` behind a gateway is OpenAI's gpt-4o); a
    name with a prefix we do not know (``gateway/x``) has no price.
    """
    provider = _our_provider(provider)
    if provider == AS_GIVEN:
        if overrides and model in overrides:
            return _override_price(model, overrides[model])
        owner = catalogue_owner(provider, model)
        return _catalogue_price(owner, model) if owner else None
    if model.lower().startswith(provider + "/"):
        model = model[len(provider) + 1 :]
    if overrides:
        for key in (f"{provider}/{model}", model):
            if key in overrides:
                return _override_price(key, overrides[key])
    return _catalogue_price(provider, model)


def catalogue_owner(provider: str, model: str) -> str | None:
    """Whose catalogue entry prices ``model``: the provider itself, or, for a name sent as
    given (:data:`AS_GIVEN`), the owner of the catalogue's bare model of that name (None for
    a prefixed name we do not know, ``gateway/x``)."""
    provider = _our_provider(provider)
    if provider != AS_GIVEN:
        return provider
    return None if "/" in model else resolve_provider(model)


def resolve_provider(model: str) -> str | None:
    """Which of our providers serves a bare model name, from the genai-prices catalogue.

    A name with a provider prefix ("openai/gpt-4.1-mini") answers for itself. Otherwise the
    first of :data:`PROVIDERS` that lists the model wins; failing that, the first whose naming
    rule matches (so a model too new for the catalogue, "gpt-9", still goes to OpenAI).
    None when nothing matches.
    """
    prefix, sep, _ = model.partition("/")
    if sep:
        ours = _OURS.get(prefix.lower(), prefix.lower())
        return ours if ours in PROVIDERS else None
    providers = _genai_providers()
    ref = model.lower()
    for ours, genai in providers:
        if genai.find_model(ref) is not None:  # no all_providers: no cross-provider fallback
            return ours
    for ours, genai in providers:
        if genai.model_match is not None and genai.model_match.is_match(ref):
            return ours
    return None


# Context windows from the providers' model pages, for the models our docs name. They win
# over genai-prices, whose figures are rounded (gpt-4.1: 1,000,000) or out of date
# (deepseek-chat: 64,000, the V3 limit; DeepSeek documents 128K since V3.1).
_CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "claude-haiku-4-5": 200_000,
    "claude-sonnet-4-5": 200_000,
    "claude-opus-4-5": 200_000,
    "deepseek-chat": 128_000,
    "deepseek-reasoner": 128_000,
    "gemini-2.5-flash": 1_048_576,
    "gemini-2.5-flash-lite": 1_048_576,
    "gemini-2.5-pro": 1_048_576,
}


def context_window(provider: str, model: str) -> int | None:
    """Maximum prompt tokens of ``model``, or None when unknown.

    Dated snapshot names ("gpt-4.1-mini-2025-04-14") resolve to their model through
    genai-prices, so they get the same answer as the model.
    """
    provider = catalogue_owner(provider, model)
    if provider is None:
        return None
    if model.lower().startswith(provider + "/"):
        model = model[len(provider) + 1 :]
    info = _model_info(provider, model)
    model_id = info.id if info is not None else model.lower()
    if model_id in _CONTEXT_WINDOWS:
        return _CONTEXT_WINDOWS[model_id]
    window = getattr(info, "context_window", None)
    return int(window) if window else None


# --- helpers -------------------------------------------------------------------------


def _our_provider(provider: str) -> str:
    provider = provider.lower()
    return _OURS.get(provider, provider)


def _override_price(key: str, value: Any) -> Price:
    if isinstance(value, Price):
        return value
    if isinstance(value, Mapping):
        fields: dict[str, Any] = {}
        for name, number in value.items():
            field = _OVERRIDE_FIELDS.get(name)
            if field is None:
                raise ValueError(
                    f"price override for {key!r}: unknown field {name!r} "
                    f"(use {', '.join(sorted(_OVERRIDE_FIELDS))})"
                )
            fields[field] = number
        if "input_per_mtok" not in fields or "output_per_mtok" not in fields:
            raise ValueError(f"price override for {key!r} needs an input and an output price")
    elif isinstance(value, tuple | list) and len(value) in (2, 3):
        fields = dict(
            zip(("input_per_mtok", "output_per_mtok", "cached_input_per_mtok"), value, strict=False)
        )
    else:
        raise ValueError(
            f"price override for {key!r} must be (input, output), (input, output, cached_input), "
            f"a dict or a Price, in dollars per million tokens; got {value!r}"
        )
    for name, number in fields.items():
        if number is None and name in ("cached_input_per_mtok", "cache_write_per_mtok",
                                       "cache_write_1h_per_mtok"):
            continue
        if (
            isinstance(number, bool)
            or not isinstance(number, int | float)
            or not math.isfinite(number)
            or number < 0
        ):
            raise ValueError(
                f"price override for {key!r}: {name} must be a non-negative number, got {number!r}"
            )
        fields[name] = float(number)
    return Price(**fields, source="override")


_OVERRIDE_FIELDS = {
    "input_per_mtok": "input_per_mtok",
    "output_per_mtok": "output_per_mtok",
    "cached_input_per_mtok": "cached_input_per_mtok",
    "cache_write_per_mtok": "cache_write_per_mtok",
    "cache_write_1h_per_mtok": "cache_write_1h_per_mtok",
    "input": "input_per_mtok",
    "output": "output_per_mtok",
    "cached_input": "cached_input_per_mtok",
    "cache_write": "cache_write_per_mtok",
}


def _snapshot() -> Any:
    """genai-prices' current data: the bundled snapshot unless the user ran its updater."""
    from genai_prices import data_snapshot

    return data_snapshot.get_snapshot()


def _genai_providers() -> list[tuple[str, Any]]:
    by_id = {p.id: p for p in _snapshot().providers}
    return [(ours, by_id[genai]) for ours, genai in _GENAI_PROVIDER.items() if genai in by_id]


def _model_info(provider: str, model: str) -> Any:
    """genai-prices' ModelInfo for ``model`` at ``provider``, or None."""
    try:
        _, info = _snapshot().find_provider_model(
            model, None, _GENAI_PROVIDER.get(provider, provider), None
        )
    except LookupError:
        return None
    return info


@lru_cache(maxsize=512)
def _catalogue_price(provider: str, model: str) -> Price | None:
    info = _model_info(provider, model)
    if info is None:
        return None
    model_price = _standard_model_price(info.prices, datetime.now(tz=UTC))
    input_price = _base(getattr(model_price, "input_mtok", None))
    if input_price is None:  # priced per image, per second...: not a token model for us
        return None
    return Price(
        input_per_mtok=input_price,
        output_per_mtok=_base(getattr(model_price, "output_mtok", None)) or 0.0,
        cached_input_per_mtok=_base(getattr(model_price, "cache_read_mtok", None)),
        cache_write_per_mtok=_base(getattr(model_price, "cache_write_mtok", None)),
        source="genai-prices",
        cache_write_1h_per_mtok=_base(getattr(model_price, "cache_write_1h_mtok", None)),
    )


def _standard_model_price(prices: Any, now: datetime) -> Any:
    """One ModelPrice from a ModelInfo's ``prices`` (a ModelPrice or ConditionalPrice list).

    genai-prices tries conditional prices last to first and takes the first active one (the
    first in the list when none is). We do the same for start dates, but a time-of-day window
    may or may not be active when a request goes out, so every window met on the way down is
    a candidate along with the price that applies outside them; the dearest wins.
    """
    if not isinstance(prices, list):
        return prices
    from genai_prices.types import StartDateConstraint

    candidates = []
    for conditional in reversed(prices):
        constraint = conditional.constraint
        if constraint is None or (
            isinstance(constraint, StartDateConstraint) and constraint.active(now)
        ):
            candidates.append(conditional.prices)
            break
        if not isinstance(constraint, StartDateConstraint):  # time of day, or a kind we don't know
            candidates.append(conditional.prices)
    else:
        candidates.append(prices[0].prices)
    return max(
        candidates,
        key=lambda p: (
            (_base(getattr(p, "input_mtok", None)) or 0.0)
            + (_base(getattr(p, "output_mtok", None)) or 0.0)
        ),
    )


def _base(value: Any) -> float | None:
    """A price as a float; a TieredPrices at its base tier (the price below the first threshold)."""
    if value is None:
        return None
    return float(getattr(value, "base", value))
